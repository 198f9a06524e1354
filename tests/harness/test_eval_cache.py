"""Evaluation as a cached step: four jobs of a sweep over one cache dir (a control, two jobs
that train bitwise-equal adapters, one other) score the base model once and the equal models once."""

from __future__ import annotations

import json

import pytest

from conftest import run_tiny
from real_task_files import piqa_rows, write_jsonl

TINY = ["train.max_steps=2", "train.batch_size=4", "train.eval_batch_size=8", "train.save_epoch_checkpoints=false",
        "eval.generate=false"]


@pytest.mark.slow
def test_four_jobs_score_the_control_and_equal_models_once(tmp_path):
    piqa = write_jsonl(tmp_path / "valid.jsonl", piqa_rows(6, seed=1))
    shared = [f"paths.cache_dir={tmp_path / 'cache'}", "eval.benchmarks=[piqa]", f"eval.data.piqa={piqa}",
              "eval.control=true", *TINY]
    jobs = {"control": ["adapter=none"], "lora": ["adapter.r=2"], "lora_again": ["adapter.r=2"],
            "dora": ["adapter=dora", "adapter.r=2"]}
    metrics = {}
    for name, overrides in jobs.items():
        run_tiny(tmp_path / name, *shared, *overrides)
        metrics[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    # the base model is evaluated by the control (eval.control's pass and its final numbers) and by
    # every trained job's eval.control: one key, scored once
    base = [metrics["control"]["control_eval_cache"][0], metrics["control"]["eval_cache"][0],
            *[metrics[n]["control_eval_cache"][0] for n in ("lora", "lora_again", "dora")]]
    assert [e["hit"] for e in base] == [False, True, True, True, True] and len({e["key"] for e in base}) == 1
    assert all(m["control_benchmarks"]["piqa"]["value"] == metrics["control"]["benchmarks"]["piqa"]["value"]
               for n, m in metrics.items() if n != "control")  # ...and read back by every job's eval.control
    lora, again, dora = (metrics[n]["eval_cache"][0] for n in ("lora", "lora_again", "dora"))
    assert lora["hit"] is False and again == {**lora, "hit": True}  # bitwise-equal trained models: once
    assert dora["hit"] is False and dora["key"] != lora["key"]
    assert metrics["lora_again"]["benchmarks"] == metrics["lora"]["benchmarks"]
