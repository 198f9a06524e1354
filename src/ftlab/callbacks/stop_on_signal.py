"""The fit's side of :mod:`ftlab.core.signals`: a signal that arrives during training waits for the end
of the current optimiser step, which is checkpointed before the job ends (``resume=auto`` then
continues exactly)."""

from __future__ import annotations

import signal

import lightning as L

from ftlab.callbacks.checkpoints import PeriodicCheckpoint
from ftlab.core.signals import Interrupted, SignalGuard, current_guard


class StopOnSignal(L.Callback):
    """During the fit: a signal is deferred to the end of the step, which is checkpointed first."""

    def __init__(self, checkpoints: PeriodicCheckpoint, guard: SignalGuard | None = None):
        self.checkpoints, self.guard = checkpoints, guard

    def on_train_start(self, trainer, pl_module) -> None:
        """One process: the guard alone handles SIGTERM from here on. Lightning's own handler would
        end the loop with a ``SystemExit`` after the step's callbacks, before any checkpoint, when
        the signal lands between them. With several ranks Lightning's handler stays: it forwards
        the signal to the other ranks and stops all of them at the same step (the step checkpoint
        there would need every rank at its barrier); the last periodic checkpoint then stands."""
        self.guard = self.guard or current_guard()
        if self.guard is None or trainer.world_size > 1:
            self.guard = None
            return
        self.guard.deferring = True
        self.guard.take(signal.SIGTERM)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.guard is None or self.guard.pending is None:
            return
        path = self.checkpoints.save_step(trainer)
        self.guard.deferring = False
        raise Interrupted(self.guard.pending, trainer.global_step, str(path))

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.guard is None:
            return
        self.guard.deferring = False
        if self.guard.pending is not None:  # arrived after the last step: its checkpoints are written
            raise Interrupted(self.guard.pending, trainer.global_step)

    def on_exception(self, trainer, pl_module, exception) -> None:
        if self.guard is not None:
            self.guard.deferring = False
