"""``training_history.json``: per-epoch lists, rewritten atomically at every epoch end."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L

from ftlab.core.io import write_json
from ftlab.training.module import gpu_memory_mb

FIELDS = ["epoch", "step", "train_loss", "val_loss", "epoch_time", "gpu_memory_mb", "trainable_params",
          "effective_params"]


def empty_history(gated: bool) -> dict[str, list]:
    return {k: [] for k in FIELDS + (["sparsity"] if gated else [])}


class TrainingHistory(L.Callback):
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "training_history.json"
        self.history: dict[str, list] = {}
        self._t0 = time.perf_counter()
        self._val_loss: float | None = None
        self._trained = False  # a batch ran in this epoch since (re)start

    def on_train_start(self, trainer, pl_module) -> None:
        gated = pl_module.adapted.gated
        self.history = empty_history(gated)
        if trainer.global_step and self.path.exists():  # resumed: keep finished epochs
            old = json.loads(self.path.read_text())
            keep = [i for i, st in enumerate(old.get("step", [])) if st <= trainer.global_step]
            self.history = {k: [old[k][i] for i in keep] if k in old else [] for k in self.history}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()
        self._val_loss = None
        self._trained = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._trained = True

    def on_validation_end(self, trainer, pl_module) -> None:  # after the module logged val_loss
        val = trainer.callback_metrics.get("val_loss")
        self._val_loss = None if val is None else float(val)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or not self._trained:
            return  # (an epoch re-entered after resuming from its end checkpoint trains nothing)
        adapted = pl_module.adapted
        row = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "train_loss": sum(pl_module.epoch_losses) / max(1, len(pl_module.epoch_losses)),
            # validation runs at full epoch ends; a run stopped mid-epoch by max_steps gets its
            # final val_loss from the end-of-run evaluation (see ftlab.recipe.run)
            "val_loss": self._val_loss,
            "epoch_time": time.perf_counter() - self._t0,
            "gpu_memory_mb": gpu_memory_mb(),
            "trainable_params": adapted.trainable_params(),
            "effective_params": adapted.effective_params(),
        }
        if adapted.gated:
            row["sparsity"] = adapted.sparsity()
        for k, v in row.items():
            self.history[k].append(v)
        write_json(self.path, self.history)


def fill_final_val_loss(path: Path, val_loss: float) -> None:
    """A run stopped by max_steps mid-epoch had no validation in its last epoch: give that row
    the end-of-run evaluation's val_loss (same split, same token-weighted mean)."""
    if not Path(path).is_file():
        return
    history = json.loads(Path(path).read_text())
    if history.get("val_loss") and history["val_loss"][-1] is None:
        history["val_loss"][-1] = val_loss
        write_json(path, history)
