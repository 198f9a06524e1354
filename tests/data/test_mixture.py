"""task.sources: a seeded, weighted mixture; splits per source; realised counts; one-line errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from conftest import compose, run_tiny
from ftlab.data.tasks import build_task
from ftlab.errors import FtlabError
from ftlab.preflight.launch import preflight
from ftlab.reuse.runner import StepRunner


def _files(tmp_path: Path) -> tuple[Path, Path]:
    a = tmp_path / "a.jsonl"
    a.write_text("".join(json.dumps({"instruction": f"say a{i}", "input": "", "output": f"A{i}"}) + "\n"
                         for i in range(50)), encoding="utf-8")
    b = tmp_path / "b.csv"
    pd.DataFrame({"question": [f"b{i}?" for i in range(30)], "response": [f" B{i}" for i in range(30)]}).to_csv(
        b, index=False)
    return a, b


def _sources(a: Path, b: Path, wa: float = 1.5, wb: float = 0.5) -> str:
    return (f"task.sources=[{{path: '{a}', weight: {wa}}}, {{path: '{b}', format: prompt_answer, "
            f"columns: {{prompt: question, answer: response}}, weight: {wb}, name: bee}}]")


def test_counts_splits_and_seed(tmp_path: Path) -> None:
    a, b = _files(tmp_path)
    cfg = compose("task=instruct", _sources(a, b))
    task = build_task(cfg.task)
    splits = task.splits(0)
    # per source: 10% val, 10% test, the rest train; weight w takes round(w * n_train)
    assert task.source_counts == {"a": round(1.5 * 40), "bee": round(0.5 * 24)}
    assert len(splits.train) == 60 + 12 and len(splits.val) == 5 + 3 and len(splits.test) == 5 + 3
    per_prompt = Counter(ex.prompt for ex in splits.train)
    a_counts = Counter(n for p, n in per_prompt.items() if "say a" in p)
    assert a_counts == {1: 20, 2: 20}  # w=1.5 over 40: all once, a sample of half of them twice
    assert all(n == 1 for p, n in per_prompt.items() if p.startswith("b"))  # w=0.5: half, no repeats
    held_out = {ex.prompt for ex in splits.val + splits.test}
    assert not held_out & set(per_prompt)  # an example never sits in two splits
    again = build_task(cfg.task).splits(0)
    other = build_task(cfg.task).splits(1)
    assert again == splits and other.train != splits.train


def test_data_step_key_follows_the_weights(tmp_path: Path) -> None:
    a, b = _files(tmp_path)
    key = StepRunner(compose("task=instruct", _sources(a, b))).steps.data.key
    assert StepRunner(compose("task=instruct", _sources(a, b, wb=0.6))).steps.data.key != key


@pytest.mark.parametrize(("edit", "expect"), [
    ({"wb": 0}, ("task.sources[1].weight=0", "> 0")),
    ({"wb": -1}, ("task.sources[1].weight=-1", "> 0")),
])
def test_bad_weights(tmp_path: Path, edit, expect) -> None:
    a, b = _files(tmp_path)
    with pytest.raises(FtlabError) as err:
        preflight(["task=instruct", _sources(a, b, **edit)], multirun=False)
    assert all(part in str(err.value) for part in expect), str(err.value)


def test_bad_source_keys(tmp_path: Path) -> None:
    a, b = _files(tmp_path)
    with pytest.raises(FtlabError, match=r"task.sources\[0\].wieght=2 is invalid: a key of a source"):
        preflight(["task=instruct", f"task.sources=[{{path: '{a}', wieght: 2}}]"], multirun=False)
    with pytest.raises(FtlabError, match="task.path=.*null when task.sources is set"):
        preflight(["task=instruct", f"task.path={a}", f"task.sources=[{{path: '{b}'}}]"], multirun=False)
    with pytest.raises(FtlabError, match=r"task.sources\[0\].path=.*missing.jsonl"):
        preflight(["task=instruct", f"task.sources=[{{path: '{tmp_path}/missing.jsonl'}}]"], multirun=False)


@pytest.mark.slow
def test_a_mixture_run_writes_its_counts(tmp_path: Path) -> None:
    a, b = _files(tmp_path)
    run_tiny(tmp_path / "run", "task=instruct", _sources(a, b), "train.max_steps=2", "train.batch_size=4",
             "eval.enabled=false", "task.max_length=24")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data_source_counts"] == {"a": 60, "bee": 12}
    assert metrics["data_train_examples"] == 72 and metrics["data_truncated_examples"] > 0
