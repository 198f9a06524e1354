"""The Cerebras launcher plugin end to end through the CLI, with a stand-in ``cszoo`` first on PATH
(tests/fixtures/bin/cszoo): discovery, dry run, the exact launch command, output collection,
failures, and unsupported options stopping the sweep before anything is launched."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, cli

FIXTURE_BIN = ROOT / "tests" / "fixtures" / "bin"
FAST = ["train.max_steps=20", "train.log_every_n_steps=5", "train.save_every_n_steps=10"]


def fake_env(**extra: str) -> dict:
    return {"PATH": f"{FIXTURE_BIN}{os.pathsep}{os.environ['PATH']}", "FTLAB_TEST_PYTHON": sys.executable, **extra}


def test_plugin_is_discovered_from_the_namespace_package():
    assert not (ROOT / "src" / "hydra_plugins" / "__init__.py").exists()  # namespace package
    proc = cli("ftlab", "--info", "plugins")
    assert proc.returncode == 0, proc.stderr
    launchers = proc.stdout.split("Launcher:")[1].split("Sweeper:")[0]
    assert "CerebrasLauncher" in launchers


@pytest.mark.slow
def test_dry_run_writes_yaml_and_command_without_executing(tmp_path: Path):
    sweep = tmp_path / "sweep"
    proc = cli("ftlab", "--multirun", "hardware=cerebras", "hydra.launcher.dry_run=true", "adapter=lora,full",
               "hydra.launcher.checkpoint_path=/cb/base.mdl", *FAST, f"hydra.sweep.dir={sweep}", env=fake_env())
    assert proc.returncode == 0, proc.stderr
    for num, adapter in ((0, "lora"), (1, "full")):
        job = sweep / str(num)
        params = yaml.safe_load((job / "cszoo_params.yaml").read_text())
        assert ("callbacks" in params["trainer"]["init"]) == (adapter == "lora")
        assert params["trainer"]["fit"]["train_dataloader"]["data_dir"] == str(job / "cszoo_data" / "train")
        assert (job / "cszoo_data_train.yaml").is_file() and (job / "cszoo_data_val.yaml").is_file()
        script = (job / "cszoo_command.sh").read_text()
        assert (f"exec cszoo fit {job / 'cszoo_params.yaml'} --target_device CSX -o {job} --num_csx 1 "
                f"--mount_dirs {job / 'cszoo_data'} --checkpoint_path /cb/base.mdl") in script
        assert script.index("data_preprocess run --config") < script.index("exec cszoo fit")
        assert not (job / "fake_cszoo_call.json").exists() and not (job / "cszoo.log").exists()
        assert yaml.safe_load((job / "config.yaml").read_text())["adapter"]["name"] == adapter


@pytest.mark.slow
def test_launch_runs_cszoo_with_options_and_collects_outputs(tmp_path: Path):
    venv = tmp_path / "modelzoo-venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text("export FAKE_CSZOO_ENV=activated\n")
    sweep = tmp_path / "sweep"
    proc = cli("ftlab", "--multirun", "hardware=cerebras", "adapter=full", "sparsity=unstructured",
               "sparsity.level=0.7", "seed=1,2", *FAST,
               f"hydra.launcher.python_env={venv}", "hydra.launcher.num_csx=2",
               "hydra.launcher.train_data_dir=/cb/data/train", "hydra.launcher.val_data_dir=/cb/data/val",
               "hydra.launcher.mount_dirs=[/cb/data,/cb/code]", "hydra.launcher.python_paths=[/cb/code]",
               "hydra.launcher.checkpoint_path=/cb/base.mdl", f"hydra.sweep.dir={sweep}", env=fake_env())
    assert proc.returncode == 0, proc.stderr
    for num in (0, 1):
        job = sweep / str(num)
        call = json.loads((job / "fake_cszoo_call.json").read_text())
        assert call["argv"] == ["fit", str(job / "cszoo_params.yaml"), "--target_device", "CSX", "-o", str(job),
                                "--num_csx", "2", "--mount_dirs", "/cb/data", "/cb/code",
                                "--python_paths", "/cb/code", "--checkpoint_path", "/cb/base.mdl"]
        assert call["env_marker"] == "activated" and call["cwd"] == str(job)
        assert call["params"] == yaml.safe_load((job / "cszoo_params.yaml").read_text())
        init = call["params"]["trainer"]["init"]
        assert init["seed"] == num + 1 and init["sparsity"]["sparsity"] == 0.7
        assert init["backend"]["cluster_config"]["num_csx"] == 2
        with open(job / "loss_log.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert list(rows[0])[:6] == ["epoch", "step", "train_loss", "learning_rate", "gpu_memory_mb", "sparsity"]
        assert [int(r["step"]) for r in rows] == [5, 10, 15, 20]
        assert float(rows[-1]["train_loss"]) == pytest.approx(5.0 / (1 + 0.1 * 20), abs=1e-5)
        assert float(rows[0]["learning_rate"]) == pytest.approx(1e-3)
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["train_steps"] == 20 and metrics["cszoo_returncode"] == 0
        assert metrics["checkpoints"] == ["checkpoint_10.mdl", "checkpoint_20.mdl"]
        assert "Step=20" in (job / "cszoo.log").read_text()


@pytest.mark.slow
def test_frozen_sparse_base_is_masked_before_fit(tmp_path: Path):
    """Masked LoRA: ModelZoo cannot mask weights outside its optimiser, so the job masks the base
    checkpoint first (with the python of cszoo's environment) and fits from it with no sparsity block."""
    sweep = tmp_path / "sweep"
    proc = cli("ftlab", "--multirun", "hardware=cerebras", "hydra.launcher.dry_run=true", "adapter=masked",
               "sparsity=unstructured", "sparsity.level=0.7", "seed=3", "hydra.launcher.checkpoint_path=/cb/base.mdl",
               *FAST, f"hydra.sweep.dir={sweep}", env=fake_env())
    assert proc.returncode == 0, proc.stderr
    job = sweep / "0"
    init = yaml.safe_load((job / "cszoo_params.yaml").read_text())["trainer"]["init"]
    assert "sparsity" not in init and "Lora" in init["callbacks"][0]
    assert init["checkpoint"]["disable_strict_checkpoint_loading"] is True
    spec = yaml.safe_load((job / "cszoo_mask.yaml").read_text())
    assert spec["sparsity"] == 0.7 and spec["init_method"] == "topk" and spec["seed"] == 3
    assert spec["param_filter"] and all(g.startswith("*transformer_decoder.layers.*.") for g in spec["param_filter"])
    script = (job / "cszoo_command.sh").read_text()
    masked = job / "cszoo_masked_base" / "masked_base.mdl"
    mask_line = (f'"$(dirname "$(command -v cszoo)")/python" {job / "cerebras_mask_base.py"} {job / "cszoo_mask.yaml"} '
                 f'/cb/base.mdl {job / "cszoo_masked_base"}')
    assert mask_line in script and script.index(mask_line) < script.index("exec cszoo fit")
    assert f"--checkpoint_path {masked}" in script and str(job / "cszoo_masked_base") in script.split("--mount_dirs")[1]
    assert (job / "cerebras_mask_base.py").read_text() == (ROOT / "src/ftlab/launchers/cerebras_mask_base.py").read_text()


@pytest.mark.slow
def test_failing_cszoo_fails_the_sweep_with_its_message(tmp_path: Path):
    sweep = tmp_path / "sweep"
    proc = cli("ftlab", "--multirun", "hardware=cerebras", *FAST, "hydra.launcher.train_data_dir=/d",
               "hydra.launcher.checkpoint_path=/c.mdl", f"hydra.sweep.dir={sweep}", env=fake_env(FAKE_CSZOO_FAIL="1"))
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("ftlab: error:")]
    assert len(lines) == 1 and "cszoo exited 1" in lines[0] and "compile failed" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and "Error executing job" not in proc.stderr  # not Hydra's report
    assert json.loads((sweep / "0" / "metrics.json").read_text())["cszoo_returncode"] == 1


