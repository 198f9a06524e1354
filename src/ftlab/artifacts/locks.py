"""Per-key build locks that work between processes on one machine and across machines that share a
filesystem (NFS, Lustre, GPFS): a lock is a file created with ``O_CREAT | O_EXCL``.

A crashed builder must not block a key forever, and clocks of different nodes disagree, so:

* the holder writes ``{token, pid, host, boot_id, created}`` into the file and a heartbeat thread
  touches it every ``heartbeat_s`` seconds;
* a waiter takes the lock over when the holder is on the same machine and its process is gone,
  or when the waiter has *itself* seen the lock file unchanged for ``stale_s`` seconds of its own
  monotonic clock (no cross-node clock comparison);
* takeover goes through a second ``O_EXCL`` file (``<lock>.break``) and re-checks that the lock is
  still the stale one, so two waiters never both delete a lock and one never deletes a fresh lock.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path


class LockTimeout(TimeoutError):
    """Waited ``timeout`` seconds for a lock that stayed alive."""


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


HOST = socket.gethostname()
BOOT_ID = _boot_id()


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live (non-zombie) process on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped is a zombie: it holds nothing
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@dataclass(frozen=True)
class LockState:
    """What a waiter sees of a lock file: its text and modification time."""

    text: str
    mtime_ns: int

    def holder(self) -> dict:
        try:
            info = json.loads(self.text)
            return info if isinstance(info, dict) else {}
        except ValueError:  # created but not yet written, or written by a crashed process
            return {}


def read_state(path: Path) -> LockState | None:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        return LockState(text, os.stat(path).st_mtime_ns)
    except FileNotFoundError:
        return None


class KeyLock:
    """An exclusive, crash-tolerant lock on one key (a context manager)."""

    def __init__(self, path: Path, *, heartbeat_s: float = 5.0, stale_s: float = 60.0,
                 poll_s: float = 0.05, max_poll_s: float = 1.0):
        if heartbeat_s >= stale_s:
            raise ValueError("heartbeat_s must be shorter than stale_s")
        self.path = Path(path)
        self.heartbeat_s, self.stale_s = heartbeat_s, stale_s
        self.poll_s, self.max_poll_s = poll_s, max_poll_s
        self.token: str | None = None
        self.lost = False  # set when another process took the lock over from us
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self.token is not None

    # -- acquiring ------------------------------------------------------------------------
    def try_acquire(self) -> bool:
        if self.held:
            raise RuntimeError(f"{self.path}: already held by this object")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        info = {"token": token, "pid": os.getpid(), "host": HOST, "boot_id": BOOT_ID, "created": time.time()}
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(info))
        self.token, self.lost = token, False
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"lock-heartbeat-{self.path.name}", daemon=True)
        self._thread.start()
        return True

    def acquire(self, timeout: float | None = None) -> float:
        """Block until the lock is ours; returns the seconds waited. Raises :class:`LockTimeout`."""
        t0 = time.monotonic()
        seen: LockState | None = None
        seen_since = t0
        poll = self.poll_s
        while not self.try_acquire():
            now = time.monotonic()
            state = read_state(self.path)
            if state is None:
                continue  # released between our attempt and the read: try again at once
            if state != seen:
                seen, seen_since = state, now
            if self.holder_dead(state) or now - seen_since >= self.stale_s:
                self._break(state)
                seen = None
                continue
            if timeout is not None and now - t0 >= timeout:
                raise LockTimeout(f"{self.path}: still held after {timeout:.1f}s by {state.holder() or 'unknown'}")
            time.sleep(poll)
            poll = min(poll * 1.5, self.max_poll_s)
        return time.monotonic() - t0

    @staticmethod
    def holder_dead(state: LockState) -> bool:
        """The holder is a process of this machine that no longer runs (a crashed builder)."""
        info = state.holder()
        same_machine = info.get("host") == HOST and info.get("boot_id", "") == BOOT_ID
        return same_machine and isinstance(info.get("pid"), int) and not pid_alive(info["pid"])

    def _break(self, stale: LockState) -> None:
        breaker = self.path.with_name(self.path.name + ".break")
        try:
            os.close(os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            # Another waiter is breaking it. A breaker that crashed in this short window leaves
            # its file behind; it is removed once it is older than the stale limit.
            try:
                if time.time() - breaker.stat().st_mtime > self.stale_s:
                    breaker.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            time.sleep(self.poll_s)
            return
        try:
            if read_state(self.path) == stale:
                self.path.unlink(missing_ok=True)
        finally:
            breaker.unlink(missing_ok=True)

    # -- holding --------------------------------------------------------------------------
    def _ours(self) -> bool:
        state = read_state(self.path)
        return state is not None and state.holder().get("token") == self.token

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if not self._ours():
                self.lost = True
                return
            try:
                os.utime(self.path)
            except FileNotFoundError:
                self.lost = True
                return

    def release(self) -> None:
        if not self.held:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._ours():  # never delete a lock another process took over
            self.path.unlink(missing_ok=True)
        self.token, self._thread = None, None

    def __enter__(self) -> KeyLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
