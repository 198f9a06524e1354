"""``python -m ftlab.evaluate``: run dirs, model dirs, peft adapters and controls scored by lm-eval
the way a run's final numbers are; clear one-line errors for bad files."""

from __future__ import annotations

import json

import pytest

from conftest import run_tiny
from ftlab.core.errors import FtlabError
from ftlab.data.tasks import checked_rows
from ftlab.evaluate import main
from real_task_files import arc_rows, boolq_rows, hellaswag_rows, piqa_rows, write_jsonl, write_parquet

TINY = ["train.max_steps=2", "train.batch_size=4", "train.eval_batch_size=8", "task.max_length=96",
        "train.save_epoch_checkpoints=false"]


def _values(bench: dict) -> dict[str, float]:
    """variant -> value, keyed with its n and n-shot so that those must agree too."""
    return {f"{r['variant']} n={r['n']} shot={r['n_shot']}": r["value"] for r in bench["metrics"]}


@pytest.fixture(scope="module")
def boolq(tmp_path_factory):
    """A tiny LoRA run on a BoolQ file: (run dir, data file)."""
    root = tmp_path_factory.mktemp("boolq")
    path = write_jsonl(root / "dev.jsonl", boolq_rows(40, seed=1))
    run_tiny(root / "run", "task=boolq", f"task.path={path}", "adapter.r=2", *TINY)
    return root / "run", path


def test_run_metrics_record_every_variant(boolq):
    run_dir, _ = boolq
    metrics = json.loads((run_dir / "metrics.json").read_text())
    bench = metrics["eval_benchmark"]
    assert bench["task"] == "boolq" and bench["headline"] == "acc" and bench["harness"].startswith("lm-eval 0.4")
    (rec,) = bench["metrics"]
    assert rec["variant"] == "acc" and rec["n"] == 4 and rec["n_shot"] == 0  # the whole test split: 10% of 40
    assert rec["stderr"] is not None and metrics["eval_accuracy"] == rec["value"]


def test_run_dir_merged_and_adapter_reproduce_the_run(boolq, tmp_path, capsys):
    run_dir, _ = boolq
    want = _values(json.loads((run_dir / "metrics.json").read_text())["eval_benchmark"])
    assert main([str(run_dir)]) == 0
    merged = json.loads((run_dir / "eval.json").read_text())
    assert merged["weights"] == "merged" and merged["data"]["rows"] == "the run's test split"
    assert _values(merged["eval_benchmark"]) == pytest.approx(want)
    out = tmp_path / "adapter_eval.json"
    assert main([str(run_dir), "--weights", "adapter", "--out", str(out)]) == 0  # peft onto the rebuilt base
    adapter = json.loads(out.read_text())
    assert adapter["weights"] == "adapter" and _values(adapter["eval_benchmark"]) == pytest.approx(want)
    assert "eval_accuracy=" in capsys.readouterr().out


