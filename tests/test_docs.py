"""The project's own docs: no file cites a document the repository does not hold, the docs'
relative links resolve, and every registered method is described in docs/methods.md."""

from __future__ import annotations

import re
import subprocess

from conftest import ROOT
from ftlab.adapters.registry import all_adapters
from ftlab.sparsity.importance import all_importances
from ftlab.sparsity.methods import all_methods

#: Design documents that lived outside the repository (spelled in two parts so this file does
#: not cite them itself).
OUTSIDE = ("DESIGN" + ".md", "REFERENCE" + ".md")


def tracked_text_files() -> list:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
    files = []
    for name in out:
        path = ROOT / name
        if path.is_file():
            try:
                files.append((name, path.read_text(encoding="utf-8")))
            except UnicodeDecodeError:
                continue  # binary
    return files


def test_no_file_cites_a_document_outside_the_repository():
    cited = [f"{name}: {doc}" for name, text in tracked_text_files() for doc in OUTSIDE if doc in text]
    assert not cited, cited


def test_relative_links_of_readme_and_docs_resolve():
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            if not (page.parent / target).exists():
                broken.append(f"{page.name} -> {target}")
    assert not broken, broken


def test_every_registered_method_is_in_methods_md():
    text = (ROOT / "docs" / "methods.md").read_text()
    missing = [f"adapter {s.name}" for s in all_adapters() if f"`{s.name}`" not in text]
    builtin = [s for s in all_importances() if ":" not in s.name]  # not those named by import path in other tests
    missing += [f"importance {s.name}" for s in builtin if f"`{s.name}`" not in text]
    own = [m for m in all_methods() if m.masks.__module__.startswith("ftlab.")]  # not tests' or plugins'
    missing += [f"mask method {m.name}" for m in own if f"`{m.name}`" not in text]
    assert not missing, missing
