"""SLURM checks that need no cluster: resume-on-requeue, the launcher/hardware consistency checks
at composition, and a clear error within seconds when the cluster cannot be reached."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import cli, run_tiny
from ftlab.core.errors import ConfigError, FtlabError
from ftlab.launchers.slurm import check_cluster, restart_count, resume_setting
from ftlab.preflight.compose import compose_config
from ftlab.preflight.validate import validate_config


def test_requeued_job_resumes_automatically():
    assert restart_count({}) == 0 and restart_count({"SLURM_RESTART_COUNT": "2"}) == 2
    assert resume_setting(None, {"SLURM_RESTART_COUNT": "1"}) == "auto"
    assert resume_setting(None, {"SLURM_RESTART_COUNT": "0"}) is None
    assert resume_setting(None, {}) is None
    assert resume_setting("/ckpt", {"SLURM_RESTART_COUNT": "1"}) == "/ckpt"  # an explicit choice wins


@pytest.mark.slow
def test_restart_count_makes_run_continue_from_newest_checkpoint(tmp_path: Path, monkeypatch):
    common = ["train.save_every_n_steps=2", "train.log_measurements=false", "eval.enabled=false",
              "train.save_merged_model=false", "schedule=constant", "train.batch_size=4",
              "model.config.hidden_size=64", "model.config.intermediate_size=128"]
    # "preempted" after 4 steps: the job dir holds checkpoints at 2 and 4 (aligned with the log rows)
    run_tiny(tmp_path / "job", *common, "train.max_steps=4")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    run_tiny(tmp_path / "job", *common, "train.max_steps=6")  # the requeued job, resume=null
    monkeypatch.delenv("SLURM_RESTART_COUNT")
    run_tiny(tmp_path / "ref", *common, "train.max_steps=6")  # never interrupted
    resumed = json.loads((tmp_path / "job" / "metrics.json").read_text())
    assert resumed["resumed_from_step"] == 4 and resumed["train_steps"] == 6
    assert (tmp_path / "job" / "loss_log.csv").read_text() == (tmp_path / "ref" / "loss_log.csv").read_text()
    from safetensors.torch import load_file

    a = load_file(tmp_path / "job" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "ref" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_tasks_per_node_must_match_devices_at_composition():
    cfg = compose_config(["hydra/launcher=slurm", "hardware.devices=2"], with_hydra=True)
    assert cfg.hydra.launcher.tasks_per_node == 2 and cfg.hydra.launcher.nodes == 1
    validate_config(cfg)
    bad = compose_config(["hydra/launcher=slurm", "hydra.launcher.tasks_per_node=2"], with_hydra=True)
    with pytest.raises(ConfigError) as err:
        validate_config(bad)
    assert err.value.key == "hydra.launcher.tasks_per_node" and "hardware.devices=1" in str(err.value)
    nodes = compose_config(["hydra/launcher=slurm", "hydra.launcher.nodes=3"], with_hydra=True)
    with pytest.raises(ConfigError, match="hydra.launcher.nodes=3"):
        validate_config(nodes)
    gpu = compose_config(["hydra/launcher=slurm", "hardware=gpu"], with_hydra=True)
    with pytest.raises(ConfigError, match="gpus_per_task"):
        validate_config(gpu)


@pytest.mark.slow
def test_swept_hardware_against_fixed_launcher_resources_fails_before_submitting(tmp_path: Path, refused_in_process):
    # submitit takes tasks_per_node from the sweep's base config (devices=1) for every job
    # (python -m ftlab's main in this process: test_cli_reports_unreachable_cluster_before_submitting runs it for real)
    code, _, stderr = refused_in_process("--multirun", "hydra/launcher=slurm", "hardware.devices=1,2",
                                         f"hydra.sweep.dir={tmp_path / 's'}")
    assert code == 2
    err = [ln for ln in stderr.splitlines() if ln.startswith("ftlab: error:")]
    assert len(err) == 1 and "hydra.launcher.tasks_per_node=1" in err[0] and "job #1" in err[0]
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_local_multirun_refuses_multi_process_jobs(tmp_path: Path, refused_in_process):
    code, _, stderr = refused_in_process("--multirun", "hardware.devices=2", "seed=1,2",
                                         f"hydra.sweep.dir={tmp_path / 's'}")
    assert code == 2 and "hardware.devices=2 is invalid" in stderr
    assert "hydra/launcher=slurm" in stderr


def _unreachable_conf(tmp_path: Path) -> Path:
    """A slurm.conf naming a controller port nothing listens on."""
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=nowhere\nSlurmctldHost=localhost\nSlurmctldPort=1\nAuthType=auth/none\n"
                    "NodeName=localhost CPUs=1 State=UNKNOWN\nPartitionName=debug Nodes=ALL Default=YES State=UP\n")
    return conf


def needs_slurm_client() -> None:
    """Skip without the SLURM client (``sinfo``), with the reason; fail under ``FTLAB_REQUIRE_SLURM=1``
    (``.ci/run`` starts a cluster and sets it, so there a missing client is a broken setup)."""
    if shutil.which("sinfo") is None:
        msg = "`sinfo` is not on PATH: no SLURM client on this machine (scripts/slurm/start_local_cluster.sh)"
        if os.environ.get("FTLAB_REQUIRE_SLURM") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and text.startswith("SLURM is not reachable"), text
    return text


def _started_processes(monkeypatch) -> list[dict]:
    """Every process started while the test runs: its program and the timeout that bounds it."""
    calls: list[dict] = []
    real = subprocess.run

    def run(cmd, *args, **kwargs):
        calls.append({"program": Path(cmd[0]).name, "timeout": kwargs.get("timeout")})
        return real(cmd, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", run)
    return calls


def test_unreachable_cluster_is_a_clear_error_within_seconds(tmp_path: Path, monkeypatch):
    needs_slurm_client()  # the controller timeout is sinfo's; without it see the test below
    monkeypatch.setenv("SLURM_CONF", str(_unreachable_conf(tmp_path)))
    started = _started_processes(monkeypatch)
    with pytest.raises(FtlabError, match="SLURM is not reachable") as err:
        check_cluster("debug", timeout_s=5)
    # "within seconds" as events: one sinfo query, bounded by the 5 s asked for, no retries
    assert started == [{"program": "sinfo", "timeout": 5}]
    assert "not on PATH" not in _one_line(err)


def test_missing_slurm_conf_or_client_is_one_clear_line(tmp_path: Path, monkeypatch):
    """Works on any machine: a SLURM_CONF naming no file, then no ``sinfo`` at all."""
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "missing.conf"))
    with pytest.raises(FtlabError, match="does not exist") as err:
        check_cluster("debug")
    assert "missing.conf" in _one_line(err)
    monkeypatch.setenv("SLURM_CONF", str(_unreachable_conf(tmp_path)))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # a machine without the SLURM client
    started = _started_processes(monkeypatch)
    with pytest.raises(FtlabError, match="`sinfo` is not on PATH") as err:
        check_cluster("debug")
    assert started == []  # nothing is started, so nothing is waited for
    assert "start_local_cluster.sh" in _one_line(err)


@pytest.mark.slow
def test_cli_reports_unreachable_cluster_before_submitting(tmp_path: Path):
    # a hang (sinfo not bounded by FTLAB_SLURM_CHECK_TIMEOUT_S) fails by the timeout, not by a timing
    proc = cli("ftlab", "--multirun", "hydra/launcher=slurm", "seed=1,2", f"hydra.sweep.dir={tmp_path / 's'}",
               env={"SLURM_CONF": str(_unreachable_conf(tmp_path)), "FTLAB_SLURM_CHECK_TIMEOUT_S": "5"}, timeout=300)
    assert proc.returncode == 2
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("ftlab: error:")]
    assert len(err) == 1 and "SLURM is not reachable" in err[0], proc.stderr
    assert not (tmp_path / "s").exists()
