"""Benchmark settings checked before any model is loaded, each failing in one line.

- every name is a task lm-eval knows (else the closest names it knows), its local data is set
  and exists, and the data has the splits the task scores and draws shots from
  (:func:`ftlab.data.benchmark_config.task_config` builds each config without reading a row);
- a generation task's token budget fits the model's window: lm-eval left-truncates the prompt to
  ``window - max_gen_toks`` tokens and stops with an assertion when that is not positive.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import resolve_max_length
from transformers import AutoConfig, PretrainedConfig

from ftlab.data.benchmark_config import task_config
from ftlab.errors import FtlabError
from ftlab.harness.score import Benchmark

#: lm-eval's HF wrapper generates this many tokens when a task sets no ``max_gen_toks``
DEFAULT_GEN_TOKS = HFLM.max_gen_toks.fget(None)


def model_window(source: Path | Mapping[str, Any]) -> int:
    """The window lm-eval uses for a model (``resolve_max_length``): from an HF model dir's
    ``config.json`` or from a config mapping (an ftlab model preset's ``model.config``)."""
    if isinstance(source, Mapping):
        config = PretrainedConfig(**dict(source))
    else:
        config = AutoConfig.from_pretrained(str(source))
    return resolve_max_length(config, None)


def gen_budget(cfg: dict[str, Any]) -> int | None:
    """Tokens lm-eval generates per request of a task config (None: not a generation task)."""
    if cfg.get("output_type") != "generate_until":
        return None
    return int((cfg.get("generation_kwargs") or {}).get("max_gen_toks", DEFAULT_GEN_TOKS))


def check_budget(bench: Benchmark, cfg: dict[str, Any], window: int, budget_key: str) -> None:
    budget = gen_budget(cfg)
    if budget is not None and budget >= window:
        raise FtlabError(f"{budget_key}={budget} leaves no room for the prompt of {bench.name} in the model's "
                         f"window of {window} tokens (lm-eval generates up to {budget} tokens after a prompt cut "
                         f"to window - {budget}): set {budget_key} below {window}, e.g. {max(1, window // 4)}")


def check_benchmarks(benchmarks: list[tuple[Benchmark, str]], window: int) -> None:
    """Each ``(benchmark, key of its generation budget)``: its config builds from its local data and
    its generation budget fits ``window``."""
    with tempfile.TemporaryDirectory(prefix="ftlab-check-") as cache:
        for bench, budget_key in benchmarks:
            cfg = task_config(bench.name, bench.data, Path(cache), key=bench.key, fix=bench.fix,
                              num_fewshot=bench.num_fewshot, max_gen_toks=bench.max_gen_toks)
            check_budget(bench, cfg, window, budget_key)


__all__ = ["DEFAULT_GEN_TOKS", "check_benchmarks", "check_budget", "gen_budget", "model_window"]
