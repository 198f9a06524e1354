"""Issue 22, deliverable 4: one run per run dir. The lock is the cache's KeyLock file with the
owner's host and PID; a live owner refuses a second process in one line, a gone owner's lock is
taken over. End to end: two identical runs started into one dir (the second refused, the first's
files equal a single run's), and a ``--multirun`` into a sweep dir in use."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FAST, ROOT, cli
from ftlab.artifacts.locks import BOOT_ID, HOST
from ftlab.core.errors import ConfigError
from ftlab.recipe.runlock import LOCK_NAME, lock_run_dir, release_run_dirs


@pytest.fixture(autouse=True)
def _release():
    yield
    release_run_dirs()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _foreign_lock(run_dir: Path, pid: int, host: str = HOST, age_s: float = 0.0) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    path.write_text(json.dumps({"token": "x", "pid": pid, "host": host, "boot_id": BOOT_ID, "created": 0}))
    if age_s:
        os.utime(path, (time.time() - age_s, time.time() - age_s))
    return path


def test_live_owner_refuses_in_one_line(tmp_path: Path):
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _foreign_lock(tmp_path / "run", parent.pid)
        with pytest.raises(ConfigError) as err:
            lock_run_dir(tmp_path / "run")
        line = str(err.value)
        assert "hydra.run.dir" in line and str(tmp_path / "run") in line and f"pid {parent.pid}" in line
        assert HOST in line and "\n" not in line
    finally:
        parent.kill()
        parent.wait()


def test_gone_owner_is_taken_over(tmp_path: Path):
    path = _foreign_lock(tmp_path / "run", _dead_pid())
    lock_run_dir(tmp_path / "run")
    assert json.loads(path.read_text())["pid"] == os.getpid()
    lock_run_dir(tmp_path / "run")  # re-entrant in its own process (the job after the CLI's lock)
    release_run_dirs()
    assert not path.exists()


def test_a_job_releases_its_own_lock_but_not_the_commands(tmp_path: Path):
    from ftlab.recipe.runlock import job_lock

    with job_lock(tmp_path / "sweep" / "0", "hydra.sweep.dir"):
        assert (tmp_path / "sweep" / "0" / LOCK_NAME).is_file()
    assert not (tmp_path / "sweep" / "0" / LOCK_NAME).exists()  # the next job of the sweep starts clean
    lock_run_dir(tmp_path / "run")
    with job_lock(tmp_path / "run", "hydra.run.dir"):
        pass
    assert (tmp_path / "run" / LOCK_NAME).is_file()  # the command's lock lasts until the process ends


def test_other_host_lock_is_taken_over_only_when_its_heartbeat_stopped(tmp_path: Path):
    _foreign_lock(tmp_path / "fresh", 1, host="node-that-runs-it")
    with pytest.raises(ConfigError):
        lock_run_dir(tmp_path / "fresh")
    _foreign_lock(tmp_path / "stale", 1, host="node-that-crashed", age_s=3600)
    lock_run_dir(tmp_path / "stale")


def test_secondary_ranks_take_no_lock(tmp_path: Path, monkeypatch):
    _foreign_lock(tmp_path / "run", os.getppid())  # rank 0 (alive) holds it
    monkeypatch.setenv("LOCAL_RANK", "1")
    lock_run_dir(tmp_path / "run")


RUN = [*FAST, "train.max_steps=40", "train.log_measurements=false", "eval.enabled=false",
       "train.save_adapter=false", "train.save_merged_model=false"]


@pytest.mark.slow
def test_two_runs_into_one_dir_second_refused_first_equals_single(tmp_path: Path):
    shared = tmp_path / "shared"
    first = subprocess.Popen([sys.executable, "-m", "ftlab", *RUN, f"hydra.run.dir={shared}"], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (shared / LOCK_NAME).exists():
            assert first.poll() is None and time.monotonic() < deadline, "first run never took its lock"
            time.sleep(0.1)
        first.send_signal(signal.SIGSTOP)  # keep it mid-run (alive) while the second one starts
        try:
            second = cli("ftlab", *RUN, f"hydra.run.dir={shared}")
        finally:
            first.send_signal(signal.SIGCONT)
    finally:
        out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    lines = [ln for ln in second.stderr.splitlines() if ln.strip()]
    assert second.returncode == 2 and len(lines) == 1, second.stderr
    assert lines[0].startswith("ftlab: error: hydra.run.dir=") and f"pid {first.pid}" in lines[0]
    assert "Traceback" not in second.stderr + second.stdout
    assert not (shared / LOCK_NAME).exists()  # released at the end
    single = tmp_path / "single"
    assert cli("ftlab", *RUN, f"hydra.run.dir={single}").returncode == 0
    assert (shared / "loss_log.csv").read_text() == (single / "loss_log.csv").read_text()
    assert sorted(p.name for p in (shared / "checkpoints").iterdir()) == \
        sorted(p.name for p in (single / "checkpoints").iterdir())


@pytest.mark.slow
def test_multirun_into_a_sweep_dir_in_use_is_refused(tmp_path: Path, refused_in_process):
    """python -m ftlab's main in this process (the lock is checked before Hydra starts; the test above
    runs a refused second run through a real interpreter)."""
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        _foreign_lock(tmp_path / "sweep", owner.pid)
        code, _, stderr = refused_in_process("--multirun", *FAST, "seed=1,2", f"hydra.sweep.dir={tmp_path}/sweep")
    finally:
        owner.kill()
        owner.wait()
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "hydra.sweep.dir=" in lines[0], stderr
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == [LOCK_NAME]  # nothing written
