"""Locks across processes: a key is built once by concurrent jobs; a crashed builder neither leaves
a hit behind nor blocks the key. Every wait here has a timeout, so a broken lock fails, not hangs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftlab.reuse.locks import KeyLock, LockTimeout
from ftlab.reuse.store import ArtifactStore

KEY = "ab" * 32

# A job: wait for the start signal, then get-or-build KEY. The build is slow (longer than the
# stale limit, so only the heartbeat keeps the lock), logs itself, and can stop half-way.
JOB = r"""
import json, os, sys, time
from pathlib import Path
from ftlab.reuse.store import ArtifactStore
root, go, log, mode = sys.argv[1:5]
deadline = time.time() + 30
while not os.path.exists(go):
    if time.time() > deadline:
        sys.exit("no start signal")
    time.sleep(0.005)
store = ArtifactStore(root, heartbeat_s=0.1, stale_s=0.6)
def build(artifact):
    with open(log, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    (artifact / "part1.bin").write_bytes(b"a" * 10000)
    if mode == "hang":
        Path(go + ".building").write_text("1")
        time.sleep(120)
    time.sleep(1.5)
    (artifact / "part2.bin").write_bytes(b"b" * 10000)
res = store.get_or_build(sys.argv[5], build, kind="test", parent=None, config={}, version=1, timeout=60)
print(json.dumps({"hit": res.hit, "waited": res.waited_s, "entry": str(res.entry.root)}))
"""


def job(tmp_path: Path, mode: str = "build") -> subprocess.Popen:
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


def test_two_processes_on_one_missing_key_build_it_once(tmp_path):
    procs = [job(tmp_path), job(tmp_path)]
    time.sleep(0.5)  # both interpreters up and polling
    (tmp_path / "go").write_text("go")
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert builds(tmp_path) == 1
    assert sorted(r["hit"] for r in results) == [False, True]
    waiter = next(r for r in results if r["hit"])
    assert waiter["waited"] > 0.5  # it waited for the build (longer than stale_s: heartbeats kept the lock)
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
    store = ArtifactStore(tmp_path / "cache", heartbeat_s=0.1, stale_s=30)
    assert (tmp_path / "cache" / "locks" / f"{KEY}.lock").exists()  # the dead builder's lock
    assert store.lookup(KEY) is None  # its half-written artifact is not an entry
    t0 = time.monotonic()
    built = []
    res = store.get_or_build(KEY, lambda a: (built.append(1), (a / "ok").write_text("ok")), kind="test",
                             parent=None, config={}, version=1, timeout=20)
    assert res.hit is False and built == [1]
    assert time.monotonic() - t0 < 10  # same machine, dead PID: taken over without waiting stale_s
    assert (res.entry.artifact / "ok").read_text() == "ok" and not (res.entry.artifact / "part1.bin").exists()


def test_lock_of_a_silent_holder_on_another_node_is_taken_over_after_stale_s(tmp_path):
    lock_path = tmp_path / "locks" / "k.lock"
    lock_path.parent.mkdir(parents=True)
    lock_path.write_text(json.dumps({"token": "t", "pid": 1, "host": "some-other-node", "boot_id": "x"}))
    lock = KeyLock(lock_path, heartbeat_s=0.1, stale_s=0.8)
    t0 = time.monotonic()
    waited = lock.acquire(timeout=20)
    try:
        assert 0.7 <= waited < 10 and time.monotonic() - t0 < 10
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
