"""Tasks: seeded disjoint splits, answer-only loss masks, user JSONL with clear errors."""

from __future__ import annotations

import json

import pytest

from conftest import compose
from ftlab.core.errors import FtlabError
from ftlab.data.encoding import IGNORE_INDEX, encode_example
from ftlab.data.tasks import build_task
from ftlab.models import build_tokenizer


@pytest.mark.parametrize("task", ["capitalization", "arithmetic"])
def test_splits_are_seeded_and_disjoint(task: str) -> None:
    cfg = compose(f"task={task}", "task.num_examples=300")
    t = build_task(cfg.task)
    a, b, c = t.splits(1), t.splits(1), t.splits(2)
    assert a == b and a != c
    assert len(a.train) + len(a.val) + len(a.test) == 300 and len(a.val) == len(a.test) == 30
    ids = lambda xs: {id(x) for x in xs}  # noqa: E731 - same source objects, partitioned
    assert not ids(a.train) & ids(a.val) and not ids(a.train) & ids(a.test) and not ids(a.val) & ids(a.test)


def test_capitalization_and_arithmetic_answers_are_right() -> None:
    cap = build_task(compose("task=capitalization").task).splits(0).train[:50]
    for ex in cap:
        assert ex.answer == " " + ex.prompt.split(": ", 1)[1].split("\n")[0].upper()
    ari = build_task(compose("task=arithmetic").task).splits(0).train[:50]
    for ex in ari:
        expr = ex.prompt.split(": ", 1)[1].split("\n")[0]
        assert int(ex.answer) == eval(expr)  # noqa: S307 - digits and +/- we generated


def test_loss_covers_answer_tokens_only() -> None:
    tok = build_tokenizer(compose().model)
    enc = encode_example(tok, "Capitalize: ab\nAnswer:", " AB", max_length=64)
    n_prompt = len(tok.encode("Capitalize: ab\nAnswer:", add_special_tokens=False))
    assert enc.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert enc.labels[n_prompt:] == enc.input_ids[n_prompt:] == tok.encode(" AB", add_special_tokens=False) + [tok.eos_token_id]
    short = encode_example(tok, "x" * 100, " AB", max_length=10)  # truncation keeps the answer
    assert len(short.input_ids) == 10 and short.labels[-4:] == short.input_ids[-4:]


def test_user_jsonl(tmp_path) -> None:
    good = tmp_path / "data.jsonl"
    good.write_text("\n".join(json.dumps({"prompt": f"Q{i}:", "answer": f" {i}"}) for i in range(20)))
    cfg = compose("task=capitalization", f"task.path={good}")
    splits = build_task(cfg.task).splits(0)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 20

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "a", "answer": "b"}) + "\n" + json.dumps({"prompt": "c"}) + "\n")
    with pytest.raises(FtlabError, match=r"bad.jsonl:2: missing field 'answer'"):
        build_task(compose("task=capitalization", f"task.path={bad}").task).splits(0)
