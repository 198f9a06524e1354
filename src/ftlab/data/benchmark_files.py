"""The researcher's local copy of a benchmark, as the ``data_files`` of a ``datasets`` builder.

``eval.data.<task>`` is one of
- a file (JSON, JSONL, parquet, arrow): the split the task scores;
- a directory of split files in a public release's layout: ``<split>.<ext>``, Hugging Face
  shards ``<split>-00000-of-00001.parquet`` or ``<Name>-<Split>.jsonl`` (ARC's ``ARC-Easy-Dev.jsonl``;
  ``dev``/``valid``/``val`` name the validation split, as in the WinoGrande and PIQA releases);
  PIQA's ``<split>-labels.lst`` beside its rows and ARC's nested rows are rewritten to the layout
  lm-eval reads (:mod:`ftlab.data.release_layouts`);
- a ``datasets`` ``save_to_disk`` directory (a ``DatasetDict`` or one ``Dataset``), read through its
  arrow files;
- a mapping split -> file (``{train: a.jsonl, validation: b.jsonl}``).

Every file of one task must have one format (one ``datasets`` builder reads all splits).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftlab.core.errors import FtlabError
from ftlab.data.release_layouts import normalized

BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".pq": "parquet", ".arrow": "arrow"}
SPLIT_ALIASES = {"dev": "validation", "valid": "validation", "val": "validation"}
#: the scored split of a task, filled in once the task's config is known
SCORED = "<scored>"
#: the split a task draws few-shot examples from (a run's own train split, written by ftlab)
FEWSHOT = "<fewshot>"


@dataclass(frozen=True)
class LocalData:
    """split -> files, all read by ``builder``; :data:`SCORED` stands for the task's scored split."""

    builder: str
    files: dict[str, tuple[str, ...]]
    source: str  # what the user set, for messages

    def splits(self) -> list[str]:
        return sorted(self.files)


def _builder(path: Path, key: str) -> str:
    builder = BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise FtlabError(f"{key}={str(path)!r}: unknown format {path.suffix!r} "
                         f"(allowed: {', '.join(sorted(BUILDERS))} files, or a datasets save_to_disk dir)")
    return builder


def _arrow_files(directory: Path) -> tuple[str, ...]:
    return tuple(str(p) for p in sorted(directory.glob("data-*.arrow")))


def _split_of(path: Path) -> str | None:
    """``train.jsonl``, ``train-00000-of-00001.parquet`` (HF shards) or ``ARC-Easy-Dev.jsonl`` (a
    release's trailing split name) -> the split; None for other files (``train-labels.lst``...)."""
    stem = path.name.split(".")[0]
    known = ("train", "validation", "test", *SPLIT_ALIASES)
    for name in (stem.split("-")[0], stem.rsplit("-", 1)[-1].lower()):
        if name in known:
            return SPLIT_ALIASES.get(name, name)
    return None


def _directory(path: Path, key: str) -> dict[str, tuple[str, ...]]:
    if (path / "dataset_dict.json").is_file():  # DatasetDict.save_to_disk
        return {d.name: _arrow_files(d) for d in sorted(path.iterdir()) if d.is_dir() and _arrow_files(d)}
    if (path / "state.json").is_file():  # Dataset.save_to_disk: one split
        return {SCORED: _arrow_files(path)}
    found: dict[str, list[str]] = {}
    for f in sorted(path.iterdir()):
        split = _split_of(f)
        if f.is_file() and split is not None and f.suffix.lower() in BUILDERS:
            found.setdefault(split, []).append(str(f))
    if not found:
        raise FtlabError(f"{key}={str(path)!r}: no split files in it (expected train/validation/test "
                         f"(or dev) .jsonl/.json/.parquet/.arrow files, or a datasets save_to_disk dir)")
    return {s: tuple(v) for s, v in found.items()}


def _file(value: Any, key: str) -> Path:
    path = Path(str(value))
    if not path.exists():
        raise FtlabError(f"{key}={str(value)!r}: no such file or directory")
    return path


def resolve(key: str, value: Any) -> LocalData:
    """``eval.data.<task>`` (``key``) -> :class:`LocalData`; a missing path fails naming ``key``."""
    if value is None:
        raise FtlabError(f"{key} is not set: the benchmark reads local files only "
                         f"(set {key}=PATH or {key}={{validation: PATH, train: PATH}})")
    if isinstance(value, Mapping):
        files: dict[str, tuple[str, ...]] = {}
        for split, raw in value.items():
            path = _file(raw, f"{key}.{split}")
            split = SPLIT_ALIASES.get(str(split), str(split))
            files[split] = (_directory(path, f"{key}.{split}").get(SCORED, ()) if path.is_dir()
                            else (str(path),))
    else:
        path = _file(value, key)
        files = _directory(path, key) if path.is_dir() else {SCORED: (str(path),)}
    files = {split: tuple(str(normalized(Path(f), key)) for f in paths) for split, paths in files.items()}
    builders = {_builder(Path(f), key) for paths in files.values() for f in paths}
    if len(builders) != 1:
        raise FtlabError(f"{key}: the splits' files must share one format (got {sorted(builders)})")
    return LocalData(builders.pop(), files, str(value))


__all__ = ["BUILDERS", "FEWSHOT", "LocalData", "SCORED", "SPLIT_ALIASES", "resolve"]
