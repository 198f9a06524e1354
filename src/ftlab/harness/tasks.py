"""ftlab's lm-eval task configs and the local data files one evaluation reads.

``tasks/ftlab_<name>.yaml`` are lm-eval 0.4's own ``boolq`` / ``hellaswag`` / ``gsm8k`` configs
with the dataset replaced by a local file: :func:`task_config` loads one through lm-eval's YAML
loader (which resolves its ``!function`` entries) and points ``dataset_path`` (the ``json`` or
``parquet`` builder of ``datasets``) and ``data_files`` at the files of this evaluation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lm_eval.tasks._yaml_loader import load_yaml

from ftlab.data.real_tasks import PARQUET_SUFFIXES
from ftlab.errors import FtlabError

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
#: ftlab task -> the split of its config that is scored
EVAL_SPLIT = {"boolq": "validation", "hellaswag": "validation", "gsm8k": "test"}
#: the split few-shot examples are drawn from (lm-eval's ``fewshot_split``)
FEWSHOT_SPLIT = "train"


def harness_name(task: str) -> str:
    return f"ftlab_{task}"


def builder_of(path: Path) -> str:
    """The ``datasets`` builder that reads ``path``: parquet shards or JSON lines."""
    return "parquet" if Path(path).suffix.lower() in PARQUET_SUFFIXES else "json"


@dataclass
class DataFiles:
    """Files of one evaluation: the scored file and (GSM8K) the few-shot pool, one builder."""

    scored: Path
    fewshot: Path | None = None
    builder: str = field(init=False)

    def __post_init__(self) -> None:
        self.builder = builder_of(self.scored)
        if self.fewshot is not None and builder_of(self.fewshot) != self.builder:
            raise FtlabError(f"{self.fewshot}: the few-shot file must have the scored file's format "
                             f"({self.builder}, like {self.scored})")


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Rows (plain JSON values, see ``checked_rows``) as JSON lines, for a subset of a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def task_config(task: str, files: DataFiles, cache_dir: Path, *, num_fewshot: int | None = None,
                max_gen_toks: int | None = None) -> dict[str, Any]:
    """lm-eval config dict of ftlab's ``task`` reading ``files`` (datasets cache in ``cache_dir``)."""
    cfg = load_yaml(TASKS_DIR / f"{harness_name(task)}.yaml", resolve_func=True)
    data_files = {EVAL_SPLIT[task]: str(files.scored)}
    if files.fewshot is not None:
        data_files[FEWSHOT_SPLIT] = str(files.fewshot)
    cfg["dataset_path"] = files.builder
    cfg["dataset_kwargs"] = {"data_files": data_files, "cache_dir": str(cache_dir)}
    if num_fewshot is not None:
        cfg["num_fewshot"] = int(num_fewshot)
    if max_gen_toks is not None and "generation_kwargs" in cfg:
        cfg["generation_kwargs"] = {**cfg["generation_kwargs"], "max_gen_toks": int(max_gen_toks)}
    if cfg.get("num_fewshot", 0) > 0 and files.fewshot is None:
        raise FtlabError(f"{task} is scored {cfg['num_fewshot']}-shot (lm-eval's default) but has no file to draw "
                         f"the shots from: set task.options.fewshot_path (the {task} train file) or "
                         f"task.options.num_fewshot=0")
    if files.fewshot is None:  # a config must not name a split that has no file
        for key in ("training_split", "fewshot_split"):
            cfg.pop(key, None)
    return cfg


__all__ = ["DataFiles", "EVAL_SPLIT", "TASKS_DIR", "builder_of", "harness_name", "task_config", "write_jsonl"]
