"""Resumable checkpoints: ``checkpoints/checkpoint-epoch{X}-step{Y}/`` every N steps and
``checkpoints/checkpoint-epoch{X}/`` at each epoch end. Each dir holds Lightning's full state
(``state.ckpt``: weights, optimiser, scheduler, loops, data position) and ``meta.json``; it is
written to a temporary name and renamed, so a crash never leaves a half checkpoint behind."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import lightning as L

STATE_FILE = "state.ckpt"
META_FILE = "meta.json"
_NAME = re.compile(r"^checkpoint-epoch(\d+)(?:-step(\d+))?$")


def find_latest_checkpoint(run_dir: Path) -> Path | None:
    """The complete checkpoint with the highest global step (epoch-end wins a tie)."""
    root = Path(run_dir) / "checkpoints"
    best, best_key = None, None
    for d in root.glob("checkpoint-epoch*") if root.is_dir() else []:
        meta = d / META_FILE
        if not (_NAME.match(d.name) and meta.is_file() and (d / STATE_FILE).is_file()):
            continue
        info = json.loads(meta.read_text())
        key = (info["global_step"], info.get("epoch_end", False))
        if best_key is None or key > best_key:
            best, best_key = d, key
    return best


def checkpoint_step(state_file: Path) -> int:
    """Global step of a checkpoint: from its ``meta.json`` when it has one (no need to load the
    whole state), else from the state itself (memory-mapped; trusted like the fit that loads it)."""
    meta = Path(state_file).parent / META_FILE
    if meta.is_file():
        return int(json.loads(meta.read_text())["global_step"])
    import torch

    return int(torch.load(state_file, map_location="cpu", mmap=True, weights_only=False)["global_step"])


class PeriodicCheckpoint(L.Callback):
    def __init__(self, run_dir: Path, every_n_steps: int | None, at_epoch_end: bool = True,
                 keep: int | None = None):
        self.root = Path(run_dir) / "checkpoints"
        self.every, self.at_epoch_end, self.keep = every_n_steps, at_epoch_end, keep
        self._last_saved_step = -1
        self._trained_this_epoch = False

    def _save(self, trainer, name: str, epoch_end: bool) -> None:
        final = self.root / name
        tmp = self.root / f".tmp-{name}"
        if trainer.is_global_zero:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        trainer.strategy.barrier()
        trainer.save_checkpoint(tmp / STATE_FILE)
        if trainer.is_global_zero:
            meta = {"global_step": trainer.global_step, "epoch": trainer.current_epoch, "epoch_end": epoch_end}
            (tmp / META_FILE).write_text(json.dumps(meta))
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            self._prune()
        trainer.strategy.barrier()

    def _prune(self) -> None:
        if not self.keep:
            return
        dirs = sorted((d for d in self.root.glob("checkpoint-epoch*") if (d / META_FILE).is_file()),
                      key=lambda d: json.loads((d / META_FILE).read_text())["global_step"])
        for d in dirs[:-self.keep]:
            shutil.rmtree(d, ignore_errors=True)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._trained_this_epoch = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._trained_this_epoch = True
        step = trainer.global_step
        if self.every and step and step % self.every == 0 and step != self._last_saved_step:
            self._last_saved_step = step
            self._save(trainer, f"checkpoint-epoch{trainer.current_epoch}-step{step}", epoch_end=False)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Lightning also ends the epoch when max_steps stops training mid-epoch: that is not an
        # epoch end, but the final state still gets a (step) checkpoint so the run is resumable.
        if not self._trained_this_epoch:
            return  # resumed from this epoch's end checkpoint: Lightning re-enters an exhausted epoch
        dm = trainer.datamodule
        complete = dm is None or dm.sampler is None or not dm.sampler.remaining()
        if self.at_epoch_end and complete:
            self._save(trainer, f"checkpoint-epoch{trainer.current_epoch}", epoch_end=True)
        elif self.every and trainer.global_step != self._last_saved_step:
            self._last_saved_step = trainer.global_step
            self._save(trainer, f"checkpoint-epoch{trainer.current_epoch}-step{trainer.global_step}",
                       epoch_end=False)
