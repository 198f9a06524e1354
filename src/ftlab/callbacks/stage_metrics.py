"""``stage_metrics.csv``: the task metric against effective parameters at the end of every stage.

This is the "metric vs non-zero parameters at each threshold" record of SoRA's sparsifying
scheduler: under ``schedule=stages`` each stage trains with its own ``xi``, and when its last
optimiser step is done the model is evaluated (:func:`ftlab.evaluation.metrics.evaluate`, rank 0) and one
row is written. A resumed run keeps the rows up to its checkpoint and records a stage that ended
exactly at the checkpoint if that row is missing.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning as L

from ftlab.core.io import CsvAppender
from ftlab.evaluation.metrics import SCORERS, evaluate
from ftlab.training.schedules import stage_table

FILE = "stage_metrics.csv"
COLUMNS = ["stage", "name", "step", "sparse_lambda_2", "lr", "overall_sparsity", "effective_params",
           "trainable_params", "val_loss"]


def metric_key(cfg: Any) -> str | None:
    """The ``metrics.json`` key of the task metric, when the run computes it."""
    return SCORERS[cfg.task.metric][0] if cfg.eval.enabled and cfg.eval.generate else None


class StageMetrics(L.Callback):
    def __init__(self, run_dir: Path, cfg: Any):
        self.cfg = cfg
        self.stages = stage_table(cfg.schedule)
        self.key = metric_key(cfg)
        self.csv = CsvAppender(Path(run_dir) / FILE, COLUMNS + ([self.key] if self.key else []))
        self._last_step = 0

    def _recorded_steps(self) -> set[int]:
        if not self.csv.path.exists():
            return set()
        with open(self.csv.path, newline="") as fh:
            return {int(r["step"]) for r in csv.DictReader(fh)}

    def on_train_start(self, trainer, pl_module) -> None:
        step = self._last_step = trainer.global_step
        if not trainer.is_global_zero:
            return
        self.csv.open(keep_until_step=step if step else None)
        if step and step not in self._recorded_steps():
            self._maybe_record(trainer, pl_module, step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self._last_step:
            return
        self._last_step = step
        if trainer.is_global_zero:
            self._maybe_record(trainer, pl_module, step)

    def _maybe_record(self, trainer, pl_module, step: int) -> None:
        stage = next((st for st in self.stages if st.end == step), None)
        if stage is None:
            return
        adapted = pl_module.adapted
        dm = trainer.datamodule
        metrics = evaluate(adapted.model, dm.tokenizer, dm.splits, self.cfg) if self.cfg.eval.enabled else {}
        row = {
            "stage": stage.index,
            "name": getattr(stage.config, "name", None) or f"stage{stage.index}",
            "step": step,
            "sparse_lambda_2": f"{adapted.stage_thresholds[stage.index]:.6e}",
            "lr": f"{stage.lr:.6e}",
            "overall_sparsity": f"{adapted.sparsity():.6f}",
            "effective_params": adapted.effective_params(),
            "trainable_params": adapted.trainable_params(),
            "val_loss": f"{metrics['val_loss']:.6f}" if "val_loss" in metrics else "",
        }
        if self.key:
            row[self.key] = f"{metrics[self.key]:.6f}"
        self.csv.append(row)
