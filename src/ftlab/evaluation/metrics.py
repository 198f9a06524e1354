"""Evaluation shared by trained and control runs: val loss and the task metric on the test split.

:func:`evaluate` is ftlab's own fast scorer (up to ``task.eval_examples`` test examples), used
during training; :func:`final_evaluate` gives a run's final numbers, for BoolQ/HellaSwag/GSM8K
from lm-evaluation-harness itself on the whole test split (``ftlab.harness``).

Metrics accumulate in torchmetrics ``MeanMetric`` s (token-weighted loss, per-example scores),
so the same code gives the same numbers under DDP sync or single process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torchmetrics.aggregation import MeanMetric

from ftlab.data.inference import generate_answers, loss_on
from ftlab.data.tasks import Example
from ftlab.evaluation.scoring import choice_accuracy, final_number_match
from ftlab.harness.benchmark_checks import asks_benchmarks, uses_harness


def normalize_answer(text: str) -> str:
    return " ".join(text.strip().split())


def exact_match(model, tokenizer, examples: list[Example], max_new_tokens: int, batch_size: int) -> float:
    metric = MeanMetric()
    preds = generate_answers(model, tokenizer, [e.prompt for e in examples], max_new_tokens, batch_size)
    for pred, ex in zip(preds, examples):
        metric.update(float(normalize_answer(pred) == normalize_answer(ex.answer)))
    return float(metric.compute())


#: task.metric -> (metrics.json key, scorer(model, tokenizer, examples, cfg))
SCORERS = {
    "exact_match": ("eval_exact_match",
                    lambda model, tok, ex, cfg: exact_match(model, tok, ex, cfg.task.max_new_tokens,
                                                            cfg.train.eval_batch_size)),
    "accuracy": ("eval_accuracy",
                 lambda model, tok, ex, cfg: choice_accuracy(
                     model, tok, ex, cfg.task.max_length, cfg.train.eval_batch_size,
                     bool((cfg.task.options or {}).get("length_normalize", False)))),
    "final_number": ("eval_exact_match",
                     lambda model, tok, ex, cfg: final_number_match(model, tok, ex, cfg.task.max_new_tokens,
                                                                    cfg.train.eval_batch_size)),
}


def evaluate(model, tokenizer, splits, cfg) -> dict[str, float]:
    """``val_loss`` on the val split and the task metric on (up to ``eval_examples`` of) the test split."""
    was_training = model.training
    model.eval()
    try:
        metrics = {"val_loss": loss_on(model, tokenizer, splits.val, cfg.task.max_length, cfg.train.eval_batch_size)}
        if cfg.eval.generate:
            key, scorer = SCORERS[cfg.task.metric]
            test = splits.test[:cfg.task.eval_examples] if cfg.task.eval_examples else splits.test
            metrics[key] = scorer(model, tokenizer, test, cfg)
    finally:
        model.train(was_training)
    return metrics


def final_evaluate(model, tokenizer, splits, cfg) -> dict[str, Any]:
    """A run's final numbers: ``val_loss``; for a published benchmark task lm-eval's scores of the
    whole test split (headline ``eval_accuracy``/``eval_exact_match`` plus every variant's value,
    stderr, n and n-shot under ``eval_benchmark``), other tasks :func:`evaluate`; and lm-eval's
    scores of ``eval.suite`` / ``eval.benchmarks`` (``ftlab.harness.run_scores``)."""
    own = uses_harness(cfg)
    if not own and not asks_benchmarks(cfg):
        return evaluate(model, tokenizer, splits, cfg)
    # lm-eval (with ``datasets``) takes seconds to import: only runs that score a benchmark pay it
    from ftlab.harness.run_scores import score_run

    if own:
        was_training = model.training
        model.eval()
        try:
            metrics: dict[str, Any] = {"val_loss": loss_on(model, tokenizer, splits.val, cfg.task.max_length,
                                                           cfg.train.eval_batch_size)}
        finally:
            model.train(was_training)
    else:
        metrics = evaluate(model, tokenizer, splits, cfg)
    metrics.update(score_run(model, tokenizer, cfg, own_task=own))
    return metrics


def training_scorer(cfg) -> Callable[[Any, Any], dict[str, float]]:
    """``eval.during_training.benchmarks`` scored by lm-eval on their first ``limit`` examples:
    ``(model, tokenizer) -> {task: headline value}`` (the model's train/eval mode is restored)."""
    from ftlab.harness.run_scores import during_training_scores  # lm-eval: only runs scoring during training

    return lambda model, tokenizer: during_training_scores(model, tokenizer, cfg)


__all__ = ["asks_benchmarks", "training_scorer", "evaluate", "exact_match", "final_evaluate", "uses_harness", "generate_answers",
           "loss_on", "normalize_answer", "SCORERS"]
