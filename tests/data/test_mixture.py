"""task.sources: a seeded, weighted mixture; splits per source; realised counts; one-line errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from conftest import compose, run_tiny
from ftlab.core.errors import FtlabError
from ftlab.data.tasks import build_task
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


def _prompts(examples) -> Counter:
    return Counter(ex.prompt for ex in examples)


def test_with_replacement_draws_the_weighted_count(tmp_path: Path) -> None:
    a, b = _files(tmp_path)
    cfg = compose("task=instruct", _sources(a, b), "task.mixture_replacement=true")
    task = build_task(cfg.task)
    splits = task.splits(0)
    # the same per-source splits and counts as without replacement: round(w x n_train)
    assert task.source_counts == {"a": 60, "bee": 12}
    assert len(splits.train) == 72 and len(splits.val) == 5 + 3 and len(splits.test) == 5 + 3
    per_prompt = _prompts(splits.train)
    # seed 0: independent draws, so repeats beyond floor(w)+1 and misses, even for w=0.5
    assert sorted(Counter(n for p, n in per_prompt.items() if "say a" in p).items()) == [
        (1, 15), (2, 11), (3, 5), (4, 2)]
    assert sorted(Counter(n for p, n in per_prompt.items() if p.startswith("b")).items()) == [(1, 6), (2, 3)]
    without = build_task(compose("task=instruct", _sources(a, b)).task).splits(0)
    assert splits.val == without.val and splits.test == without.test  # only the train draw differs
    assert not {ex.prompt for ex in splits.val + splits.test} & set(per_prompt)
    assert build_task(cfg.task).splits(0) == splits and build_task(cfg.task).splits(1).train != splits.train


def test_shared_split_splits_the_pool_once(tmp_path: Path) -> None:
    a, b = _files(tmp_path)
    cfg = compose("task=instruct", _sources(a, b), "task.mixture_shared_split=true")
    task = build_task(cfg.task)
    splits = task.splits(0)
    # the 80 pooled rows: round(0.1 x 80) = 8 val, 8 test, 64 train; seed 0 leaves a 39 and b 25
    # train rows (per source it would be 40 and 24), weighted 1.5 and 0.5: round(58.5)=58, round(12.5)=12
    assert len(splits.val) == 8 and len(splits.test) == 8
    assert task.source_counts == {"a": 58, "bee": 12} and len(splits.train) == 70
    assert sum("say a" in ex.prompt for ex in splits.val) == 5 and sum("say a" in ex.prompt for ex in splits.test) == 6
    per_prompt = _prompts(splits.train)
    assert sum(1 for p in per_prompt if "say a" in p) == 39 and sum(1 for p in per_prompt if p.startswith("b")) == 12
    held_out = [ex.prompt for ex in splits.val + splits.test]
    assert len(set(held_out)) == 16 and not set(held_out) & set(per_prompt)
    assert build_task(cfg.task).splits(0) == splits


def test_a_shared_split_needs_three_rows_in_the_pool_not_per_source(tmp_path: Path) -> None:
    a, _ = _files(tmp_path)
    tiny = tmp_path / "tiny.jsonl"
    tiny.write_text(json.dumps({"instruction": "only", "input": "", "output": "one"}) + "\n", encoding="utf-8")
    sources = f"task.sources=[{{path: '{a}'}}, {{path: '{tiny}'}}]"
    with pytest.raises(FtlabError, match="at least 3 examples"):
        build_task(compose("task=instruct", sources).task).splits(0)
    task = build_task(compose("task=instruct", sources, "task.mixture_shared_split=true").task)
    splits = task.splits(0)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 51


def test_mixture_keys_need_sources(tmp_path: Path) -> None:
    a, _ = _files(tmp_path)
    for key in ("mixture_replacement", "mixture_shared_split"):
        with pytest.raises(FtlabError, match=f"task.{key}=True is invalid: false without task.sources"):
            preflight(["task=instruct", f"task.path={a}", f"task.{key}=true"], multirun=False)
        with pytest.raises(FtlabError, match=f"task.{key}=True is invalid: unset for task capitalization"):
            preflight(["task=capitalization", f"task.{key}=true"], multirun=False)


def test_data_step_key_follows_the_weights(tmp_path: Path) -> None:
    a, b = _files(tmp_path)
    key = StepRunner(compose("task=instruct", _sources(a, b))).steps.data.key
    assert StepRunner(compose("task=instruct", _sources(a, b, wb=0.6))).steps.data.key != key
    keys = {key} | {StepRunner(compose("task=instruct", _sources(a, b), f"task.{k}=true")).steps.data.key
                     for k in ("mixture_replacement", "mixture_shared_split")}
    assert len(keys) == 3  # each mixture option is in the tokenized step's key


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


def test_a_mixture_of_conversations_and_instructions(tmp_path: Path) -> None:
    """Chat keys apply when any source is a conversation; the prompt template to the others."""
    a, _ = _files(tmp_path)
    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"hi {i}"},
                                                     {"role": "assistant", "content": f"yo {i}"}]}) + "\n"
                            for i in range(20)), encoding="utf-8")
    both = f"task.sources=[{{path: '{a}'}}, {{path: '{chat}', format: messages}}]"
    template = "task.prompt_template='Q: {instruction}{input} A: '"
    preflight(["task=instruct", both, "task.last_turn_only=true", template, "train.batch_size=4"], multirun=False)
    splits = build_task(compose("task=instruct", both, template).task).splits(0)
    assert sum(ex.messages is not None for ex in splits.train) == 16
    assert {ex.prompt for ex in splits.train if ex.messages is None} <= {f"Q: say a{i} A: " for i in range(50)}
    only_a = f"task.sources=[{{path: '{a}'}}]"
    with pytest.raises(FtlabError, match="task.last_turn_only=True is invalid: unset for format alpaca"):
        preflight(["task=instruct", only_a, "task.last_turn_only=true"], multirun=False)
    only_chat = f"task.sources=[{{path: '{chat}', format: messages}}]"
    with pytest.raises(FtlabError, match="task.prompt_template=.* is invalid: null for format messages"):
        preflight(["task=instruct", only_chat, template], multirun=False)


@pytest.mark.slow
def test_a_mixture_run_writes_its_counts(tmp_path: Path) -> None:
    a, b = _files(tmp_path)
    run_tiny(tmp_path / "run", "task=instruct", _sources(a, b), "train.max_steps=2", "train.batch_size=4",
             "eval.enabled=false", "task.max_length=24")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data_source_counts"] == {"a": 60, "bee": 12}
    assert metrics["data_train_examples"] == 72 and metrics["data_truncated_examples"] > 0
    assert metrics["data_val_examples"] == 8 and metrics["data_test_examples"] == 8  # 5 + 3 each
    assert metrics["data_val_truncated_examples"] > 0 and "data_val_truncated_tokens" in metrics
