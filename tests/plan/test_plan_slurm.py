"""``python -m ftlab.plan ... emit=slurm``: per-run dirs with composed config + sbatch, submit_all.sh."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import ROOT, cli
from ftlab.plan.__main__ import main as plan_main
from ftlab.plan.options import SlurmOptions
from ftlab.plan.slurm import fmt_time, time_limit_min
from ftlab.preflight.compose import compose_run

TINY = ["task.num_examples=60", "task.eval_examples=4", "train.max_steps=3", "train.batch_size=4",
        "train.log_every_n_steps=1", "train.save_merged_model=false", "train.save_adapter=false",
        "eval.generate=false", "task.max_length=32"]


def test_time_limit_from_estimate():
    class Run:
        seconds = 600.0
    s = SlurmOptions(time_factor=2.0, min_time_min=15)
    assert time_limit_min(Run, s) == 20
    Run.seconds = 60.0
    assert time_limit_min(Run, s) == 15
    Run.seconds = None
    assert time_limit_min(Run, s) == s.default_time_min
    assert time_limit_min(Run, SlurmOptions(time_min=7)) == 7
    assert fmt_time(20) == "00:20:00" and fmt_time(24 * 60 + 61) == "1-01:01:00"


def test_emit_slurm_writes_run_dirs_scripts_and_submit_all(tmp_path):
    out = tmp_path / "plan"
    proc = cli("ftlab.plan", *TINY, "adapter.r=2,4", "hardware.devices=1", "emit=slurm", f"plan.dir={out}",
                    "plan.controls=true", "plan.slurm.partition=debug", "plan.slurm.cpus_per_task=1",
                    "plan.slurm.setup=[\"export FOO=1\"]", "plan.slurm.extra=[\"--constraint=x\"]",
                    f"plan.prior_dirs=[{tmp_path}/none]")
    assert proc.returncode == 0, proc.stderr
    names = ["tiny_llama-lora-r2", "tiny_llama-lora-r4", "tiny_llama-control"]
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(names)
    plan = json.loads((out / "plan.json").read_text())
    for entry in plan["runs"]:
        d = out / "runs" / entry["name"]
        # the composed config is exactly what the job will compose (its overrides + resume=auto)
        want = OmegaConf.to_yaml(compose_run([*entry["overrides"], "resume=auto"]), resolve=True)
        assert (d / "config.yaml").read_text() == want
        script = (d / "job.sbatch").read_text()
        assert entry["sbatch"] == str(d.resolve() / "job.sbatch")
        # no prior run: the default limit; the control trains nothing: the minimum
        limit = "00:15:00" if entry["control"] else "04:00:00"
        for line in (f"#SBATCH --job-name={entry['name']}", "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1",
                     "#SBATCH --cpus-per-task=1", "#SBATCH --partition=debug", f"#SBATCH --time={limit}",
                     "#SBATCH --constraint=x", f"#SBATCH --chdir={ROOT}", "export FOO=1"):
            assert line in script.splitlines(), line
        assert f"hydra.run.dir={d.resolve()}" in script and "resume=auto" in script
        assert subprocess.run(["bash", "-n", str(d / "job.sbatch")]).returncode == 0
    dry = subprocess.run(["bash", str(out / "submit_all.sh")], capture_output=True, text=True,
                         env={**os.environ, "DRY_RUN": "1"})
    assert dry.returncode == 0
    assert dry.stdout.split("\n")[:3] == [f"sbatch runs/{n}/job.sbatch" for n in names]
    # finished runs are skipped on a re-submit
    (out / "runs" / names[0] / "metrics.json").write_text("{}")
    again = subprocess.run(["bash", str(out / "submit_all.sh")], capture_output=True, text=True,
                           env={**os.environ, "DRY_RUN": "1"})
    assert f"skip runs/{names[0]} (finished)" in again.stdout
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_bad_emit_writes_nothing(tmp_path, capsys):
    # python -m ftlab.plan's main in this process (tests/plan/test_plan.py runs a refusal through a real one)
    code = plan_main([*TINY, "emit=pbs", f"plan.dir={tmp_path}/plan"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == "ftlab: error: emit='pbs' is invalid: one of ['slurm'] (or leave it out)"
    assert not (tmp_path / "plan").exists()
    # a job the run's own preflight would refuse on the cluster is refused here, before any file
    code = plan_main([*TINY, "hardware=cpu,cerebras", "emit=slurm", f"plan.dir={tmp_path}/plan"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("ftlab: error: hardware='cerebras' is invalid")
    assert "hydra/launcher=cerebras" in err and not (tmp_path / "plan").exists()
    assert not list(tmp_path.iterdir())


def _local_cluster_env() -> tuple[dict | None, str]:
    """The environment that reaches the local cluster (as tests/launchers/test_slurm_cluster.py finds it:
    ``SLURM_CONF`` or ``$FTLAB_SLURM_DIR``, default ``$TMPDIR/ftlab-slurm``), or None and why not."""
    env = dict(os.environ)
    if not env.get("SLURM_CONF"):
        base = Path(env.get("FTLAB_SLURM_DIR") or Path(env.get("TMPDIR", "/tmp")) / "ftlab-slurm")
        env["SLURM_CONF"] = str(base / "etc" / "slurm.conf")
        env["PATH"] = f"{base / 'bin'}{os.pathsep}{env['PATH']}"
    if shutil.which("sbatch", path=env["PATH"]) is None:
        return None, "sbatch not installed"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P %a"], env=env, capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, str(err)
    if proc.returncode != 0 or "up" not in proc.stdout:
        return None, (proc.stderr or proc.stdout).strip() or "no partition up"
    return env, ""


@pytest.mark.slurm
@pytest.mark.slow
def test_submit_all_runs_on_the_local_cluster(tmp_path):
    env, why = _local_cluster_env()
    if env is None:
        msg = f"no reachable SLURM cluster ({why}); start it with scripts/slurm/start_local_cluster.sh"
        if os.environ.get("FTLAB_REQUIRE_SLURM") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    partition = os.environ.get("FTLAB_SLURM_PARTITION", "debug")
    out = tmp_path / "plan"
    proc = cli("ftlab.plan", *TINY, "emit=slurm", f"plan.dir={out}", f"plan.slurm.partition={partition}",
                    "plan.slurm.cpus_per_task=1", f"plan.slurm.python={sys.executable}", env=env)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = list((out / "runs").iterdir())
    planned_cfg = (run_dir / "config.yaml").read_text()
    sub = subprocess.run(["bash", str(out / "submit_all.sh")], capture_output=True, text=True, env=env, timeout=60)
    assert sub.returncode == 0, sub.stderr
    deadline = time.time() + 400
    while time.time() < deadline and not (run_dir / "metrics.json").exists():
        time.sleep(3)
    logs = "".join(p.read_text() for p in run_dir.glob("slurm-*.out"))
    assert (run_dir / "metrics.json").exists(), logs[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["train_steps"] == 3
    assert (run_dir / "config.yaml").read_text() == planned_cfg  # the job ran the planned config
