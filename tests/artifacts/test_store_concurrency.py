"""Locks across processes: a key is built once by concurrent jobs; a crashed builder neither leaves
a hit behind nor blocks the key. Assertions are on counts and events (builds, lookups, who holds a
lock), never on durations; every wait has a timeout, so a broken lock fails, not hangs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftlab.artifacts import locks
from ftlab.artifacts.locks import KeyLock, LockTimeout, read_state
from ftlab.artifacts.store import ArtifactStore

KEY = "ab" * 32

# A job: announce itself, wait for the start signal, then get-or-build KEY. Every lookup of the
# store is logged as "<pid> hit|miss" (the events the tests assert on). The build is slow (longer
# than the stale limit, so only the heartbeat keeps the lock), logs itself, in "contend" mode holds
# the lock until the other job has looked the key up, and in "hang" mode stops half-way.
JOB = r"""
import json, os, sys, time
from pathlib import Path
from ftlab.artifacts.store import ArtifactStore
root, go, log, mode, key = sys.argv[1:6]
lookups = Path(log).with_name("lookups.log")
_lookup = ArtifactStore.lookup
def lookup(self, k):
    entry = _lookup(self, k)
    with open(lookups, "a") as fh:
        fh.write(f"{os.getpid()} {'hit' if entry else 'miss'}\n")
    return entry
ArtifactStore.lookup = lookup
def wait(ready, what):
    deadline = time.monotonic() + 60
    while not ready():
        if time.monotonic() > deadline:
            sys.exit(f"no {what} within 60 s")
        time.sleep(0.005)
def other_job_looked():
    lines = lookups.read_text().splitlines() if lookups.exists() else []
    return any(line.split()[0] != str(os.getpid()) for line in lines)
Path(f"{go}.ready.{os.getpid()}").write_text("1")
wait(lambda: os.path.exists(go), "start signal")
store = ArtifactStore(root, heartbeat_s=0.1, stale_s=0.6)
def build(artifact):
    with open(log, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    (artifact / "part1.bin").write_bytes(b"a" * 10000)
    if mode == "hang":
        Path(go + ".building").write_text("1")
        time.sleep(120)
    if mode == "contend":
        wait(other_job_looked, "lookup by the other job")
    time.sleep(1.5)
    (artifact / "part2.bin").write_bytes(b"b" * 10000)
res = store.get_or_build(key, build, kind="test", parent=None, config={}, version=1, timeout=60)
print(json.dumps({"pid": os.getpid(), "hit": res.hit, "entry": str(res.entry.root)}))
"""


def job(tmp_path: Path, mode: str = "contend") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", JOB, str(tmp_path / "cache"), str(tmp_path / "go"),
                             str(tmp_path / "builds.log"), mode, KEY], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for(path: Path, timeout: float) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"{path} did not appear within {timeout}s"
        time.sleep(0.01)


def builds(tmp_path: Path) -> int:
    log = tmp_path / "builds.log"
    return len(log.read_text().split()) if log.exists() else 0


def lookups(tmp_path: Path) -> dict[int, list[str]]:
    """Each job's lookups of KEY, in order: ``{pid: ["miss", "hit", ...]}``."""
    out: dict[int, list[str]] = {}
    for line in (tmp_path / "lookups.log").read_text().splitlines():
        pid, result = line.split()
        out.setdefault(int(pid), []).append(result)
    return out


def test_two_processes_on_one_missing_key_build_it_once(tmp_path):
    procs = [job(tmp_path), job(tmp_path)]
    for p in procs:  # both interpreters up (an event, not a guessed delay)
        wait_for(tmp_path / f"go.ready.{p.pid}", 60)
    (tmp_path / "go").write_text("go")
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert builds(tmp_path) == 1
    assert sorted(r["hit"] for r in results) == [False, True]
    builder = next(r["pid"] for r in results if not r["hit"])
    waiter = next(r["pid"] for r in results if r["hit"])
    # The waiter missed while the builder held the lock (the build waits for that lookup), queued on
    # the lock through a build longer than stale_s without taking it over (heartbeats kept it: a
    # takeover would have built a second time), and hit under the lock once it was released.
    assert lookups(tmp_path) == {builder: ["miss", "miss"], waiter: ["miss", "hit"]}
    assert results[0]["entry"] == results[1]["entry"]
    store = ArtifactStore(tmp_path / "cache")
    entry = store.lookup(KEY)
    assert entry is not None and (entry.artifact / "part2.bin").stat().st_size == 10000


def test_builder_killed_mid_write_leaves_no_hit_and_the_next_job_rebuilds(tmp_path):
    p = job(tmp_path, mode="hang")
    (tmp_path / "go").write_text("go")
    try:
        wait_for(tmp_path / "go.building", 30)
    finally:
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=30)
    # stale_s far beyond the timeout: a takeover can only come from seeing that the holder is dead
    store = ArtifactStore(tmp_path / "cache", heartbeat_s=0.1, stale_s=3600)
    lock_path = tmp_path / "cache" / "locks" / f"{KEY}.lock"
    dead = read_state(lock_path)  # the dead builder's lock
    assert dead is not None and dead.holder()["pid"] == p.pid and KeyLock.holder_dead(dead)
    assert store.lookup(KEY) is None  # its half-written artifact is not an entry
    built = []
    res = store.get_or_build(KEY, lambda a: (built.append(1), (a / "ok").write_text("ok")), kind="test",
                             parent=None, config={}, version=1, timeout=20)  # else: LockTimeout
    assert res.hit is False and built == [1]
    assert (res.entry.artifact / "ok").read_text() == "ok" and not (res.entry.artifact / "part1.bin").exists()


