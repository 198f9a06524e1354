"""Resumable checkpoints: ``checkpoints/checkpoint-epoch{X}-step{Y}/`` every N steps and
``checkpoints/checkpoint-epoch{X}/`` at each epoch end. Each dir holds ``state.ckpt`` (the
trainable-only state of :mod:`ftlab.training.state`: trainable tensors, optimiser, scheduler,
loops, data position, RNG) and ``meta.json`` (step, the state's size and its record: format,
foundation keys, trainable shapes), so a resume can check a checkpoint without loading it. A dir
is written to a temporary name and renamed, so a crash never leaves a half checkpoint behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import lightning as L

from ftlab.core.writefail import write_failure
from ftlab.training.state import META_FILE, STATE_FILE, STATE_KEY, state_info


def save_state(trainer: L.Trainer, path: Path) -> dict[str, Any]:
    """Write the trainer's state to ``path``; returns the ``meta.json`` entries describing it
    (its size, so a truncated copy is recognised, and the record of :mod:`ftlab.training.state`)."""
    try:
        trainer.save_checkpoint(path, weights_only=False)  # weights_only=False: optimiser etc. included
    except (OSError, RuntimeError) as err:
        failure = write_failure(err, path)
        if failure is None:
            raise
        raise failure from err
    module = trainer.lightning_module
    meta: dict[str, Any] = {STATE_KEY: state_info(module, getattr(module, "foundation", None))}
    # rank 0 wrote it; another rank must not look: rank 0 may be renaming the directory already
    # (a rank that saw the file and then stat-ed it after the rename crashed the run at its barrier)
    if trainer.is_global_zero and Path(path).is_file():
        meta["state_bytes"] = Path(path).stat().st_size
    return meta


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
        try:
            if trainer.is_global_zero:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
            trainer.strategy.barrier()
            state_meta = save_state(trainer, tmp / STATE_FILE)
            if trainer.is_global_zero:
                meta = {"global_step": trainer.global_step, "epoch": trainer.current_epoch, "epoch_end": epoch_end,
                        **state_meta}
                (tmp / META_FILE).write_text(json.dumps(meta))
        except BaseException as err:  # a full disk mid-write: the half checkpoint goes, complete ones stay
            shutil.rmtree(tmp, ignore_errors=True)
            failure = write_failure(err, tmp / META_FILE)
            if failure is not None and failure is not err:
                raise failure from err
            raise
        if trainer.is_global_zero:
            if final.exists():  # re-saved under the same name: the complete old one goes only now
                old = self.root / f".old-{name}"
                final.rename(old)
                tmp.rename(final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(final)
            self._prune()
        trainer.strategy.barrier()

    def save_step(self, trainer) -> Path:
        """A step checkpoint of the current state now (an interrupted run's last one)."""
        name = f"checkpoint-epoch{trainer.current_epoch}-step{trainer.global_step}"
        if trainer.global_step != self._last_saved_step:
            self._last_saved_step = trainer.global_step
            self._save(trainer, name, epoch_end=False)
        return self.root / name

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
