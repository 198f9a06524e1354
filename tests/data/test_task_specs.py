"""A benchmark task is one module: its lm-eval facts are its registered spec's ``harness``, and the
harness, the preflight and the evaluate CLI read them from there (no table keyed by task names)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from ftlab.core.errors import ConfigError
from ftlab.data import task_base
from ftlab.data.benchmark_files import FEWSHOT, SCORED, LocalData
from ftlab.data.real_tasks import BOOLQ_CHOICES, RealTask, boolq_example, boolq_superglue_row
from ftlab.data.tasks import (
    HarnessBenchmark,
    build_task,
    checked_rows,
    harness_task,
    harness_task_names,
    validate_real_task,
)
from ftlab.harness.benchmark_checks import uses_harness
from ftlab.harness.data import run_task_benchmark
from real_task_files import boolq_rows, write_jsonl


class YesNo(RealTask):
    """What a researcher's module adds: BoolQ's rows under a new name, scored by lm-eval's boolq."""

    name = "yesno"
    harness = HarnessBenchmark("boolq", headline_key="eval_accuracy", headline_variant="acc", metrics=("accuracy",))
    multiple_choice = True
    metric = "accuracy"
    option_keys = ("length_normalize",)
    required = ("question", "passage")
    parse = staticmethod(boolq_example)
    harness_row = staticmethod(boolq_superglue_row)


@pytest.fixture
def yesno(monkeypatch):
    monkeypatch.setitem(task_base.TASKS._specs, YesNo.name, YesNo)  # register_task, undone after the test
    return YesNo


def cfg_of(name, path=None, metric="accuracy", **options):
    return OmegaConf.create({
        "task": {"name": name, "path": None if path is None else str(path), "metric": metric,
                 "options": options, "max_new_tokens": 8},
        "eval": {"harness": True, "generate": True}})


def test_registered_benchmark_task_is_found_by_its_spec(yesno, tmp_path):
    assert harness_task("yesno") is yesno and "yesno" in harness_task_names()
    assert {"boolq", "hellaswag", "gsm8k"} <= set(harness_task_names())
    for name in ("capitalization", "instruct", "benchmark", "nonexistent"):  # no harness facts on their spec
        assert harness_task(name) is None and name not in harness_task_names()
    path = write_jsonl(tmp_path / "yesno.jsonl", boolq_rows(6, seed=1))
    assert uses_harness(cfg_of("yesno", path)) and not uses_harness(cfg_of("capitalization"))

    rows = checked_rows("yesno", path)  # validated by the task's parser, in lm-eval's boolq layout
    assert [r["label"] for r in rows] == [int(r["answer"]) for r in boolq_rows(6, seed=1)]
    with pytest.raises(ConfigError, match=r"task='capitalization'.*yesno"):
        checked_rows("capitalization", path)

    data = LocalData("json", {SCORED: (str(path),), FEWSHOT: (str(path),)}, str(path))
    bench = run_task_benchmark(cfg_of("yesno", path), data)
    assert (bench.name, bench.headline_variant, bench.max_gen_toks) == ("boolq", "acc", 8)
    assert run_task_benchmark(cfg_of("yesno", path, length_normalize=True), data).headline_variant == "acc_norm"
    assert yesno(OmegaConf.create({"options": {}})).load_file(path)[0].choices == BOOLQ_CHOICES


def test_composition_checks_read_the_spec(yesno, tmp_path):
    with pytest.raises(ConfigError, match=r"task.path=None.*published yesno format"):
        validate_real_task(cfg_of("yesno"))
    path = write_jsonl(tmp_path / "yesno.jsonl", boolq_rows(3))
    with pytest.raises(ConfigError, match=r"task.metric='exact_match'.*\['accuracy'\] for task yesno"):
        validate_real_task(cfg_of("yesno", path, metric="exact_match"))
    validate_real_task(cfg_of("yesno", path))  # its own metric on its file: accepted
    with pytest.raises(ConfigError, match=r"multiple-choice tasks: \[.*'yesno'"):  # the flag, not a name list
        validate_real_task(cfg_of("capitalization", metric="accuracy"))


def test_tasks_are_one_registry_and_a_second_task_of_a_name_is_refused(monkeypatch):
    """Tasks go through the same :class:`~ftlab.core.plugins.Registry` as every extension point: an
    unknown name fails in one line naming the registered ones, and an installed package's task
    named like a built-in one is an error, not a silent choice of either."""
    with pytest.raises(ConfigError) as err:
        build_task(OmegaConf.create({"name": "nope", "options": {}}))
    assert str(err.value).startswith("task.name='nope'") and "boolq" in str(err.value)

    class OtherBoolQ(RealTask):
        name = "boolq"

    monkeypatch.setattr("ftlab.core.plugins.load_entry_points",
                        lambda group: [("boolq", OtherBoolQ)] if group == "ftlab.tasks" else [])
    with pytest.raises(ConfigError) as err:
        task_base.TASKS.find("boolq")
    assert "one task per name" in str(err.value) and "\n" not in str(err.value)
