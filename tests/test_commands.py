"""The top level of ``ftlab`` holds only the commands, so "where are the CLIs" has one answer:
``python -m ftlab`` (``__main__.py``), ``python -m ftlab.NAME`` for each other top-level module, and
``python -m ftlab.plan`` (a package whose ``__main__.py`` is the command). Every other module lives in
a package named for what it serves (its floor in ``tests/test_layers.py``). A new loose module fails
here; so does a command without a ``main`` or a ``__main__`` guard.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "ftlab"

COMMANDS = {"__main__", "analyze", "cache", "evaluate", "masks", "validate"}
COMMAND_PACKAGES = {"plan"}


def _is_command(path: Path) -> bool:
    """A ``main`` function at module level and an ``if __name__ == "__main__":`` guard."""
    tree = ast.parse(path.read_text())
    has_main = any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)
    guard = any(isinstance(n, ast.If) and isinstance(n.test, ast.Compare)
                and isinstance(n.test.left, ast.Name) and n.test.left.id == "__name__"
                and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in n.test.comparators)
                for n in tree.body)
    return has_main and guard


def test_top_level_modules_are_the_commands():
    loose = {p.stem for p in PKG.glob("*.py")} - {"__init__"}
    assert loose == COMMANDS, (f"only commands at the top level of ftlab; move into a package: "
                               f"{sorted(loose - COMMANDS)}; missing commands: {sorted(COMMANDS - loose)}")


def test_each_command_has_main_and_a_guard():
    paths = [PKG / f"{c}.py" for c in sorted(COMMANDS)] + [PKG / p / "__main__.py" for p in sorted(COMMAND_PACKAGES)]
    assert [p.name for p in paths if not _is_command(p)] == []


def test_only_the_command_packages_have_a_main_module():
    """``python -m ftlab.X`` works for the commands only: no other package is runnable."""
    runnable = {p.parent.name for p in PKG.glob("*/__main__.py")}
    assert runnable == COMMAND_PACKAGES


def test_the_check_tells_a_command_from_a_module(tmp_path):
    command = tmp_path / "c.py"
    command.write_text("def main(argv=None):\n    return 0\n\n\nif __name__ == '__main__':\n    main()\n")
    module = tmp_path / "m.py"
    module.write_text("def main(argv=None):\n    return 0\n")
    assert _is_command(command) and not _is_command(module)
