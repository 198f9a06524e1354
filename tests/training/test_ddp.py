"""Two-process DDP on CPU (gloo) through the CLI, as a user runs it: Lightning re-executes the
command line for rank 1 with the same run dir, and only rank 0 writes the run's files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import cli

TINY = ["train.batch_size=4", "task.num_examples=200", "task.eval_examples=16", "eval.generate=false",
        "train.save_merged_model=false", "train.log_every_n_steps=2", "train.log_measurements=false",
        "model.config.hidden_size=64", "model.config.intermediate_size=128", "train.max_steps=6",
        "train.save_every_n_steps=3"]


@pytest.mark.slow
def test_two_process_cpu_ddp_run(tmp_path: Path):
    run = tmp_path / "run"
    # verbose: Lightning's rank lines on the console (the quiet console keeps them in the run's log)
    proc = cli("ftlab", "hardware=cpu", "hardware.devices=2", *TINY, f"hydra.run.dir={run}",
               env={"FTLAB_VERBOSE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in out and "GLOBAL_RANK: 1, MEMBER: 2/2" in out
    with open(run / "loss_log.csv", newline="") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [2, 4, 6]  # one writer: no duplicated rows
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_steps"] == 6 and "val_loss" in metrics
    # rank 0 evaluated after rank 1 had left, and wrote everything once
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-epoch0-step3", "checkpoint-epoch0-step6"]
    assert not list(run.rglob("*.tmp")) and not list((run / "checkpoints").glob(".tmp-*"))
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
