"""A run's lm-eval numbers: its own benchmark task (``task=boolq``...) and ``eval.suite`` /
``eval.benchmarks``, scored in one lm-eval call, as the entries of ``metrics.json``.

- own task: the headline under ``eval_accuracy`` / ``eval_exact_match`` and every variant under
  ``eval_benchmark``;
- configured benchmarks: ``benchmarks: {task: {headline, value, stderr, n, n_shot, metrics}}`` and,
  with a suite, ``benchmark_suite`` and ``benchmark_average``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from ftlab.data.benchmark_files import FEWSHOT, SCORED, LocalData
from ftlab.data.tasks import harness_task
from ftlab.harness.checks import check_benchmarks, model_window
from ftlab.harness.data import run_split_files, run_task_benchmark
from ftlab.harness.eval_cache import cached_scores
from ftlab.harness.score import Benchmark, HarnessScore, score_benchmarks
from ftlab.harness.selection import configured_benchmarks, suite_average
from ftlab.models import build_tokenizer


def score_run(model: nn.Module, tokenizer, cfg: Any, own_task: bool) -> dict[str, Any]:
    """lm-eval's scores of the run's benchmarks (``own_task``: also the run's task on its test split)."""
    benchmarks = configured_benchmarks(cfg)
    with tempfile.TemporaryDirectory(prefix="ftlab-eval-") as tmp:
        own = run_task_benchmark(cfg, run_split_files(cfg.task, cfg.seed, Path(tmp))) if own_task else None
        todo = [b for b in benchmarks if own is None or b.name != own.name]
        events: list[dict[str, Any]] = []
        scores = scores_of(model, tokenizer, cfg, ([own] if own else []) + todo, cfg.eval.get("limit"), events)
    out: dict[str, Any] = {"eval_cache": events} if cfg.eval.get("cache", True) else {}
    if own is not None:
        score = scores[own.name]
        out[harness_task(cfg.task.name).harness.headline_key] = score.headline["value"]
        out["eval_benchmark"] = score.summary()
    if benchmarks:
        out["benchmarks"] = {b.name: scores[b.name].summary() for b in benchmarks}
        average = suite_average(cfg, scores)
        if average is not None:
            out["benchmark_suite"] = cfg.eval.suite
            out["benchmark_average"] = average
    return out


def scores_of(model: nn.Module, tokenizer, cfg: Any, benchmarks: list[Benchmark], limit: int | None,
              events: list[dict[str, Any]]) -> dict[str, HarnessScore]:
    """lm-eval's scores, through the evaluation cache unless ``eval.cache=false``."""
    if not cfg.eval.get("cache", True):
        return score_benchmarks(model, tokenizer, benchmarks, batch_size=cfg.train.eval_batch_size, limit=limit)
    return cached_scores(model, tokenizer, benchmarks, batch_size=cfg.train.eval_batch_size, limit=limit,
                         cache_dir=Path(os.path.expanduser(str(cfg.paths.cache_dir))), events=events)


def during_training_scores(model: nn.Module, tokenizer, cfg: Any) -> dict[str, float]:
    """Headline value of each ``eval.during_training.benchmarks`` task on its first ``limit`` examples."""
    during = cfg.eval.during_training
    benchmarks = configured_benchmarks(cfg, list(during.benchmarks))
    scores = score_benchmarks(model, tokenizer, benchmarks, batch_size=cfg.train.eval_batch_size, limit=during.limit)
    return {name: s.headline["value"] for name, s in scores.items()}


def run_window(model_cfg: Any) -> int:
    """The model's window as lm-eval will see it: a local model dir's config, else the preset's."""
    if model_cfg.get("name_or_path") and (Path(model_cfg.name_or_path) / "config.json").is_file():
        return model_window(Path(model_cfg.name_or_path))
    return model_window(model_cfg.get("config") or {})


def run_tokenizer(model_cfg: Any):
    """The run's tokenizer when it loads without the weights (byte tokenizer, or a local model
    dir's files); None otherwise (a preset planned without weights: prompts are not measured)."""
    if model_cfg.tokenizer == "byte" or (model_cfg.get("name_or_path") and Path(model_cfg.name_or_path).is_dir()):
        return build_tokenizer(model_cfg)
    return None


def check_run(cfg: Any, own_task: bool) -> None:
    """Before anything is loaded: the run's benchmarks resolve and fit the model's window, their
    prompts with their few-shot contexts included (eval.suite / eval.benchmarks: every request of
    the files lm-eval will score; eval.during_training: its first ``limit`` examples; the run's own
    task: its seeded test split, which ``run_split_files`` partitions as the run will)."""
    window = run_window(cfg.model)
    final = [(b, "eval.max_gen_toks") for b in configured_benchmarks(cfg)]
    during = [(b, "eval.max_gen_toks") for b in configured_benchmarks(cfg, list(cfg.eval.during_training.benchmarks))]
    if own_task:  # splits and budget from the file first (its rows are checked by the task's parser elsewhere)
        data = LocalData("json", {SCORED: (str(cfg.task.path),), FEWSHOT: (str(cfg.task.path),)}, str(cfg.task.path))
        check_benchmarks([(run_task_benchmark(cfg, data), "task.max_new_tokens")], window)
    tokenizer = run_tokenizer(cfg.model) if (final or during or own_task) else None
    if tokenizer is None:
        return
    check_benchmarks(final, window, tokenizer, cfg.eval.get("limit"))
    check_benchmarks(during, window, tokenizer, cfg.eval.during_training.limit)
    if own_task:  # the prompts the run will score: its own seeded test split, shots from its train split
        with tempfile.TemporaryDirectory(prefix="ftlab-check-") as tmp:
            own = run_task_benchmark(cfg, run_split_files(cfg.task, cfg.seed, Path(tmp)))
            check_benchmarks([(own, "task.max_new_tokens")], window, tokenizer, cfg.eval.get("limit"))


__all__ = ["check_run", "during_training_scores", "run_tokenizer", "run_window", "score_run", "scores_of"]
