"""A run scores its suite after training: metrics.json holds every task's lm-eval record and the
suite's unweighted mean; the control run scores the same benchmarks."""

from __future__ import annotations

import json

import pytest

from conftest import run_tiny
from real_task_files import piqa_rows, winogrande_rows, write_jsonl

TINY = ["train.max_steps=2", "train.batch_size=4", "train.eval_batch_size=8", "train.save_epoch_checkpoints=false"]


@pytest.mark.slow
def test_suite_average_is_the_unweighted_mean(tmp_path):
    piqa = write_jsonl(tmp_path / "valid.jsonl", piqa_rows(6, seed=1))
    wino = tmp_path / "winogrande"
    wino.mkdir()
    write_jsonl(wino / "dev.jsonl", winogrande_rows(10, seed=2))
    suite = ["+eval.suites.mini=[piqa,winogrande]", "eval.suite=mini", f"eval.data.piqa={piqa}",
             f"eval.data.winogrande={wino}", "eval.limit=4"]
    train = write_jsonl(tmp_path / "piqa_train.jsonl", piqa_rows(40, seed=3))  # trained as lm-eval renders it
    run_tiny(tmp_path / "run", "adapter.r=2", "task=benchmark", "task.options.benchmark=piqa", f"task.path={train}",
             "task.metric=accuracy", *suite, *TINY)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    bench = metrics["benchmarks"]
    assert list(bench) == ["piqa", "winogrande"]
    assert bench["piqa"]["headline"] == "acc" and {r["variant"] for r in bench["piqa"]["metrics"]} == {"acc", "acc_norm"}
    assert bench["piqa"]["n"] == bench["winogrande"]["n"] == 4  # eval.limit
    assert metrics["benchmark_suite"] == "mini"
    assert metrics["benchmark_average"] == pytest.approx((bench["piqa"]["value"] + bench["winogrande"]["value"]) / 2)
    assert 0 <= metrics["eval_accuracy"] <= 1  # the run's own test split, ftlab's choice scorer
