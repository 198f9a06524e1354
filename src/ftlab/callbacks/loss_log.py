"""``loss_log.csv``: one row every ``log_every_n_steps`` optimiser steps (rank 0 only).

The window's losses stay on the device (:class:`DeviceScalars`) and are read once per row, with
the same float arithmetic as per-step reads, so rows are unchanged; the progress bar gets the
row's values at the same cadence, as host tensors (a device value there would be read on the host
after every batch).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L
import torch

from ftlab.core.io import CsvAppender
from ftlab.training.device_values import DeviceScalars, group_means
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
        self._window_losses = DeviceScalars()  # micro-batch losses of the window
        self._window_counts: list[int] = []  # micro-batches per optimiser step of the window
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
        for loss in pl_module.pending_losses:
            self._window_losses.append(loss)
        self._window_counts.append(len(pl_module.pending_losses))
        self._window_tokens += pl_module.pending_tokens
        pl_module.pending_losses, pl_module.pending_tokens = [], 0
        step = trainer.global_step
        if step % self.every or not trainer.is_global_zero:
            if step % self.every == 0:
                self._reset_window()
            return
        step_losses = group_means(self._window_losses.values(), self._window_counts)
        train_loss = sum(step_losses) / len(step_losses)
        lr, memory, sparsity = pl_module.lr_at(step - 1), gpu_memory_mb(), pl_module.adapted.sparsity()
        row = {
            "epoch": trainer.current_epoch,
            "step": step,
            "train_loss": f"{train_loss:.6f}",
            "learning_rate": f"{lr:.6e}",
            "gpu_memory_mb": f"{memory:.1f}",
            "sparsity": "" if sparsity is None else f"{sparsity:.6f}",
        }
        bar = {"loss": train_loss, "lr": lr, "mem_mb": memory, **({} if sparsity is None else {"sparsity": sparsity})}
        for name, value in bar.items():
            pl_module.log(name, torch.tensor(value), prog_bar=True, on_step=True, on_epoch=False, logger=False)
        if self.measurements:
            elapsed = time.perf_counter() - self._t0
            row["cpu_rss_mb"] = f"{cpu_rss_mb():.1f}"
            # tokens of this rank x world size: the whole job's throughput
            row["tokens_per_sec"] = f"{self._window_tokens * trainer.world_size / max(elapsed, 1e-9):.1f}"
        self.csv.append(row)
        self._reset_window()

    def state_dict(self) -> dict:
        """The open window (step losses since the last row) travels in every checkpoint: a run
        resumed from a step between two rows (a signal's checkpoint, a SLURM requeue) writes the
        same next row as an uninterrupted run. Plain floats, so a ``weights_only`` load reads it."""
        return {"window_losses": list(self._window_losses.values()), "window_counts": list(self._window_counts),
                "window_tokens": int(self._window_tokens)}

    def load_state_dict(self, state: dict) -> None:
        self._window_losses = DeviceScalars(state.get("window_losses", ()))
        self._window_counts = [int(c) for c in state.get("window_counts", ())]
        self._window_tokens = int(state.get("window_tokens", 0))

    def _reset_window(self) -> None:
        self._window_losses, self._window_counts, self._window_tokens = DeviceScalars(), [], 0
        self._t0 = time.perf_counter()
