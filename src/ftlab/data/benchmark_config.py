"""lm-eval's installed config of one task, with its dataset source replaced by local files.

:func:`task_config` takes the config lm-eval ships (:func:`ftlab.data.lm_eval_catalog.task_yaml`) and
changes only where the rows come from: ``dataset_path`` becomes the ``datasets`` builder of the
local files (json/parquet/arrow), ``dataset_name`` goes, ``dataset_kwargs.data_files`` maps the
config's own split names to the files. Splits the config names but the files lack are dropped
from the config, after checking that the scored split (and, for few-shot scoring, the split the
shots come from) is there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ftlab.core.errors import FtlabError
from ftlab.data.benchmark_files import FEWSHOT, SCORED, LocalData
from ftlab.data.lm_eval_catalog import SPLIT_KEYS, default_shots, fewshot_source, scored_split, task_yaml


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Rows (plain JSON values, see ``checked_rows``) as JSON lines, for a subset of a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def data_files(cfg: dict[str, Any], data: LocalData, key: str, shots: int,
               fix: str | None = None) -> dict[str, list[str]]:
    """The config's split names -> files; fails naming ``key`` when a needed split is missing."""
    scored, source = scored_split(cfg), fewshot_source(cfg)
    named = {SCORED: scored, FEWSHOT: source}
    wanted = {cfg.get(k) for k in SPLIT_KEYS} - {None}  # a release's unlabelled test file is not read
    files = {named.get(split, split): list(paths) for split, paths in data.files.items()
             if named.get(split, split) in wanted}
    have = ", ".join(sorted(named.get(s, s) or s for s in data.files)) or "none"
    if scored not in files:
        raise FtlabError(f"{key}={data.source!r}: lm-eval's {cfg['task']} scores its {scored!r} split, which "
                         f"these files lack (found: {have}); set {key}.{scored}=FILE")
    if shots > 0 and source is not None and source not in files:
        raise FtlabError(f"{key}={data.source!r}: {cfg['task']} is scored {shots}-shot, drawing the shots from "
                         f"its {source!r} split, which these files lack (found: {have}); "
                         f"{fix or f'set {key}.{source}=FILE'} or set the number of shots to 0")
    return files


def task_config(task: str, data: LocalData, cache_dir: Path, *, key: str, fix: str | None = None,
                num_fewshot: int | None = None, max_gen_toks: int | None = None) -> dict[str, Any]:
    """lm-eval's config of ``task`` reading ``data`` (the ``datasets`` cache in ``cache_dir``)."""
    cfg = task_yaml(task)
    if num_fewshot is not None:
        cfg["num_fewshot"] = int(num_fewshot)
    files = data_files(cfg, data, key, default_shots(cfg), fix)
    for split_key in SPLIT_KEYS:  # a config must not name a split that has no file
        if cfg.get(split_key) is not None and cfg[split_key] not in files:
            cfg[split_key] = None
    cfg.update(dataset_path=data.builder, dataset_name=None,
               dataset_kwargs={"data_files": files, "cache_dir": str(cache_dir)})
    if max_gen_toks is not None and "generation_kwargs" in cfg:
        cfg["generation_kwargs"] = {**cfg["generation_kwargs"], "max_gen_toks": int(max_gen_toks)}
    return cfg


__all__ = ["data_files", "task_config", "write_jsonl"]
