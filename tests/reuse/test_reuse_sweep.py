"""A real ``--multirun`` of ``stage_reuse_demo``: the shared stage is trained once, the sweep dir
gets stage_log.csv and reuse_summary.json, the stage tree is printed; a re-run is all hits."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, cli

TINY = ["task.num_examples=120", "train.batch_size=8", "train.eval_batch_size=32", "schedule.stages.0.iters=4",
        "schedule.stages.1.iters=3", "eval.generate=false", "train.save_merged_model=false",
        "train.log_measurements=false"]


def sweep(tmp_path: Path, name: str, *extra: str) -> tuple[str, list[dict], dict]:
    out = tmp_path / name
    res = cli("ftlab", "--multirun", "+experiment=stage_reuse_demo", *TINY, f"paths.cache_dir={tmp_path / 'cache'}",
              f"hydra.sweep.dir={out}", *extra, timeout=300, env={"OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    with open(out / "stage_log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return res.stdout, rows, json.loads((out / "reuse_summary.json").read_text())


@pytest.mark.slow
def test_stage_reuse_demo_sweep_and_its_rerun(tmp_path):
    stdout, rows, summary = sweep(tmp_path, "first")
    assert [(r["trial"], r["stage_idx"], r["iters"], r["cache_hit"]) for r in rows] == [
        ("A", "1", "4", "False"), ("A", "2", "3", "False"), ("B", "1", "4", "True"), ("B", "2", "3", "False")]
    assert float(rows[1]["lr"]) == 5e-5 and float(rows[3]["lr"]) == 3e-5
    assert rows[0]["key"] == rows[2]["key"] and rows[1]["key"] != rows[3]["key"]
    assert (summary["naive_iters"], summary["executed_iters"], summary["saved_pct"]) == (14, 10, 28.57)
    assert summary["speedup"] == 1.4 and summary["sweep_wall_s"] > 0
    assert "Trial A ── Stage1: lr=1e-05, 4 iters (A1) [built by A; reused by B]" in stdout
    assert "├── Stage2: lr=5e-05, 3 iters (A2) [built by A]" in stdout
    assert "└── Stage2: lr=3e-05, 3 iters (B2) [built by B]" in stdout

    stdout, rows, summary = sweep(tmp_path, "again")
    assert all(r["cache_hit"] == "True" for r in rows) and len(rows) == 4
    assert summary["executed_iters"] == 0 and summary["speedup"] is None
    assert "everything from the cache" in stdout
    for job in ("0", "1"):
        metrics = json.loads((tmp_path / "again" / job / "metrics.json").read_text())
        assert metrics["resumed_from_step"] == metrics["train_steps"] == 7  # no training step ran
        first = json.loads((tmp_path / "first" / job / "metrics.json").read_text())
        assert metrics["val_loss"] == first["val_loss"]


@pytest.mark.slow
def test_parallel_jobs_sharing_a_stage_train_it_once(tmp_path):
    """Two jobs started together (as a SLURM array would start them) with one shared cache."""
    cache = tmp_path / "cache"
    procs = []
    for name, lr2 in (("a", 5e-5), ("b", 3e-5)):
        args = ["+experiment=stage_reuse_demo", *TINY, "schedule.stages.0.iters=30", f"schedule.stages.1.lr={lr2}",
                f"paths.cache_dir={cache}", f"hydra.run.dir={tmp_path / name}"]
        procs.append(subprocess.Popen([sys.executable, "-m", "ftlab", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    records = [json.loads((tmp_path / n / "reuse_record.json").read_text())["stages"] for n in "ab"]
    assert sorted(r[0]["cache_hit"] for r in records) == [False, True]  # stage 1: one build, one hit
    assert [r[1]["cache_hit"] for r in records] == [False, False]
    assert records[0][0]["key"] == records[1][0]["key"]
    assert len(list((cache / "entries").iterdir())) == 3 and not list((cache / "locks").glob("*.lock"))
