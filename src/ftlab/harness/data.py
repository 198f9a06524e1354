"""Which local rows a run's own benchmark task (``task=boolq|hellaswag|gsm8k``) scores, as files
lm-eval's ``datasets`` loader reads.

- a run: its own test split (the seeded partition of ``task.path`` the run trained next to), written
  as JSON lines; few-shot examples come from the run's train split unless ``task.options.fewshot_path``;
- a file: every row of ``task.path``; shots come from ``task.options.fewshot_path`` (the train file).

Every row is validated by the task's parser first, so a bad file fails with one line naming the
file, the line and the field before lm-eval sees it; rows are written in the layout lm-eval's
installed config reads (``RealTask.harness_row``); lm-eval's task and the headline are the
task spec's ``harness`` facts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftlab.core.errors import ConfigError
from ftlab.data.benchmark_config import write_jsonl
from ftlab.data.benchmark_files import FEWSHOT, SCORED, LocalData
from ftlab.data.tasks import checked_rows, harness_task, split_examples
from ftlab.harness.score import Benchmark

FEWSHOT_KEY = "task.options.fewshot_path"


def fewshot_path(task_cfg: Any) -> Path | None:
    raw = (task_cfg.options or {}).get("fewshot_path")
    if raw is None:
        return None
    path = Path(raw)
    if not path.is_file():
        raise ConfigError(FEWSHOT_KEY, raw, f"an existing {task_cfg.name} train file (JSONL or parquet)")
    return path


def _local(scored: Path, pool: Path | None, source: str) -> LocalData:
    files = {SCORED: (str(scored),)}
    if pool is not None:
        files[FEWSHOT] = (str(pool),)
    return LocalData("json", files, source)


def run_split_files(task_cfg: Any, seed: int, directory: Path) -> LocalData:
    """The run's test split (and few-shot pool) of ``task_cfg.path`` as JSONL under ``directory``."""
    rows = checked_rows(task_cfg.name, Path(task_cfg.path))
    parts = split_examples(rows, task_cfg.val_fraction, task_cfg.test_fraction, seed)
    extra = fewshot_path(task_cfg)
    pool = checked_rows(task_cfg.name, extra) if extra is not None else parts.train
    return _local(write_jsonl(Path(directory) / "test.jsonl", parts.test),
                  write_jsonl(Path(directory) / "train.jsonl", pool), str(task_cfg.path))


def whole_file_files(task_cfg: Any, directory: Path) -> LocalData:
    """Every row of ``task_cfg.path`` (and the few-shot file's, when set) as JSONL."""
    scored = write_jsonl(Path(directory) / "test.jsonl", checked_rows(task_cfg.name, Path(task_cfg.path)))
    extra = fewshot_path(task_cfg)
    pool = None if extra is None else write_jsonl(Path(directory) / "train.jsonl",
                                                  checked_rows(task_cfg.name, extra))
    return _local(scored, pool, str(task_cfg.path))


def headline_variant(task_cfg: Any) -> str:
    """The task's reported variant; ``task.options.length_normalize`` reports ``acc_norm`` (HellaSwag's
    ``conf/task/hellaswag.yaml`` sets it), as the fast scorer does."""
    task = harness_task(task_cfg.name).harness
    if (task_cfg.options or {}).get("length_normalize", False) and task.headline_variant == "acc":
        return "acc_norm"
    return task.headline_variant


def run_task_benchmark(cfg: Any, data: LocalData) -> Benchmark:
    """The run's own task as a :class:`Benchmark` with the run config's settings."""
    t = cfg.task
    return Benchmark(harness_task(t.name).harness.lm_eval_task, data, key="task.path", fix=f"set {FEWSHOT_KEY}=FILE",
                     num_fewshot=(t.options or {}).get("num_fewshot"), max_gen_toks=t.max_new_tokens,
                     headline_variant=headline_variant(t), shots_key="task.options.num_fewshot")


__all__ = ["fewshot_path", "headline_variant", "run_split_files", "run_task_benchmark", "whole_file_files"]
