"""Which runs lm-eval scores, and their benchmark settings checked before anything is loaded.

Light on purpose (no lm-eval import): the launcher's preflight calls :func:`check_evaluation` for
every job, and only a job that scores a benchmark imports lm-eval's index (``ftlab.harness``).
"""

from __future__ import annotations

from typing import Any

from ftlab.data.real_tasks import REAL_TASKS


def uses_harness(cfg: Any) -> bool:
    """Final numbers of the run's own published benchmark task come from lm-eval (``eval.harness``)."""
    return bool(cfg.eval.harness and cfg.eval.generate and cfg.task.name in REAL_TASKS)


def asks_benchmarks(cfg: Any) -> bool:
    """``eval.suite`` / ``eval.benchmarks``: lm-eval tasks scored on local files after training."""
    return bool(cfg.eval.get("suite") or cfg.eval.get("benchmarks"))


def check_evaluation(cfg: Any) -> None:
    """Unknown task names, missing local data or splits, a generation budget the window cannot hold."""
    own = uses_harness(cfg) and bool(cfg.task.path)
    if not (cfg.eval.enabled and (own or asks_benchmarks(cfg))):
        return
    from ftlab.harness.run_scores import check_run  # lm-eval's import and index: only runs that score one

    check_run(cfg, own)


__all__ = ["asks_benchmarks", "check_evaluation", "uses_harness"]
