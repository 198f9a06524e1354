"""``--multirun hydra/launcher=slurm`` against a real SLURM cluster (scripts/slurm/start_local_cluster.sh):
a 2-job sweep, a job killed and requeued mid-run (``scontrol requeue``) and a preempted one
(submitit's USR2) resuming from their checkpoints to the weights of an uninterrupted job, a failing
job reported without hanging, a 2-task DDP job, and an unknown partition refused in seconds.

The cluster is found through ``SLURM_CONF`` or ``$FTLAB_SLURM_DIR`` (default ``$TMPDIR/ftlab-slurm``).
Without one these tests skip, unless ``FTLAB_REQUIRE_SLURM=1`` (CI), where they fail.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TINY = ["train.batch_size=4", "task.num_examples=200", "task.eval_examples=16", "eval.generate=false",
        "train.save_merged_model=false", "train.log_every_n_steps=2", "train.log_measurements=false",
        "model.config.hidden_size=64", "model.config.intermediate_size=128"]


WIDE = ["model.config.hidden_size=256", "model.config.intermediate_size=1024", "model.config.num_hidden_layers=4",
        "model.config.num_attention_heads=8", "model.config.num_key_value_heads=4"]


def _cluster_env() -> dict[str, str]:
    env = dict(os.environ)
    if not env.get("SLURM_CONF"):
        base = Path(env.get("FTLAB_SLURM_DIR") or Path(env.get("TMPDIR", "/tmp")) / "ftlab-slurm")
        env["SLURM_CONF"] = str(base / "etc" / "slurm.conf")
        env["PATH"] = f"{base / 'bin'}{os.pathsep}{env['PATH']}"  # the sacct stand-in submitit polls
    return env


@pytest.fixture(scope="module")
def slurm() -> dict[str, str]:
    env = _cluster_env()
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P %a"], env=env, capture_output=True, text=True, timeout=15)
        ok, why = proc.returncode == 0 and "up" in proc.stdout, (proc.stderr or proc.stdout).strip()
    except (OSError, subprocess.TimeoutExpired) as err:
        ok, why = False, str(err)
    if not ok:
        msg = f"no reachable SLURM cluster (SLURM_CONF={env['SLURM_CONF']}): {why or 'no partition up'}"
        if os.environ.get("FTLAB_REQUIRE_SLURM") == "1":
            pytest.fail(msg + " -- start it with scripts/slurm/start_local_cluster.sh")
        pytest.skip(msg)
    return env


def launcher_args() -> list[str]:
    """The cluster's partition when the local cluster was started with another name than the preset's."""
    part = os.environ.get("FTLAB_SLURM_PARTITION")
    return ["hydra/launcher=slurm", *([f"hydra.launcher.partition={part}"] if part else [])]


def ftlab(env: dict, *args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ftlab", "--multirun", *launcher_args(), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def slurm_cmd(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=30)


def metrics(job: Path) -> dict:
    return json.loads((job / "metrics.json").read_text())


def loss_steps(job: Path) -> list[int]:
    with open(job / "loss_log.csv", newline="") as fh:
        return [int(r["step"]) for r in csv.DictReader(fh)]


def job_ids(sweep: Path) -> dict[int, str]:
    """``{job num: SLURM job id}`` from submitit's folders (``<array>_<index>``, or ``<id>`` for a
    sweep of one job, which submitit submits without an array)."""
    arrays, single = {}, {}
    for d in (sweep / ".submitit").iterdir() if (sweep / ".submitit").is_dir() else []:
        array, _, task = d.name.partition("_")
        if d.is_dir() and array.isdigit() and task.isdigit():
            arrays[int(task)] = d.name
        elif d.is_dir() and array.isdigit() and not task:
            single[0] = d.name  # also the array's own folder (submission pickles) when there is one
    return arrays or single


def test_two_job_sweep_completes_with_both_outputs(slurm, tmp_path: Path):
    sweep = tmp_path / "sweep"
    proc = ftlab(slurm, *TINY, "train.max_steps=6", "seed=1,2", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(job_ids(sweep)) == 2  # two array tasks of one SLURM array job
    for num, seed in ((0, 1), (1, 2)):
        job = sweep / str(num)
        assert metrics(job)["train_steps"] == 6 and loss_steps(job) == [2, 4, 6]
        assert json.loads((job / "training_history.json").read_text())["epoch"]
        assert f"seed: {seed}" in (job / "config.yaml").read_text()


def _wait(predicate, timeout: float, what: str, poll: float = 0.5):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _release(env: dict, job_id: str) -> None:
    """A requeued job waits ~2 min (SLURM's BeginTime); make it eligible now, as an admin would."""
    def eligible():
        slurm_cmd(env, "scontrol", "update", f"jobid={job_id}", "StartTime=now")
        state = slurm_cmd(env, "squeue", "-h", "-j", job_id, "-o", "%T %r").stdout.strip()
        return state.startswith("RUNNING") or (state.startswith("PENDING") and "BeginTime" not in state) or not state
    _wait(eligible, 90, f"requeued job {job_id} to be released", poll=1.0)


def test_requeued_and_preempted_jobs_resume_to_the_uninterrupted_weights(slurm, tmp_path: Path):
    from safetensors.torch import load_file

    sweep = tmp_path / "sweep"
    # A model wide enough that a job trains for ~10 s after its first checkpoint on an idle 2-core
    # machine: the interruption must land mid-run, not after the job finished.
    args = [*(o for o in TINY if not o.startswith("model.")), *WIDE, "train.max_steps=200",
            "train.save_every_n_steps=20", "train.keep_checkpoints=2", "+tags.copy=requeued,preempted,reference",
            f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen([sys.executable, "-m", "ftlab", "--multirun", *launcher_args(), *args], cwd=ROOT,
                            env=slurm, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ids = _wait(lambda: len(job_ids(sweep)) == 3 and job_ids(sweep), 120, "3 submitted jobs")
        first_ckpt = lambda n: any((sweep / str(n) / "checkpoints").glob("checkpoint-epoch*-step*/meta.json"))  # noqa: E731
        _wait(lambda: first_ckpt(0) and first_ckpt(1), 240, "the first checkpoints of jobs 0 and 1")
        for num in (0, 1):
            assert not (sweep / str(num) / "metrics.json").exists(), f"job {num} finished before it was interrupted"
        # job 0: killed and requeued by SLURM (what an admin or a node failure does);
        # job 1: preempted, i.e. USR2, on which submitit's handler requeues it
        assert slurm_cmd(slurm, "scontrol", "requeue", ids[0]).returncode == 0
        assert slurm_cmd(slurm, "scancel", "--signal=USR2", ids[1]).returncode == 0
        _wait(lambda: "PENDING" in slurm_cmd(slurm, "squeue", "-h", "-j", ids[1], "-o", "%T").stdout, 60,
              "job 1 to be requeued by submitit")
        _release(slurm, ids[0])
        _release(slurm, ids[1])
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
            for job_id in job_ids(sweep).values():  # leave no jobs behind on the cluster
                slurm_cmd(slurm, "scancel", job_id)
    assert proc.returncode == 0, err[-3000:]
    reference = load_file(sweep / "2" / "adapter" / "adapter_model.safetensors")
    assert metrics(sweep / "2")["resumed_from_step"] == 0
    for num in (0, 1):
        m = metrics(sweep / str(num))
        assert m["train_steps"] == 200
        # from a checkpoint, not 0: a periodic one (every 20), or the step checkpoint SLURM's SIGTERM
        # made the job write (issue 22) at whatever step it arrived
        assert 20 <= m["resumed_from_step"] < 200
        weights = load_file(sweep / str(num) / "adapter" / "adapter_model.safetensors")
        assert weights.keys() == reference.keys()
        assert all((weights[k] == reference[k]).all() for k in reference), f"job {num} weights differ"
        # the resumed log has no duplicated rows and equals the uninterrupted one
        assert (sweep / str(num) / "loss_log.csv").read_text() == (sweep / "2" / "loss_log.csv").read_text()


def test_failing_job_is_reported_failed_without_hanging(slurm, tmp_path: Path):
    # passes every check before submission (the preflight catches what it can see from here), but
    # the job dies on the node: its batch script exits before Python starts
    proc = ftlab(slurm, *TINY, "train.max_steps=4", "hydra.launcher.setup=[exit 3]",
                 f"hydra.sweep.dir={tmp_path / 'sweep'}", timeout=300)  # a hang fails by the timeout
    assert proc.returncode != 0
    assert "FAILED" in proc.stderr or "failed" in proc.stderr, proc.stderr[-3000:]


def test_two_task_ddp_job(slurm, tmp_path: Path):
    sweep = tmp_path / "sweep"
    proc = ftlab(slurm, *TINY, "train.max_steps=6", "hardware.devices=2", "seed=5", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (job_id,) = job_ids(sweep).values()
    logs = {p.name: p.read_text() for p in (sweep / ".submitit" / job_id).glob("*_log.err")}
    assert len(logs) == 2  # one log per SLURM task
    # Lightning's rank lines go to the run's log file (the quiet console leaves them out)
    run_log = (sweep / "0" / "__main__.log").read_text()
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in run_log and "GLOBAL_RANK: 1, MEMBER: 2/2" in run_log
    job = sweep / "0"
    assert loss_steps(job) == [2, 4, 6]  # rank 0 alone writes: no duplicated rows
    assert metrics(job)["train_steps"] == 6


def test_unknown_partition_is_refused_in_seconds(slurm, tmp_path: Path):
    proc = ftlab(slurm, "hydra.launcher.partition=no_such_partition", "seed=1,2",
                 f"hydra.sweep.dir={tmp_path / 'sweep'}", timeout=120)
    assert proc.returncode == 2
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("ftlab: error:")]
    assert len(err) == 1 and "hydra.launcher.partition='no_such_partition'" in err[0], proc.stderr
    assert "debug" in err[0] or "one of" in err[0]
    assert not (tmp_path / "sweep").exists()
