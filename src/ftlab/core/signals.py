"""SIGTERM and SIGINT: save what a resume needs, then exit with the conventional status 128 + signal.

A scheduler or a shell script reads a run's exit status; Lightning turns SIGTERM into a clean
``SystemExit`` (status 0) and Ctrl-C into status 1, so a half-trained run looked finished. Here a
signal that arrives during training is deferred to the end of the current optimiser step: the run's
:class:`ftlab.callbacks.PeriodicCheckpoint` writes a step checkpoint
(:class:`ftlab.callbacks.stop_on_signal.StopOnSignal`) (``resume=auto`` continues
from it exactly), then :class:`Interrupted` ends the job. A signal outside training (loading,
evaluation, export) ends the job at once: there is nothing to save that the run dir does not
already hold. A handler that was installed before (submitit's, in a SLURM job) is still called,
so the SLURM launcher's requeue works as documented in the README.
"""

from __future__ import annotations

import signal
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(Exception):  # noqa: N818 - the job was interrupted; not an error of the run
    """A signal ended the job; ``status`` is the exit status (128 + signal number)."""

    def __init__(self, signum: int, step: int | None = None, checkpoint: str | None = None):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.status = 128 + signum
        where = f" at step {step}" if step is not None else ""
        saved = f"; saved {checkpoint}, continue with resume=auto" if checkpoint else ""
        super().__init__(f"stopped by {signal.Signals(signum).name}{where}{saved}")


class SignalGuard:
    """Installs the job's SIGTERM/SIGINT handlers (a context manager; restores the previous ones)."""

    def __init__(self) -> None:
        self.deferring = False  # True while training: the signal waits for the step's end
        self.pending: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        prev = self._previous.get(signum)
        if callable(prev) and prev is not signal.default_int_handler:
            prev(signum, frame)  # e.g. submitit's SLURM handlers
        if self.deferring:
            self.pending = signum
        else:
            raise Interrupted(signum)

    def take(self, signum: int) -> None:
        """Handle ``signum`` alone again (a library installed its own handler on top of ours)."""
        if signum in self._previous:
            signal.signal(signum, self._handle)

    def __enter__(self) -> SignalGuard:
        for s in SIGNALS:
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, prev in self._previous.items():
            signal.signal(s, prev if prev is not None else signal.SIG_DFL)
        self._previous.clear()


#: the guard of the running job (``None`` outside ``python -m ftlab``, e.g. in-process tests)
_guard: SignalGuard | None = None


def job_guard() -> SignalGuard:
    """The guard ``python -m ftlab`` installs for a job (set as the current one)."""
    global _guard
    _guard = SignalGuard()
    return _guard


def current_guard() -> SignalGuard | None:
    return _guard
