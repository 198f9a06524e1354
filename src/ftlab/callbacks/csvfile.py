"""Append-only CSV with a fixed header, safe to reopen after a resume."""

from __future__ import annotations

import csv
from pathlib import Path


class CsvAppender:
    """Writes the header once; on reopen (resume) keeps rows up to ``keep_until_step`` so a
    resumed run does not duplicate the rows written after its checkpoint."""

    def __init__(self, path: Path, header: list[str]):
        self.path, self.header = Path(path), list(header)

    def open(self, keep_until_step: int | None = None, step_column: str = "step") -> None:
        if self.path.exists() and keep_until_step is not None:
            with open(self.path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r[step_column]) <= keep_until_step]
            self._write_all(rows)
        elif not self.path.exists() or keep_until_step is None:
            self._write_all([])

    def _write_all(self, rows: list[dict]) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self.header)
            w.writeheader()
            w.writerows(rows)
        tmp.replace(self.path)

    def append(self, row: dict) -> None:
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self.header).writerow(row)