class FakeClock:
    """The waiter's clock (``ftlab.artifacts.locks`` reads ``time.monotonic`` and sleeps with
    ``time.sleep``): sleeping advances it at once, so waits are counted, not waited."""

    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    time = staticmethod(time.time)


def test_lock_of_a_silent_holder_on_another_node_is_taken_over_after_stale_s(tmp_path, monkeypatch):
    lock_path = tmp_path / "locks" / "k.lock"
    lock_path.parent.mkdir(parents=True)
    foreign = json.dumps({"token": "t", "pid": 1, "host": "some-other-node", "boot_id": "x"})
    lock_path.write_text(foreign)
    assert not KeyLock.holder_dead(read_state(lock_path))  # another node's PID 1 is never judged dead
    clock = FakeClock()
    monkeypatch.setattr(locks, "time", clock)
    with pytest.raises(LockTimeout):  # before stale_s of the waiter's own clock: not taken over
        KeyLock(lock_path, heartbeat_s=0.1, stale_s=0.8).acquire(timeout=0.5)
    assert lock_path.read_text() == foreign
    clock.now, clock.sleeps = 0.0, []
    lock = KeyLock(lock_path, heartbeat_s=0.1, stale_s=0.8)
    waited = lock.acquire(timeout=20)
    try:
        # taken over at the first poll after the file had stayed unchanged for stale_s, not before
        assert waited == clock.now and sum(clock.sleeps[:-1]) < 0.8 <= clock.now
        assert json.loads(lock_path.read_text())["pid"] == os.getpid()
    finally:
        lock.release()
    assert not lock_path.exists()


def test_a_live_lock_times_out_and_release_never_deletes_a_foreign_lock(tmp_path):
    path = tmp_path / "k.lock"
    holder = KeyLock(path, heartbeat_s=0.05, stale_s=0.5)
    assert holder.try_acquire()
    try:
        with pytest.raises(LockTimeout):
            KeyLock(path, heartbeat_s=0.05, stale_s=0.5).acquire(timeout=1.0)  # > stale_s: heartbeats count
    finally:
        holder.release()
    other = KeyLock(path, heartbeat_s=0.05, stale_s=0.5)
    assert other.try_acquire()
    holder.token = "not-ours"  # a stale handle releasing after a takeover
    holder.release()
    assert path.exists()
    other.release()
    assert not path.exists()
