"""Which runs lm-eval scores, and their benchmark settings checked before anything is loaded.

Light on purpose (no lm-eval import): the launcher's preflight calls :func:`check_evaluation` for
every job, and only a job that scores a benchmark imports lm-eval's index (``ftlab.harness``).
"""

from __future__ import annotations

from typing import Any

from ftlab.core.errors import ConfigError
from ftlab.data.tasks import harness_task


def uses_harness(cfg: Any) -> bool:
    """Final numbers of the run's own published benchmark task come from lm-eval (``eval.harness``)."""
    return bool(cfg.eval.harness and cfg.eval.generate and harness_task(cfg.task.name) is not None)


def asks_benchmarks(cfg: Any) -> bool:
    """``eval.suite`` / ``eval.benchmarks``: lm-eval tasks scored on local files after training."""
    return bool(cfg.eval.get("suite") or cfg.eval.get("benchmarks"))


def logged_metrics(cfg: Any) -> list[str]:
    """What the fit logs at each evaluation: ``val_loss`` and ``eval/<task>`` of the benchmark subset."""
    if not cfg.eval.enabled:
        return []
    return ["val_loss", *[f"eval/{t}" for t in (cfg.eval.during_training.benchmarks if cfg.eval.every_n_steps else [])]]


def check_training_eval(cfg: Any) -> None:
    """Early stopping on a metric the run logs, its mode and patience; export.checkpoint's value."""
    stop, logged = cfg.train.early_stopping, logged_metrics(cfg)
    if cfg.export.checkpoint not in ("last", "best"):
        raise ConfigError("export.checkpoint", cfg.export.checkpoint, "last or best")
    if cfg.export.checkpoint == "best" and not logged:
        raise ConfigError("export.checkpoint", "best", "last when eval.enabled=false (nothing is evaluated)")
    if stop.metric is None:
        return
    if stop.metric not in logged:
        raise ConfigError("train.early_stopping.metric", stop.metric,
                          f"a metric this run logs at each evaluation: {logged or 'none (eval.enabled=false)'} "
                          f"(eval/<task> needs eval.every_n_steps and the task in eval.during_training.benchmarks)")
    if stop.mode not in ("min", "max"):
        raise ConfigError("train.early_stopping.mode", stop.mode, "min or max")
    if isinstance(stop.patience, bool) or not isinstance(stop.patience, int) or stop.patience < 1:
        raise ConfigError("train.early_stopping.patience", stop.patience, "an integer >= 1")
    if stop.min_delta < 0:
        raise ConfigError("train.early_stopping.min_delta", stop.min_delta, ">= 0")


def check_evaluation(cfg: Any) -> None:
    """Unknown task names, missing local data or splits, a generation budget the window cannot hold;
    early stopping and export settings."""
    check_training_eval(cfg)
    if cfg.eval.every_n_steps is not None and cfg.eval.every_n_steps < 1:
        raise ConfigError("eval.every_n_steps", cfg.eval.every_n_steps, "null or an integer >= 1")
    own = uses_harness(cfg) and bool(cfg.task.path)
    during = bool(cfg.eval.every_n_steps and cfg.eval.during_training.benchmarks)
    if not (cfg.eval.enabled and (own or asks_benchmarks(cfg) or during)):
        return
    from ftlab.harness.run_scores import check_run  # lm-eval's import and index: only runs that score one

    check_run(cfg, own)


__all__ = ["asks_benchmarks", "check_evaluation", "check_training_eval", "logged_metrics", "uses_harness"]