def test_model_dir_scores_every_row_of_a_file(boolq, tmp_path):
    run_dir, path = boolq
    parquet = write_parquet(tmp_path / "dev.parquet", boolq_rows(40, seed=1))
    out = tmp_path / "e.json"
    assert main([str(run_dir / "model"), "task=boolq", f"task.path={parquet}", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["kind"] == "model" and result["data"]["rows"] == "all"
    assert {r["n"] for r in result["eval_benchmark"]["metrics"]} == {40}
    # the same rows as JSONL (another published layout) score the same
    assert main([str(run_dir / "model"), "task=boolq", f"task.path={path}", "--out", str(tmp_path / "j.json")]) == 0
    assert _values(json.loads((tmp_path / "j.json").read_text())["eval_benchmark"]) == pytest.approx(
        _values(result["eval_benchmark"]))


@pytest.mark.slow
@pytest.mark.parametrize("adapter", ["sora", "none"])
def test_sora_adapter_and_control(tmp_path, adapter):
    """SoRA's exported (pruned) adapter through peft scores as its merged model; a control run is
    scored on its base model."""
    path = write_jsonl(tmp_path / "hs.jsonl", hellaswag_rows(30, seed=2))
    run_tiny(tmp_path / "run", "task=hellaswag", f"task.path={path}", f"adapter={adapter}", *TINY)
    want = _values(json.loads((tmp_path / "run" / "metrics.json").read_text())["eval_benchmark"])
    assert {k.split()[0] for k in want} == {"acc", "acc_norm"}
    weights = ["merged", "adapter"] if adapter == "sora" else ["base"]
    for w in weights:
        out = tmp_path / f"{w}.json"
        assert main([str(tmp_path / "run"), "--weights", w, "--out", str(out)]) == 0
        got = json.loads(out.read_text())
        assert got["weights"] == w and _values(got["eval_benchmark"]) == pytest.approx(want, abs=1e-6)


def test_bad_file_is_one_line_naming_file_line_and_field(boolq, tmp_path, capsys):
    run_dir, _ = boolq
    rows = boolq_rows(5)
    del rows[2]["passage"]
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    out = tmp_path / "never.json"
    assert main([str(run_dir / "model"), "task=boolq", f"task.path={bad}", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{bad}:3:" in err and "'passage'" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("case", ["missing", "type", "empty"])
def test_checked_rows_errors(tmp_path, case):
    rows = hellaswag_rows(4)
    if case == "missing":
        del rows[1]["ctx_b"]
        want = [":2:", "'ctx_b'"]
    elif case == "type":
        rows[3]["endings"] = "one ending"
        want = [":4:", "'endings'"]
    else:
        rows = []
        want = ["no examples"]
    path = tmp_path / "hs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(FtlabError) as err:
        checked_rows("hellaswag", path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg and all(w in msg for w in want)


def test_model_dir_needs_task_and_gsm8k_needs_shots(boolq, tmp_path, capsys):
    run_dir, path = boolq
    assert main([str(run_dir / "model")]) == 2
    assert "task=NAME" in capsys.readouterr().err
    from real_task_files import gsm8k_rows

    gsm = write_jsonl(tmp_path / "test.jsonl", gsm8k_rows(3))
    assert main([str(run_dir / "model"), "task=gsm8k", f"task.path={gsm}"]) == 2
    assert "task.options.fewshot_path" in capsys.readouterr().err


def test_analyze_picks_up_eval_json(boolq, tmp_path):
    from ftlab.analysis import analyze

    run_dir, path = boolq
    assert main([str(run_dir), "--out", str(run_dir / "eval.json")]) == 0
    evaluated = json.loads((run_dir / "eval.json").read_text())
    result = analyze(run_dir.parent, tmp_path / "analysis")
    row = result.summary.set_index("run").loc["run"]
    assert row["eval_json:acc"] == pytest.approx(evaluated["eval_benchmark"]["metrics"][0]["value"])
    assert row["lm_eval:acc"] == pytest.approx(json.loads((run_dir / "metrics.json").read_text())["eval_accuracy"])
    assert row["eval_json:n"] == 4 and row["eval_json:weights"] == "merged"
    # a model dir scored on its own (outside any run) is a finished record of the analysis
    model_copy = tmp_path / "models" / "m"
    model_copy.mkdir(parents=True)
    for f in (run_dir / "model").iterdir():
        (model_copy / f.name).write_bytes(f.read_bytes())
    assert main([str(model_copy), "task=boolq", f"task.path={path}"]) == 0
    alone = analyze(tmp_path / "models", tmp_path / "a2")
    (rec,) = alone.records
    assert rec.finished and alone.summary["metric"].tolist() == ["eval_accuracy"]
    assert alone.summary["eval_json:n"].tolist() == [40]


@pytest.mark.slow
def test_control_scored_by_lm_eval_does_not_move_training(tmp_path):
    """lm-eval seeds the global generators; scoring the control first must not change training."""
    path = write_jsonl(tmp_path / "dev.jsonl", boolq_rows(40, seed=1))
    common = ["task=boolq", f"task.path={path}", "adapter.r=2", "adapter.dropout=0.1", *TINY]
    run_tiny(tmp_path / "plain", *common)
    run_tiny(tmp_path / "control", *common, "eval.control=true")
    plain = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    control = json.loads((tmp_path / "control" / "metrics.json").read_text())
    assert control["control_eval_benchmark"]["task"] == "boolq" and "control_eval_accuracy" in control
    assert control["val_loss"] == plain["val_loss"]
    assert (tmp_path / "control" / "loss_log.csv").read_text().splitlines()[1].split(",")[2] == \
        (tmp_path / "plain" / "loss_log.csv").read_text().splitlines()[1].split(",")[2]


@pytest.mark.slow
def test_benchmarks_and_suite_through_the_runs_cache(tmp_path, capsys):
    """``python -m ftlab.evaluate RUN eval.benchmarks=[...]`` / ``eval.suite=...``: the run's own
    scores come back from the evaluation cache the run filled (same key), the new task is scored."""
    piqa = write_jsonl(tmp_path / "valid.jsonl", piqa_rows(6, seed=1))
    arc = write_jsonl(tmp_path / "ARC-Easy-Test.jsonl", arc_rows(5, seed=2))
    run_dir = tmp_path / "control"
    run_tiny(run_dir, "adapter=none", f"paths.cache_dir={tmp_path / 'cache'}", "eval.benchmarks=[piqa]",
             f"eval.data.piqa={piqa}", "eval.generate=false", *TINY)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [e["hit"] for e in metrics["eval_cache"]] == [False]
    capsys.readouterr()
    assert main([str(run_dir), "eval.benchmarks=[piqa]"]) == 0
    again = json.loads((run_dir / "eval.json").read_text())
    assert again["eval_cache"] == [{**metrics["eval_cache"][0], "hit": True}]
    assert again["benchmarks"]["piqa"] == metrics["benchmarks"]["piqa"]
    out = tmp_path / "suite.json"
    assert main([str(run_dir), "+eval.suites.mini=[piqa,arc_easy]", "eval.suite=mini",
                 f"eval.data.arc_easy={{test:{arc}}}", "--out", str(out)]) == 0
    suite = json.loads(out.read_text())
    assert [(e["task"], e["hit"]) for e in suite["eval_cache"]] == [("piqa", True), ("arc_easy", False)]
    assert suite["benchmark_suite"] == "mini" and suite["benchmarks"]["arc_easy"]["n"] == 5
    values = [suite["benchmarks"][t]["value"] for t in ("piqa", "arc_easy")]
    assert suite["benchmark_average"] == pytest.approx(sum(values) / 2)
    printed = capsys.readouterr().out
    assert "arc_easy: acc=" in printed and "mini average (unweighted mean of 2 tasks)" in printed


def test_model_dir_needs_a_task_or_benchmarks(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    assert main([str(tmp_path), "eval.limit=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "eval.suite=NAME / eval.benchmarks=[...]" in err
