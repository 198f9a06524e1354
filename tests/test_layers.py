"""The package graph of ``src/ftlab`` is layered: every import (module level or inside a function)
goes to a lower floor of :data:`FLOORS`, so no two packages reach each other and a package can be
read, tested and replaced from the floors under it. An upward import fails here naming the module
pair; a new package or top-level module fails until it is given a floor. Imports under
``if TYPE_CHECKING:`` are annotations only (never executed) and do not count.

The floors and what each holds are described in ``docs/architecture.md``.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: Bottom to top. A unit is a subpackage of ftlab or a top-level module (``ftlab`` itself: its
#: ``__init__``). A unit imports only units on lower floors.
FLOORS: list[tuple[str, tuple[str, ...]]] = [
    ("leaves", ("core",)),
    ("ground", ("ftlab", "config", "artifacts", "models")),
    ("hardware targets", ("hardware",)),
    ("data", ("data",)),
    ("methods", ("sparsity",)),
    ("adapters", ("adapters",)),
    ("training", ("training",)),
    ("harness", ("harness",)),
    ("evaluation", ("evaluation",)),
    ("callbacks", ("callbacks",)),
    ("plan of steps and launchers", ("reuse", "launchers")),
    ("preflight and search", ("preflight", "search")),
    ("recipe and analysis", ("recipe", "analysis")),
    ("fused trials", ("fused",)),
    ("entry points", ("__main__", "plan", "evaluate", "masks", "cache", "validate", "analyze")),
]


def _modules(pkg: str = "ftlab") -> dict[str, tuple[Path, bool]]:
    mods = {}
    for f in (SRC / pkg).rglob("*.py"):
        parts = list(f.relative_to(SRC).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return mods


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imported(tree: ast.AST, base: str) -> list[str]:
    """Dotted names every import statement of ``tree`` reaches (relative ones resolved from ``base``),
    ``from a import b`` as ``a.b`` and ``a``."""
    out: list[str] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if _type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                anchor = base
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                target = f"{anchor}.{target}" if target else anchor
            out += [target] + [f"{target}.{a.name}" for a in node.names]
        stack.extend(ast.iter_child_nodes(node))
    return out


def import_graph() -> dict[str, set[str]]:
    """``module -> ftlab modules it imports``, from the source (nothing is imported)."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for m, (path, is_pkg) in mods.items():
        names = _imported(ast.parse(path.read_text()), m if is_pkg else m.rpartition(".")[0])
        graph[m] = {r for r in map(resolve, names) if r and r != m}
    return graph


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def floor_of() -> dict[str, int]:
    out: dict[str, int] = {}
    for i, (_, units) in enumerate(FLOORS):
        for u in units:
            assert u not in out, f"{u} is on two floors"
            out[u] = i
    return out


def test_every_unit_has_a_floor():
    units = {unit(m) for m in _modules()}
    floors = floor_of()
    missing = sorted(units - set(floors))
    assert not missing, f"give each a floor in FLOORS (tests/test_layers.py) and docs/architecture.md: {missing}"
    gone = sorted(set(floors) - units)
    assert not gone, f"FLOORS names units that no longer exist: {gone}"


def test_imports_go_down():
    floors = floor_of()
    upward = []
    for m, deps in sorted(import_graph().items()):
        for d in sorted(deps):
            a, b = unit(m), unit(d)
            if a != b and floors.get(b, -1) >= floors.get(a, len(FLOORS)):
                upward.append(f"{m} imports {d}: {a} is on floor {floors.get(a)} ({FLOORS[floors[a]][0]}), "
                              f"{b} on floor {floors.get(b)} ({FLOORS[floors[b]][0]})")
    assert not upward, "imports that do not go to a lower floor:\n" + "\n".join(upward)


def test_no_package_cycles():
    """Implied by the floors; checked on its own so that a cycle is named as one."""
    pg: dict[str, set[str]] = defaultdict(set)
    for m, deps in import_graph().items():
        pg[unit(m)] |= {unit(d) for d in deps if unit(d) != unit(m)}
    state: dict[str, int] = {}

    def visit(u: str, path: list[str]) -> None:
        state[u] = 1
        for d in sorted(pg[u]):
            if state.get(d) == 1:
                pytest.fail("package cycle: " + " -> ".join([*path[path.index(d):], u, d]))
            if d not in state:
                visit(d, path + [u])
        state[u] = 2

    for u in sorted(pg):
        if u not in state:
            visit(u, [])


def test_the_check_sees_function_level_and_relative_imports():
    """The parser counts what the floors rest on: an import inside a function, a relative one, and
    not an annotation-only one."""
    code = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ftlab.recipe.run import x\n"
            "def f():\n    from ftlab.reuse.steps import run_steps\n    from .io import write_json\n")
    names = _imported(ast.parse(code), "ftlab.data")
    assert "ftlab.reuse.steps" in names and "ftlab.data.io" in names
    assert not any(n.startswith("ftlab.recipe.run") for n in names)
