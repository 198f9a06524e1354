"""Resumable checkpoints: when to save. A step checkpoint ``checkpoint-epoch{X}-step{Y}`` every N
steps (and at a stop mid-epoch), an epoch checkpoint ``checkpoint-epoch{X}`` at each epoch end,
under ``<run>/checkpoints/``. What a checkpoint holds and how it is written (atomically, the
newest ``keep`` kept) is the checkpoint format's: :mod:`ftlab.training.state`."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from ftlab.training.state import write_checkpoint


class PeriodicCheckpoint(L.Callback):
    def __init__(self, run_dir: Path, every_n_steps: int | None, at_epoch_end: bool = True,
                 keep: int | None = None):
        self.root = Path(run_dir) / "checkpoints"
        self.every, self.at_epoch_end, self.keep = every_n_steps, at_epoch_end, keep
        self._last_saved_step = -1
        self._trained_this_epoch = False

    def _save(self, trainer, name: str, epoch_end: bool) -> Path:
        return write_checkpoint(trainer, self.root, name, keep=self.keep, epoch_end=epoch_end)

    def _step_name(self, trainer) -> str:
        return f"checkpoint-epoch{trainer.current_epoch}-step{trainer.global_step}"

    def save_step(self, trainer) -> Path:
        """A step checkpoint of the current state now (an interrupted run's last one)."""
        if trainer.global_step != self._last_saved_step:
            self._last_saved_step = trainer.global_step
            self._save(trainer, self._step_name(trainer), epoch_end=False)
        return self.root / self._step_name(trainer)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._trained_this_epoch = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._trained_this_epoch = True
        step = trainer.global_step
        if self.every and step and step % self.every == 0 and step != self._last_saved_step:
            self._last_saved_step = step
            self._save(trainer, self._step_name(trainer), epoch_end=False)

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
            self._save(trainer, self._step_name(trainer), epoch_end=False)
