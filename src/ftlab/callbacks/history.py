"""``training_history.json``: per-epoch lists, rewritten atomically at every epoch end."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L

from ftlab.training.module import gpu_memory_mb

FIELDS = ["epoch", "train_loss", "val_loss", "epoch_time", "gpu_memory_mb", "trainable_params",
          "effective_params"]


def write_json(path: Path, data: dict) -> None:
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def empty_history(gated: bool) -> dict[str, list]:
    return {k: [] for k in FIELDS + (["sparsity"] if gated else [])}


class TrainingHistory(L.Callback):
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "training_history.json"
        self.history: dict[str, list] = {}
        self._t0 = time.perf_counter()

    def on_train_start(self, trainer, pl_module) -> None:
        gated = pl_module.adapted.gated
        self.history = empty_history(gated)
        if trainer.global_step and self.path.exists():  # resumed: keep finished epochs
            old = json.loads(self.path.read_text())
            keep = [i for i, e in enumerate(old.get("epoch", [])) if e < trainer.current_epoch]
            self.history = {k: [old[k][i] for i in keep] if k in old else [] for k in self.history}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()
        pl_module.epoch_losses = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        adapted = pl_module.adapted
        val = trainer.callback_metrics.get("val_loss")
        row = {
            "epoch": trainer.current_epoch,
            "train_loss": sum(pl_module.epoch_losses) / max(1, len(pl_module.epoch_losses)),
            "val_loss": None if val is None else float(val),
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
