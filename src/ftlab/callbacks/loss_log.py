"""``loss_log.csv``: one row every ``log_every_n_steps`` optimiser steps (rank 0 only)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L

from ftlab.callbacks.csvfile import CsvAppender
from ftlab.training.module import gpu_memory_mb

COLUMNS = ["epoch", "step", "train_loss", "learning_rate", "gpu_memory_mb", "sparsity"]
MEASUREMENT_COLUMNS = ["cpu_rss_mb", "tokens_per_sec"]


def cpu_rss_mb() -> float:
    """Resident set size of this process (Linux /proc; 0.0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


class LossLog(L.Callback):
    def __init__(self, run_dir: Path, every_n_steps: int, measurements: bool = True):
        self.every = every_n_steps
        self.measurements = measurements
        header = COLUMNS + (MEASUREMENT_COLUMNS if measurements else [])
        self.csv = CsvAppender(Path(run_dir) / "loss_log.csv", header)
        self._window_losses: list[float] = []
        self._window_tokens = 0
        self._t0 = time.perf_counter()
        self._last_step = 0

    def on_train_start(self, trainer, pl_module) -> None:
        self._last_step = trainer.global_step
        if trainer.is_global_zero:
            self.csv.open(keep_until_step=trainer.global_step if trainer.global_step else None)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self._last_step:
            return  # accumulating: no optimiser step yet
        self._last_step = trainer.global_step
        losses = pl_module.pending_losses
        self._window_losses.append(sum(losses) / max(1, len(losses)))
        self._window_tokens += pl_module.pending_tokens
        pl_module.pending_losses, pl_module.pending_tokens = [], 0
        step = trainer.global_step
        if step % self.every or not trainer.is_global_zero:
            if step % self.every == 0:
                self._reset_window()
            return
        sparsity = pl_module.adapted.sparsity()
        row = {
            "epoch": trainer.current_epoch,
            "step": step,
            "train_loss": f"{sum(self._window_losses) / len(self._window_losses):.6f}",
            "learning_rate": f"{pl_module.lr_at(step - 1):.6e}",
            "gpu_memory_mb": f"{gpu_memory_mb():.1f}",
            "sparsity": "" if sparsity is None else f"{sparsity:.6f}",
        }
        if self.measurements:
            elapsed = time.perf_counter() - self._t0
            row["cpu_rss_mb"] = f"{cpu_rss_mb():.1f}"
            # tokens of this rank x world size: the whole job's throughput
            row["tokens_per_sec"] = f"{self._window_tokens * trainer.world_size / max(elapsed, 1e-9):.1f}"
        self.csv.append(row)
        self._reset_window()

    def _reset_window(self) -> None:
        self._window_losses, self._window_tokens = [], 0
        self._t0 = time.perf_counter()
