"""Which local rows an evaluation scores, as files lm-eval's ``datasets`` loader reads.

- a run: its own test split (the seeded partition of ``task.path`` the run trained next to), written
  as JSON lines; GSM8K's shots come from the run's train split unless ``task.options.fewshot_path``;
- a file: every row of ``task.path`` read in place (JSONL or parquet as published); GSM8K's shots
  come from ``task.options.fewshot_path`` (the train file).

Every row is validated by the task's parser first, so a bad file fails with one line naming the
file, the line and the field before lm-eval sees it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftlab.data.real_tasks import checked_rows
from ftlab.data.tasks import split_examples
from ftlab.errors import ConfigError
from ftlab.harness.tasks import DataFiles, builder_of, write_jsonl


def fewshot_path(task_cfg: Any) -> Path | None:
    raw = (task_cfg.options or {}).get("fewshot_path")
    if raw is None:
        return None
    path = Path(raw)
    if not path.is_file():
        raise ConfigError("task.options.fewshot_path", raw, f"an existing {task_cfg.name} train file (JSONL or parquet)")
    return path


def uses_fewshot(task_cfg: Any) -> bool:
    """GSM8K is scored 5-shot by default (lm-eval's ``num_fewshot``); ``task.options.num_fewshot``
    changes that."""
    n = (task_cfg.options or {}).get("num_fewshot")
    return task_cfg.name == "gsm8k" if n is None else int(n) > 0


def run_split_files(task_cfg: Any, seed: int, directory: Path) -> DataFiles:
    """The run's test split (and few-shot pool) of ``task_cfg.path`` as JSONL under ``directory``."""
    rows = checked_rows(task_cfg.name, Path(task_cfg.path))
    parts = split_examples(rows, task_cfg.val_fraction, task_cfg.test_fraction, seed)
    scored = write_jsonl(Path(directory) / "test.jsonl", parts.test)
    if not uses_fewshot(task_cfg):
        return DataFiles(scored)
    extra = fewshot_path(task_cfg)
    pool = checked_rows(task_cfg.name, extra) if extra is not None else parts.train
    return DataFiles(scored, write_jsonl(Path(directory) / "train.jsonl", pool))


def whole_file_files(task_cfg: Any, directory: Path) -> DataFiles:
    """Every row of ``task_cfg.path`` (read in place when the few-shot file has its format)."""
    scored = Path(task_cfg.path)
    rows = checked_rows(task_cfg.name, scored)
    extra = fewshot_path(task_cfg) if uses_fewshot(task_cfg) else None
    if extra is None:
        return DataFiles(scored)
    pool = checked_rows(task_cfg.name, extra)
    if builder_of(extra) == builder_of(scored):
        return DataFiles(scored, extra)
    # one ``datasets`` builder reads both splits: formats differ -> both as JSON lines
    return DataFiles(write_jsonl(Path(directory) / "test.jsonl", rows),
                     write_jsonl(Path(directory) / "train.jsonl", pool))


__all__ = ["fewshot_path", "run_split_files", "uses_fewshot", "whole_file_files"]
