"""Sweep records: stage tree text, stage_log.csv rows and the reuse summary from job records."""

from __future__ import annotations

import csv
import json

from ftlab.reuse.records import RECORD_FILE, stage_rows, summarize, trial_label, write_sweep_records
from ftlab.reuse.tree import build_tree, render_tree


def stage(idx, lr, key, hit, iters=50, runtime=1.0):
    return {"stage_idx": idx, "iters": iters, "lr": lr, "key": key, "cache_hit": hit, "runtime_s": runtime}


def seed_records():
    """The seed's two trials: a shared stage 1 at 1e-5, stage 2 at 5e-5 or 3e-5."""
    return [
        {"trial": "A", "job_num": 0, "run_dir": "/s/0", "stages": [stage(1, 1e-5, "k1", False), stage(2, 5e-5, "kA2", False)]},
        {"trial": "B", "job_num": 1, "run_dir": "/s/1", "stages": [stage(1, 1e-5, "k1", True, runtime=0.1),
                                                                   stage(2, 3e-5, "kB2", False)]},
    ]


def test_stage_tree_merges_shared_prefixes():
    text = render_tree(build_tree(seed_records()))
    assert text.splitlines() == [
        "Trial A ── Stage1: lr=1e-05, 50 iters (A1) [built by A; reused by B]",
        "           ├── Stage2: lr=5e-05, 50 iters (A2) [built by A]",
        "           └── Stage2: lr=3e-05, 50 iters (B2) [built by B]",
    ]


def test_stage_tree_with_base_and_diverging_roots():
    base = {"key": "b", "steps": 300, "cache_hit": False, "runtime_s": 5.0}
    recs = [
        {"trial": "A", "base": base, "stages": [stage(1, 1e-3, "", False, iters=100)]},
        {"trial": "B", "base": {**base, "cache_hit": True}, "stages": [stage(1, 2e-3, "", False, iters=100)]},
        {"trial": "C", "base": {**base, "key": "c"}, "stages": [stage(1, 1e-3, "", False, iters=100)]},
    ]
    assert render_tree(build_tree(recs)).splitlines() == [
        "Trial A ── Base: 300 steps (A:base) [built by A; reused by B]",
        "           ├── Train: lr=0.001, 100 iters (A1) [built by A]",
        "           └── Train: lr=0.002, 100 iters (B1) [built by B]",
        "Trial C ── Base: 300 steps (C:base) [built by C]",
        "           └── Train: lr=0.001, 100 iters (C1) [built by C]",
    ]
    s = summarize(recs)
    assert (s["naive_iters"], s["executed_iters"]) == (1200, 900)
    assert s["base"] == {"trials": 3, "unique": 2, "built": 2, "hits": 1, "naive_steps": 900, "executed_steps": 600,
                         "runtime_s": 15.0}


def test_summary_counts_naive_and_executed_iterations():
    s = summarize(seed_records())
    assert (s["naive_iters"], s["executed_iters"], s["saved_iters"]) == (200, 150, 50)
    assert s["saved_pct"] == 25.0 and s["speedup"] == round(200 / 150, 4)
    assert s["stages"]["naive_runs"] == 4 and s["stages"]["executed_runs"] == 3
    rerun = [{**r, "stages": [{**st, "cache_hit": True} for st in r["stages"]]} for r in seed_records()]
    s2 = summarize(rerun)
    assert s2["executed_iters"] == 0 and s2["speedup"] is None and s2["saved_pct"] == 100.0


def test_trial_labels():
    assert [trial_label(i) for i in (0, 1, 25, 26, 27, 701, 702)] == ["A", "B", "Z", "AA", "AB", "ZZ", "AAA"]


def test_sweep_files_are_written_from_job_records(tmp_path):
    for rec in seed_records():
        d = tmp_path / str(rec["job_num"])
        d.mkdir()
        (d / RECORD_FILE).write_text(json.dumps({k: v for k, v in rec.items() if k not in ("trial", "run_dir")}))
    summary, tree = write_sweep_records(tmp_path, {"sweep_wall_s": 1.5})
    assert tree.startswith("Trial A ── Stage1")
    with open(tmp_path / "stage_log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:7] == ["trial", "stage_idx", "iters", "lr", "key", "cache_hit", "runtime_s"]
    assert [(r["trial"], r["stage_idx"], r["key"], r["cache_hit"]) for r in rows] == [
        ("A", "1", "k1", "False"), ("A", "2", "kA2", "False"), ("B", "1", "k1", "True"), ("B", "2", "kB2", "False")]
    assert rows[2]["run_dir"] == "1"
    saved = json.loads((tmp_path / "reuse_summary.json").read_text())
    assert saved["naive_iters"] == 200 and saved["executed_iters"] == 150 and saved["sweep_wall_s"] == 1.5
    assert saved["tree"] == tree.splitlines()
    assert stage_rows([]) == [] and write_sweep_records(tmp_path / "empty") is None
