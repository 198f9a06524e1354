"""Benchmark settings checked before any model is loaded, each failing in one line.

- every name is a task lm-eval knows (else the closest names it knows), its local data is set
  and exists, and the data has the splits the task scores and draws shots from
  (:func:`ftlab.data.benchmark_config.task_config` builds each config without reading a row);
- a generation task's token budget fits the model's window: lm-eval left-truncates the prompt to
  ``window - max_gen_toks`` tokens and stops with an assertion when that is not positive;
- given the tokenizer, every request's prompt fits too: lm-eval builds the task's requests (its
  few-shot contexts, drawn with its own seed) and silently cuts a prompt from the left when the
  few-shot context + question + generation budget (or + the scored continuation) exceeds the
  window - the shots, and with them the number being reproduced, would be lost.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lm_eval
from lm_eval.evaluator_utils import get_sample_size
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import resolve_max_length
from transformers import AutoConfig, PretrainedConfig

from ftlab.core.errors import FtlabError
from ftlab.data.benchmark_config import task_config
from ftlab.data.lm_eval_catalog import config_manager
from ftlab.harness.score import Benchmark, harness_options

#: lm-eval's HF wrapper generates this many tokens when a task sets no ``max_gen_toks``
DEFAULT_GEN_TOKS = HFLM.max_gen_toks.fget(None)
#: the seed ``simple_evaluate`` draws few-shot examples with (ftlab passes lm-eval's default)
FEWSHOT_SEED = inspect.signature(lm_eval.simple_evaluate).parameters["fewshot_random_seed"].default


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


def longest_request(cfg: dict[str, Any], tokenizer, limit: int | None) -> tuple[int, int] | None:
    """(tokens, shots) of the longest request lm-eval builds for a task config: context (few-shot
    examples + question) for a generation task, context + continuation for a loglikelihood one;
    None for rolling loglikelihood (perplexity slides its own windows). Tokens are counted as
    ``HFLM`` encodes (special tokens unless the tokenizer appends them, ``harness_options``)."""
    if cfg.get("output_type") == "loglikelihood_rolling":
        return None
    # a check prints nothing but its error: datasets' and lm-eval's progress bars go to a buffer
    with contextlib.redirect_stderr(io.StringIO()):
        (task,) = config_manager().load([cfg])["tasks"].values()
        if task.get_config("num_fewshot") is None:  # what simple_evaluate does with no num_fewshot
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=FEWSHOT_SEED)
        task.build_all_requests(limit=get_sample_size(task, limit), rank=0, world_size=1)
    special = harness_options(tokenizer).get("add_bos_token", True)
    longest = 0
    for inst in task.instances:
        context, second = inst.arguments[0], inst.arguments[1]
        text = context + second if isinstance(second, str) else context
        longest = max(longest, len(tokenizer.encode(text, add_special_tokens=special)))
    return longest, int(task.get_config("num_fewshot") or 0)


def check_context(bench: Benchmark, cfg: dict[str, Any], window: int, budget_key: str, tokenizer,
                  limit: int | None) -> None:
    """The longest request's prompt (+ generation budget) fits ``window``; else one line naming the
    shots' and the budget's keys."""
    found = longest_request(cfg, tokenizer, limit)
    if found is None:
        return
    tokens, shots = found
    budget = gen_budget(cfg)
    # generation: prompt + budget <= window; loglikelihood: lm-eval keeps the last window + 1 tokens
    need, room = (tokens + budget, window) if budget is not None else (tokens, window + 1)
    if need <= room:
        return
    what = (f"its longest prompt is {tokens} tokens + {budget_key}={budget} generated" if budget is not None
            else f"its longest prompt + answer is {tokens} tokens")
    fix = f"set {bench.shots_key} below {shots}" if shots else "use a model with a longer window"
    if budget is not None and tokens < window:
        fix += f" or {budget_key} to at most {window - tokens}"
    raise FtlabError(f"{bench.key}: {bench.name} ({shots}-shot) does not fit the model's window of {window} "
                     f"tokens: {what} = {need} (lm-eval would cut the prompt from the left"
                     f"{', losing shots' if shots else ''}); {fix}")


def check_benchmarks(benchmarks: list[tuple[Benchmark, str]], window: int, tokenizer=None,
                     limit: int | None = None) -> None:
    """Each ``(benchmark, key of its generation budget)``: its config builds from its local data and
    its generation budget fits ``window``; with ``tokenizer`` also every prompt lm-eval builds
    (first ``limit`` examples) with its few-shot context."""
    with tempfile.TemporaryDirectory(prefix="ftlab-check-") as cache:
        for bench, budget_key in benchmarks:
            cfg = task_config(bench.name, bench.data, Path(cache), key=bench.key, fix=bench.fix,
                              num_fewshot=bench.num_fewshot, max_gen_toks=bench.max_gen_toks)
            check_budget(bench, cfg, window, budget_key)
            if tokenizer is not None:
                check_context(bench, cfg, window, budget_key, tokenizer, limit)


__all__ = ["DEFAULT_GEN_TOKS", "check_benchmarks", "check_budget", "check_context", "gen_budget",
           "longest_request", "model_window"]
