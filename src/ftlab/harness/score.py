"""One evaluation of a model on any lm-eval tasks, by lm-eval's own evaluator.

The model stays in memory: lm-eval's ``HFLM`` accepts an instantiated ``transformers`` model (a
merged, masked, gated or quantized ftlab model, or a peft wrapper) plus its tokenizer, so nothing
is written to disk first. All benchmarks of one evaluation go through one ``simple_evaluate``
call. lm-eval seeds the global generators; they are restored afterwards, so evaluating the
control before training does not change the training run.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lm_eval
from lm_eval.models.huggingface import HFLM
from torch import nn

from ftlab.data.benchmark_config import task_config
from ftlab.data.benchmark_files import LocalData
from ftlab.data.lm_eval_catalog import config_manager, lm_eval_version
from ftlab.harness.records import default_variant, metric_records, pick
from ftlab.training.rng import preserved_rng

log = logging.getLogger("ftlab")


@dataclass
class Benchmark:
    """One lm-eval task on local files: ``key`` is the config key that names the files (messages)."""

    name: str
    data: LocalData
    key: str
    num_fewshot: int | None = None
    max_gen_toks: int | None = None
    headline_variant: str | None = None  # None: the config's first metric (records.default_variant)
    fix: str | None = None  # how to supply a missing few-shot split (default: name the split's key)
    shots_key: str = "eval.num_fewshot"  # the key that sets num_fewshot (messages)


@dataclass
class HarnessScore:
    task: str
    records: list[dict[str, Any]]  # one per variant: value, stderr, n, n_shot
    headline_variant: str
    samples: list[dict[str, Any]]  # lm-eval's logged samples (requests, responses, per-example metrics)

    @property
    def headline(self) -> dict[str, Any]:
        return pick(self.records, self.headline_variant, self.task)

    def summary(self) -> dict[str, Any]:
        """What metrics.json / eval.json keep of one task: its headline and every variant's record."""
        head = self.headline
        return {"task": self.task, "harness": f"lm-eval {lm_eval_version()}", "headline": self.headline_variant,
                "value": head["value"], "stderr": head["stderr"], "n": head["n"], "n_shot": head["n_shot"],
                "metrics": self.records}


def appends_special_tokens(tokenizer) -> bool:
    """True for tokenizers whose special tokens go *after* the text (ByT5's byte tokenizer appends
    EOS). lm-eval encodes context and context+continuation with the tokenizer's special tokens
    unless told otherwise; an appended EOS would then replace the continuation's first token
    and be scored as part of every continuation, and generation would start after an EOS."""
    plain = tokenizer.encode("a", add_special_tokens=False)
    full = tokenizer.encode("a")
    return len(full) > len(plain) and full[:len(plain)] == plain


def harness_options(tokenizer) -> dict[str, Any]:
    """HFLM arguments beyond lm-eval's defaults: ``add_bos_token=False`` (no special tokens) for
    tokenizers that append them - what ``--model_args add_bos_token=False`` does on lm-eval's
    command line; BOS-prepending tokenizers (Llama, Mistral) keep lm-eval's default."""
    return {"add_bos_token": False} if appends_special_tokens(tokenizer) else {}


def harness_lm(model: nn.Module, tokenizer, batch_size: int, max_length: int | None = None) -> HFLM:
    """lm-eval's HF wrapper around an in-memory model (its ``device`` is the model's)."""
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length,
                **harness_options(tokenizer))


def run_harness(lm: HFLM, configs: list[dict[str, Any]], limit: int | None = None) -> dict[str, Any]:
    """``lm_eval.simple_evaluate`` with lm-eval's default seeds, samples logged."""
    with preserved_rng():
        return lm_eval.simple_evaluate(model=lm, tasks=configs, task_manager=config_manager(), log_samples=True,
                                       limit=limit)


def score_benchmarks(model: nn.Module, tokenizer, benchmarks: list[Benchmark], *, batch_size: int,
                     limit: int | None = None, max_length: int | None = None) -> dict[str, HarnessScore]:
    """Score every benchmark with lm-eval in one call; the model's train/eval mode is restored."""
    was_training = model.training
    try:
        with tempfile.TemporaryDirectory(prefix="ftlab-harness-") as cache:
            configs = [task_config(b.name, b.data, Path(cache), key=b.key, fix=b.fix,
                                   num_fewshot=b.num_fewshot, max_gen_toks=b.max_gen_toks) for b in benchmarks]
            out = run_harness(harness_lm(model, tokenizer, batch_size, max_length), configs, limit)
    finally:
        model.train(was_training)
    scores = {}
    for bench, cfg in zip(benchmarks, configs):
        name = bench.name
        records = metric_records(out["results"][name], n=out["n-samples"][name]["effective"],
                                 n_shot=out["n-shot"][name])
        scores[name] = HarnessScore(name, records, bench.headline_variant or default_variant(cfg),
                                    out["samples"][name])
    return scores


__all__ = ["Benchmark", "HarnessScore", "appends_special_tokens", "harness_lm", "harness_options", "run_harness",
           "score_benchmarks"]
