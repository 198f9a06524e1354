"""``sparsity_log.csv`` of gated adapters: ``epoch,step,overall_sparsity,<layer>,...``.

One row every ``log_every_n_steps`` optimiser steps (the cadence of ``loss_log.csv``), rank 0 only.
The layer columns are the adapted layers' module names, read once from the model at train start,
so the header always matches the layers that carry gates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from ftlab.callbacks.stage_metrics import StageMetrics
from ftlab.core.io import CsvAppender
from ftlab.training.schedules import is_staged

FILE = "sparsity_log.csv"
COLUMNS = ["epoch", "step", "overall_sparsity"]


class SparsityLog(L.Callback):
    def __init__(self, run_dir: Path, every_n_steps: int):
        self.path = Path(run_dir) / FILE
        self.every = every_n_steps
        self.csv: CsvAppender | None = None
        self._last_step = 0

    def on_train_start(self, trainer, pl_module) -> None:
        self._last_step = trainer.global_step
        if trainer.is_global_zero:
            self.csv = CsvAppender(self.path, COLUMNS + pl_module.adapted.layer_names())
            self.csv.open(keep_until_step=trainer.global_step if trainer.global_step else None)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self._last_step:
            return  # accumulating: no optimiser step yet
        self._last_step = step
        if step % self.every or self.csv is None:
            return
        adapted = pl_module.adapted
        row = {"epoch": trainer.current_epoch, "step": step, "overall_sparsity": f"{adapted.sparsity():.6f}"}
        row.update({name: f"{v:.6f}" for name, v in adapted.layer_sparsity().items()})
        self.csv.append(row)


def gated_callbacks(cfg: Any, run_dir: Path) -> list[L.Callback]:
    """What a gated adapter adds to a run: the sparsity log, and per-stage records under stages."""
    callbacks: list[L.Callback] = [SparsityLog(run_dir, cfg.train.log_every_n_steps)]
    if is_staged(cfg.schedule):
        callbacks.append(StageMetrics(run_dir, cfg))
    return callbacks
