"""benchmarks/throughput.py: one short run per batch size -> CSV + PNG; its runs feed the planner."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest
from PIL import Image

from conftest import ROOT
from ftlab.plan.options import PlanOptions
from ftlab.plan.planner import make_plan

SHORT = ["train.max_steps=4", "train.log_every_n_steps=2", "task.num_examples=100", "task.max_length=32"]


@pytest.mark.slow
def test_throughput_benchmark_writes_csv_png_and_serves_as_prior(tmp_path):
    out = tmp_path / "tp"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--batch-sizes", "1,2",
                           "--out", str(out), *SHORT], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(out / "throughput.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["batch_size"]) for r in rows] == [1, 2]
    for r in rows:
        assert int(r["steps"]) == 4
        for col in ("samples_per_sec", "tokens_per_sec", "steady_tokens_per_sec", "peak_memory_mb"):
            assert float(r[col]) > 0, col
        assert (out / f"bs{r['batch_size']}" / "metrics.json").is_file()
    assert float(rows[0]["samples_per_sec_ratio"]) == 1.0
    assert float(rows[1]["samples_per_sec_ratio"]) == pytest.approx(
        float(rows[1]["samples_per_sec"]) / float(rows[0]["samples_per_sec"]))
    assert "ratios vs batch size 1" in proc.stdout
    with Image.open(out / "throughput.png") as im:
        im.verify()
    # the benchmark's runs are prior runs for the planner: the same setup at bs 2 is an exact match
    plan = make_plan(["+experiment=throughput", "train.batch_size=2", *SHORT], PlanOptions(prior_dirs=[str(out)]))
    assert plan.runs[0].time.method == "exact" and plan.runs[0].time.basis == [str(out / "bs2")]
    # and a batch size between/after them is estimated from them, not left without basis
    plan4 = make_plan(["+experiment=throughput", "train.batch_size=4", *SHORT], PlanOptions(prior_dirs=[str(out)]))
    assert plan4.runs[0].time.method in ("fit", "scaled") and plan4.runs[0].time.has_basis
