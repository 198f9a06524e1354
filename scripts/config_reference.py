"""Rewrite ``docs/config.md`` from the schema dataclasses: ``python scripts/config_reference.py``
(``--check``: exit 1 if the page is not current)."""

from __future__ import annotations

import sys
from pathlib import Path

from ftlab.preflight.reference import render

PAGE = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        current = PAGE.read_text() if PAGE.is_file() else ""
        if current != text:
            print(f"{PAGE} is not current: run python scripts/config_reference.py", file=sys.stderr)
            return 1
        return 0
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
