"""``hydra/launcher=fused`` through the CLI: a stage_search rung launched through it trains its
jobs fused (one group per rung), each job with its own run dir, record and stage entries, and the
rung-2 trials resume from the stage entry rung 1 published."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import cli

TINY = ["schedule=stages", "schedule.stages=[{iters:4,lr:1e-3},{iters:3,lr:1e-3}]", "task.num_examples=120",
        "train.batch_size=8", "train.eval_batch_size=32", "task.eval_examples=16", "eval.generate=false",
        "train.save_merged_model=false", "train.save_adapter=false", "train.log_measurements=false", "model.init_seed=0"]


@pytest.mark.slow
def test_a_stage_search_rung_runs_fused(tmp_path):
    out = tmp_path / "sweep"
    res = cli("ftlab", "--multirun", "hydra/sweeper=stage_search", "hydra/launcher=fused",
              "hydra.sweeper.search.eta=2", *TINY, "schedule.stages.0.lr=1e-4,3e-3", "schedule.stages.1.lr=1e-4,3e-3",
              f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={out}", timeout=600,
              env={"OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    text = res.stdout + res.stderr
    assert text.count("1 fused group(s), 0 alone") == 2  # rung 1 and rung 2
    assert "fused group of 2 trials: 3 fused steps" in text  # rung 2 resumed at step 4 of 7
    with open(out / "search_log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["rung"] for r in rows] == ["1", "1", "2", "2"]
    for job in range(4):
        rec = json.loads((out / str(job) / "reuse_record.json").read_text())
        assert rec["job_num"] == job
        assert (out / str(job) / "metrics.json").is_file() and (out / str(job) / "loss_log.csv").is_file()
    rung2 = [json.loads((out / str(j) / "reuse_record.json").read_text()) for j in (2, 3)]
    assert all([s["cache_hit"] for s in rec["stages"]] == [True, False] for rec in rung2)
