"""One run per run dir: a lock file in the dir, held from before Hydra writes anything until the
process ends.

Two processes writing into one run dir interleave ``loss_log.csv`` rows and checkpoints and both
exit 0. The lock is the reuse cache's :class:`ftlab.artifacts.locks.KeyLock` (``O_EXCL`` file with the
owner's host, PID and boot id, a heartbeat that keeps it fresh), used without waiting: a second
process is refused in one line naming the owner. A lock whose owner is gone (same machine, PID no
longer running; or, from another machine, a heartbeat older than ``STALE_S``) is taken over, so a
killed run never blocks its own ``resume=auto``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from ftlab.artifacts.locks import BOOT_ID, HOST, KeyLock, read_state
from ftlab.core.errors import ConfigError

LOCK_NAME = ".ftlab-run.lock"
HEARTBEAT_S = 5.0
STALE_S = 60.0
#: environment variables that name a process's rank: ranks > 0 of one run share rank 0's dir
_RANK_VARS = ("RANK", "SLURM_PROCID", "LOCAL_RANK")

_held: dict[Path, KeyLock] = {}


def is_secondary_rank() -> bool:
    """A DDP rank > 0 re-executes the command line (Lightning's launcher, srun): it writes into the
    run dir its rank 0 holds, so it takes no lock of its own."""
    for var in _RANK_VARS:
        value = os.environ.get(var)
        if value is not None and value.strip().isdigit() and int(value) > 0:
            return True
    return False


def _stale(lock: KeyLock) -> bool:
    state = read_state(lock.path)
    if state is None:
        return True
    owner = state.holder()
    if owner.get("host") == HOST and owner.get("boot_id", "") == BOOT_ID:
        return lock.holder_dead(state)  # this machine: the PID answers (a paused run still owns it)
    return time.time() - state.mtime_ns / 1e9 > STALE_S  # another machine: its heartbeat stopped


def lock_run_dir(run_dir: str | Path, key: str = "hydra.run.dir") -> Path:
    """Hold the lock of ``run_dir`` (created if missing) for this process; re-entrant within it.
    Raises :class:`ConfigError` (one line) when a live process holds it."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _held or is_secondary_rank():
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = KeyLock(run_dir / LOCK_NAME, heartbeat_s=HEARTBEAT_S, stale_s=STALE_S)
    for _ in range(3):  # a takeover can race with another starter: retry a few times
        if lock.try_acquire():
            _held[run_dir] = lock
            return run_dir
        state = read_state(lock.path)
        if state is not None and not _stale(lock):
            owner = state.holder()
            raise ConfigError(key, str(run_dir), f"a run dir no other run is writing into; in use by pid "
                              f"{owner.get('pid', '?')} on host {owner.get('host', '?')} (lock {lock.path.name}); "
                              "wait for it to end or choose another dir")
        if state is not None:
            lock._break(state)
    raise ConfigError(key, str(run_dir), "a run dir whose lock can be taken (another run keeps taking it)")


@contextlib.contextmanager
def job_lock(run_dir: str | Path, key: str) -> Iterator[None]:
    """Hold ``run_dir``'s lock for one job of this process; released at the job's end unless it was
    held already (the command's own run dir, locked before Hydra started)."""
    held_before = Path(run_dir).resolve() in _held
    path = lock_run_dir(run_dir, key)
    try:
        yield
    finally:
        if not held_before and path in _held:
            _held.pop(path).release()


def release_run_dirs() -> None:
    """Release every run-dir lock this process holds (at its end, also after a signal)."""
    for run_dir in list(_held):
        _held.pop(run_dir).release()


def is_lock_file(path: Path) -> bool:
    return path.name in (LOCK_NAME, LOCK_NAME + ".break")
