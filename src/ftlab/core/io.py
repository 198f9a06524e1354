"""Files a reader may open at any moment (metrics, records, manifests, masks, plots): written to a
hidden temporary next to the target and renamed into place, so a reader sees the old file or the
new one, never half of one, and a failed write leaves nothing behind.

The one place for that pattern; callers pass the content, not the mechanics.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def temporary_path(path: str | Path) -> Path:
    """The hidden sibling a write of ``path`` goes to first (per process: concurrent writers of
    one file never share a temporary)."""
    path = Path(path)
    return path.with_name(f".tmp-{os.getpid()}-{path.name}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        yield tmp
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, data: Any, *, indent: int | None = 2, sort_keys: bool = False,
               default: Callable[[Any], Any] | None = None) -> Path:
    """``data`` as JSON (indented for people reading run dirs), replaced atomically."""
    return write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys, default=default))


def write_csv(path: str | Path, columns: Sequence[str], rows: Iterable[dict[str, Any]], *,
              restval: Any = "", extrasaction: str = "raise") -> Path:
    """Rows under a header of ``columns`` (``csv.DictWriter`` semantics), replaced atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns), restval=restval, extrasaction=extrasaction)
        w.writeheader()
        w.writerows(rows)
    return Path(path)


class CsvAppender:
    """Append-only CSV with a fixed header, safe to reopen after a resume: writes the header once;
    on reopen keeps rows up to ``keep_until_step`` so a resumed run does not duplicate the rows
    written after its checkpoint."""

    def __init__(self, path: Path, header: list[str]):
        self.path, self.header = Path(path), list(header)

    def open(self, keep_until_step: int | None = None, step_column: str = "step") -> None:
        if self.path.exists() and keep_until_step is not None:
            with open(self.path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if _complete(r, step_column)
                        and int(r[step_column]) <= keep_until_step]
            write_csv(self.path, self.header, rows)
        elif not self.path.exists() or keep_until_step is None:
            write_csv(self.path, self.header, [])

    def append(self, row: dict) -> None:
        """One row; a write that fails (disk full) is cut off again, never left as half a row."""
        size = self.path.stat().st_size if self.path.exists() else 0
        try:
            with open(self.path, "a", newline="") as fh:
                csv.DictWriter(fh, fieldnames=self.header).writerow(row)
        except OSError:
            with contextlib.suppress(OSError):
                os.truncate(self.path, size)
            raise


def _complete(row: dict, step_column: str) -> bool:
    """A row with every column and an integer step (not the cut-off end of a failed write)."""
    return None not in row and all(v is not None for v in row.values()) and str(row.get(step_column, "")).isdigit()