@pytest.mark.slow
@pytest.mark.parametrize(("args", "needle", "new_process"), [
    (["adapter=sora"], "adapter='sora' is invalid", True),
    (["adapter=lora", "hydra.launcher.executable=cszoo-not-installed"], "hydra.launcher.executable='cszoo-not-installed'",
     False),
    (["adapter=lora", "adapter.target_modules=[q_proj,v_proj]"], "adapter.target_modules=['q_proj', 'v_proj']", False),
])
def test_unsupported_options_fail_before_launch(tmp_path: Path, args, needle, new_process, refused_in_process,
                                                monkeypatch):
    """The first case through a real ``python -m ftlab``; the others through the same ``main`` in this
    process (the refusal comes from the preflight, before Hydra starts: a new interpreter adds nothing)."""
    sweep = tmp_path / "sweep"
    argv = ["--multirun", "hardware=cerebras", *args, "seed=1,2", "hydra.launcher.train_data_dir=/d",
            "hydra.launcher.checkpoint_path=/c.mdl", f"hydra.sweep.dir={sweep}"]
    if new_process:
        proc = cli("ftlab", *argv, env=fake_env())
        code, stderr = proc.returncode, proc.stderr
    else:
        for name, value in fake_env().items():
            monkeypatch.setenv(name, value)
        code, _, stderr = refused_in_process(*argv)
    assert code == 2, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("ftlab: error:")]
    assert len(lines) == 1 and needle in lines[0], stderr
    assert not sweep.exists()  # nothing launched, nothing half-written
    assert not list(tmp_path.rglob("fake_cszoo_call*"))  # cszoo was never started (it logs every call)
