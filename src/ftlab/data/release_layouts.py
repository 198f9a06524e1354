"""Public releases whose rows are not in the layout lm-eval's task configs read, rewritten to it.

- PIQA's release: ``<split>.jsonl`` rows (``goal``, ``sol1``, ``sol2``) with the answers in
  ``<split>-labels.lst`` beside it, one per line -> each row gets its ``label`` (the HF layout);
- ARC's release: nested rows ``{"question": {"stem", "choices": [{"text", "label"}]}, "answerKey"}``
  -> ``{"question": stem, "choices": {"text": [...], "label": [...]}, "answerKey"}``
  (``allenai/ai2_arc``'s layout, which lm-eval's ``arc_*`` configs read).

A layout is recognised from the files (a labels file beside the rows; a row's shape), never from
the task's name. The rewritten file is named by the sha256 of its sources, so it is written once
and its digest (the evaluation cache key's data digest) covers the labels file too; it is written
to a temporary name and renamed, so a reader never sees half of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ftlab.core.errors import FtlabError

LABELS_SUFFIX = "-labels.lst"


def labels_beside(path: Path) -> Path | None:
    """PIQA's ``train-labels.lst`` for ``train.jsonl`` when it exists."""
    candidate = path.with_name(path.name.split(".")[0] + LABELS_SUFFIX)
    return candidate if candidate.is_file() else None


def is_nested_question(row: Any) -> bool:
    """ARC's release row: the question is an object with its stem and a list of choices."""
    q = row.get("question") if isinstance(row, dict) else None
    return isinstance(q, dict) and "stem" in q and isinstance(q.get("choices"), list)


def _rows(path: Path, key: str) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise FtlabError(f"{key}: {path}:{i}: not a JSON line ({err.msg})") from err
    return rows


def _first_row(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    return None  # not JSON lines (a .json array): not a release layout handled here
    return None


def _with_labels(rows: list[dict[str, Any]], labels_path: Path, path: Path, key: str) -> list[dict[str, Any]]:
    labels = [line.strip() for line in labels_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(labels) != len(rows):
        raise FtlabError(f"{key}: {labels_path} has {len(labels)} labels for the {len(rows)} rows of {path} "
                         f"(one label per row, in order)")
    out = []
    for i, (row, label) in enumerate(zip(rows, labels), 1):
        if not label.lstrip("-").isdigit():
            raise FtlabError(f"{key}: {labels_path}:{i}: label {label!r} is not an integer")
        out.append({**row, "label": int(label)})
    return out


def _flat_question(row: dict[str, Any], path: Path, line: int, key: str) -> dict[str, Any]:
    if not is_nested_question(row):
        raise FtlabError(f"{key}: {path}:{line}: 'question' is not {{stem, choices: [{{text, label}}]}} like the "
                         f"file's first row")
    q = row["question"]
    try:
        choices = {"text": [c["text"] for c in q["choices"]], "label": [str(c["label"]) for c in q["choices"]]}
    except (KeyError, TypeError) as err:
        raise FtlabError(f"{key}: {path}:{line}: each question.choices entry needs 'text' and 'label'") from err
    rest = {k: v for k, v in row.items() if k != "question"}
    return {**rest, "question": q["stem"], "choices": choices}


def _publish(rows: list[dict[str, Any]], sources: list[Path], name: str) -> Path:
    digest = hashlib.sha256()
    for src in sources:
        digest.update(src.read_bytes())
    out = Path(tempfile.gettempdir()) / "ftlab-layouts" / digest.hexdigest()[:24] / name
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, out)
    return out


def normalized(path: Path, key: str) -> Path:
    """``path`` itself, or a copy of its rows in the layout lm-eval reads (see the module doc)."""
    if path.suffix.lower() not in (".jsonl", ".json"):
        return path
    labels = labels_beside(path)
    nested = is_nested_question(_first_row(path))
    if labels is None and not nested:
        return path
    rows = _rows(path, key)
    if nested:
        rows = [_flat_question(r, path, i, key) for i, r in enumerate(rows, 1)]
    if labels is not None:
        rows = _with_labels(rows, labels, path, key)
    return _publish(rows, [path] + ([labels] if labels else []), path.stem + ".jsonl")


__all__ = ["LABELS_SUFFIX", "is_nested_question", "labels_beside", "normalized"]
