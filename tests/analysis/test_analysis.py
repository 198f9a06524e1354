"""``python -m ftlab.analyze``: tables and plots over run dirs made here by real tiny runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from conftest import cli
from ftlab.analysis import analyze
from ftlab.analysis.runs import flatten, load_runs
from ftlab.analysis.tables import task_metric, varying_keys
from ftlab.preflight.compose import compose_run

TINY = ["task.num_examples=80", "task.eval_examples=4", "train.max_steps=6", "train.batch_size=4",
        "train.log_every_n_steps=2", "train.save_merged_model=false", "train.save_adapter=false",
        "train.save_epoch_checkpoints=false", "eval.generate=false", "task.max_length=32"]


def make_run(run_dir: Path, overrides: list[str]) -> Path:
    from ftlab.recipe.run import run

    cache = f"paths.cache_dir={run_dir.parent / '.cache'}"  # hermetic: masks/bases cached beside the runs
    run(compose_run([*TINY, cache, *overrides]), run_dir=run_dir)
    return run_dir


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    make_run(root / "0", ["adapter.r=4", "seed=0"])
    make_run(root / "1", ["adapter.r=4", "seed=1"])
    # SoRA gates (sparsity_log.csv) on a 50 % magnitude-pruned base (validation_report.json)
    make_run(root / "2", ["adapter=sora", "adapter.r=2", "adapter.sparse_lambda_2=0.3", "seed=0",
                          "sparsity=unstructured", "sparsity.level=0.5"])
    # What the sweep callback writes at the end of a --multirun (stage_log.csv, reuse_summary.json).
    from ftlab.reuse.records import write_sweep_records

    write_sweep_records(root)
    # An interrupted run: its config and a partial log, no metrics.json.
    (root / "3").mkdir()
    shutil.copy(root / "0" / "config.yaml", root / "3" / "config.yaml")
    lines = (root / "0" / "loss_log.csv").read_text().splitlines()[:2]
    (root / "3" / "loss_log.csv").write_text("\n".join(lines) + "\n")
    return root


def test_flatten_and_task_metric():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": 1, "a.c": "[1,2]", "d": None}
    assert task_metric({"val_loss": 2.0, "eval_accuracy": 0.5}) == ("eval_accuracy", 0.5)
    assert task_metric({"val_loss": 2.0}) == ("val_loss", 2.0)


@pytest.mark.slow
def test_tables_one_row_per_run_and_seed_groups(sweep, tmp_path):
    result = analyze(sweep, tmp_path / "out", plot=False)
    for name in ("summary.csv", "grouped_summary.csv", "sparsity_vs_performance.csv"):
        assert (tmp_path / "out" / name).is_file()
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert sorted(summary["run"].astype(str)) == ["0", "1", "2", "3"]
    status = dict(zip(summary["run"].astype(str), summary["status"]))
    assert status == {"0": "finished", "1": "finished", "2": "finished", "3": "unfinished"}
    assert [r.rel for r in result.unfinished] == ["3"]
    # the varying config keys are columns; constant ones are not
    assert "adapter.r" in summary and "seed" in summary and "schedule.lr" not in summary
    for col in ("val_loss", "train_time_s", "tokens_per_sec", "peak_memory_mb", "trainable_params",
                "effective_params", "total_params", "final_train_loss"):
        assert summary.loc[summary["status"] == "finished", col].notna().all(), col
    # measured values are copied, not recomputed
    records = {r.rel: r for r in load_runs(sweep)}
    row0 = summary[summary["run"].astype(str) == "0"].iloc[0]
    assert row0["val_loss"] == pytest.approx(records["0"].metrics["val_loss"])
    assert row0["trainable_params"] > summary[summary["run"].astype(str) == "2"].iloc[0]["trainable_params"]

    grouped = pd.read_csv(tmp_path / "out" / "grouped_summary.csv")
    assert sorted(grouped["adapter.r"]) == [2, 4] and sorted(grouped["n_runs"]) == [1, 2]
    g4 = grouped[grouped["adapter.r"] == 4].iloc[0]
    losses = [records[k].metrics["val_loss"] for k in ("0", "1")]
    assert g4["val_loss_mean"] == pytest.approx(sum(losses) / 2)
    assert g4["val_loss_std"] == pytest.approx(pd.Series(losses).std(ddof=1))

    reuse = pd.read_csv(tmp_path / "out" / "reuse_summary.csv")
    assert reuse["sweep"].tolist() == ["."] and reuse["trials"].tolist() == [3]
    assert reuse["naive_iters"].tolist() == [3 * 6] and reuse["executed_iters"].tolist() == [3 * 6]

    sp = pd.read_csv(tmp_path / "out" / "sparsity_vs_performance.csv")
    assert len(sp) == 3 and {"gate_sparsity", "sparsity_level", "metric_value", "tokens_per_sec"} <= set(sp)
    sora = sp[sp["run"].astype(str) == "2"].iloc[0]
    assert sora["gate_sparsity"] == pytest.approx(records["2"].metrics["sparsity"])
    assert sora["mask_sparsity"] == pytest.approx(0.5) and sora["validation"] == "passed"
    assert sp[sp["run"].astype(str) == "0"]["gate_sparsity"].isna().all()  # ungated


@pytest.mark.slow
def test_cli_plots_are_valid_pngs(sweep, tmp_path):
    out = tmp_path / "plots_out"
    proc = cli("ftlab.analyze", str(sweep), "--plot", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "unfinished: 3" in proc.stdout and "3 finished, 1 unfinished" in proc.stdout
    pngs = {p.name for p in (out / "plots").glob("*.png")}
    assert {"loss_curves.png", "lr_schedule.png", "memory.png", "sparsity_vs_metric.png",
            "sparsity_vs_throughput.png", "gate_sparsity_2.png"} <= pngs
    for p in (out / "plots").glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(p) as im:
            im.verify()
            assert im.size[0] > 100 and im.size[1] > 100
    assert not list(out.glob(".analysis-*")), "staging dir left behind"


def test_varying_keys_ignores_noise():
    class R:
        def __init__(self, cfg):
            self.config = cfg
    recs = [R({"name": "a", "seed": 0, "adapter.r": 4, "train.log_every_n_steps": 5}),
            R({"name": "b", "seed": 1, "adapter.r": 4, "train.log_every_n_steps": 10})]
    assert varying_keys(recs) == ["seed"]


def test_no_runs_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = cli("ftlab.analyze", str(tmp_path / "empty"))
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("ftlab: error:") and "no run dirs found" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "empty" / "analysis").exists()
