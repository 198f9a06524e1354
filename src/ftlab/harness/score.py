"""One evaluation of a model on BoolQ/HellaSwag/GSM8K by lm-eval's own evaluator.

The model stays in memory: lm-eval's ``HFLM`` accepts an instantiated ``transformers`` model (a
merged, masked, gated or quantized ftlab model, or a peft wrapper) plus its tokenizer, so nothing
is written to disk first. lm-eval seeds the global generators; they are restored afterwards, so
evaluating the control before training does not change the training run.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import lm_eval
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from torch import nn

from ftlab.harness.records import headline, metric_records
from ftlab.harness.tasks import TASKS_DIR, DataFiles, harness_name, task_config
from ftlab.reuse.rng import preserved_rng

log = logging.getLogger("ftlab")


@dataclass
class HarnessScore:
    task: str
    records: list[dict[str, Any]]  # one per variant: value, stderr, n, n_shot
    headline: dict[str, float]  # {eval_accuracy|eval_exact_match: value}
    headline_variant: str
    samples: list[dict[str, Any]]  # lm-eval's logged samples (requests, responses, per-example metrics)

    def summary(self) -> dict[str, Any]:
        """What metrics.json / eval.json keep: the headline and every variant's record."""
        return {**self.headline, "eval_benchmark": {
            "task": self.task, "harness": f"lm-eval {version('lm_eval')}", "headline": self.headline_variant,
            "metrics": self.records}}


def task_manager() -> TaskManager:
    """Only ftlab's configs are indexed (lm-eval's ~10k built-in configs take seconds to scan)."""
    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False)


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


def run_harness(lm: HFLM, configs: list[dict[str, Any]]) -> dict[str, Any]:
    """``lm_eval.simple_evaluate`` with lm-eval's default seeds, samples logged."""
    with preserved_rng():
        return lm_eval.simple_evaluate(model=lm, tasks=configs, task_manager=task_manager(), log_samples=True)


def score_task(model: nn.Module, tokenizer, task: str, files: DataFiles, *, batch_size: int,
               num_fewshot: int | None = None, max_gen_toks: int | None = None, max_length: int | None = None,
               headline_variant: str | None = None) -> HarnessScore:
    """Score ``task`` on ``files`` with lm-eval; the model's train/eval mode is restored."""
    was_training = model.training
    try:
        with tempfile.TemporaryDirectory(prefix="ftlab-harness-") as cache:
            cfg = task_config(task, files, Path(cache), num_fewshot=num_fewshot, max_gen_toks=max_gen_toks)
            out = run_harness(harness_lm(model, tokenizer, batch_size, max_length), [cfg])
    finally:
        model.train(was_training)
    name = harness_name(task)
    records = metric_records(out["results"][name], n=out["n-samples"][name]["effective"],
                             n_shot=out["n-shot"][name])
    head, variant = headline(task, records, headline_variant)
    return HarnessScore(task, records, head, variant, out["samples"][name])


def headline_variant(task_cfg: Any) -> str | None:
    """HellaSwag's headline follows ``task.options.length_normalize`` like the fast scorer does
    (``conf/task/hellaswag.yaml`` sets it: acc_norm)."""
    if task_cfg.name != "hellaswag":
        return None
    return "acc_norm" if (task_cfg.options or {}).get("length_normalize", False) else "acc"


def score_run_task(model: nn.Module, tokenizer, cfg: Any, files: DataFiles) -> HarnessScore:
    """:func:`score_task` with the settings of a run config (task options, eval batch size)."""
    t = cfg.task
    return score_task(model, tokenizer, t.name, files, batch_size=cfg.train.eval_batch_size,
                      num_fewshot=(t.options or {}).get("num_fewshot"), max_gen_toks=t.max_new_tokens,
                      headline_variant=headline_variant(t))


__all__ = ["HarnessScore", "appends_special_tokens", "harness_lm", "harness_options", "headline_variant", "run_harness", "score_run_task", "score_task",
           "task_manager"]
