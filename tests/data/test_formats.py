"""task=instruct: every format x file type gives the token ids and loss mask of a computation
written here (the byte tokenizer maps byte b to id b + 3, EOS is 1); wrong data ends in one line
naming the file, the row and the key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import pandas as pd
import pytest

from conftest import compose
from ftlab.core.errors import FtlabError
from ftlab.data.chat import render_examples
from ftlab.data.checks import data_facts
from ftlab.data.encoding import IGNORE_INDEX, encode
from ftlab.data.tasks import build_task, split_examples
from ftlab.models import build_tokenizer
from ftlab.preflight.launch import preflight
from ftlab.recipe.run import summary_line

EOS = 1

ALPACA_WITH_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                     "context. Write a response that appropriately completes the request.\n\n### Instruction:\n"
                     "{i}\n\n### Input:\n{x}\n\n### Response:\n")
ALPACA_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately completes "
                   "the request.\n\n### Instruction:\n{i}\n\n### Response:\n")


def byte_ids(text: str) -> list[int]:
    return [b + 3 for b in text.encode("utf-8")]


def rows_for(fmt: str) -> list[dict]:
    words = ["alpha", "béta", "gamma", "delta", "eps", "zeta"]
    if fmt == "prompt_answer":
        return [{"prompt": f"Say {w}:", "answer": f" {w.upper()}"} for w in words]
    if fmt == "alpaca":
        return [{"instruction": f"Upper-case {w}", "input": w if i % 2 else "", "output": w.upper()}
                for i, w in enumerate(words)]
    if fmt == "messages":
        return [{"messages": [{"role": "system", "content": "Be short."}, {"role": "user", "content": f"hi {w}"},
                              {"role": "assistant", "content": f"{w}!"}, {"role": "user", "content": "again"},
                              {"role": "assistant", "content": w.upper()}]} for w in words]
    return [{"conversations": [{"from": "human", "value": f"hi {w}"}, {"from": "gpt", "value": w.upper()}]}
            for w in words]


def write(rows: list[dict], kind: str, dest: Path) -> Path:
    """``rows`` in one of the file types task.path reads."""
    if kind == "jsonl":
        path = dest / "d.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif kind == "json":
        path = dest / "d.json"
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif kind == "csv":
        path = dest / "d.csv"
        pd.DataFrame(rows).to_csv(path, index=False)
    elif kind == "parquet":
        path = dest / "d.parquet"
        pd.DataFrame(rows).to_parquet(path)
    else:
        saved = dest / "saved"
        datasets.Dataset.from_list(rows).save_to_disk(str(saved))
        path = saved
        if kind == "arrow":
            path = dest / "d.arrow"
            shutil.copy(next(saved.glob("*.arrow")), path)
    return path


def expected(fmt: str, row: dict) -> tuple[list[int], list[int]]:
    """Token ids and labels computed by hand from the row (byte tokenizer, built-in chat template)."""
    if fmt in ("prompt_answer", "alpaca"):
        if fmt == "alpaca":
            template = ALPACA_WITH_INPUT if row["input"] else ALPACA_NO_INPUT
            prompt, answer = template.format(i=row["instruction"], x=row["input"]), row["output"]
        else:
            prompt, answer = row["prompt"], row["answer"]
        p, a = byte_ids(prompt), byte_ids(answer) + [EOS]
        return p + a, [IGNORE_INDEX] * len(p) + a
    turns = ([(m["role"], m["content"]) for m in row["messages"]] if fmt == "messages"
             else [({"human": "user", "gpt": "assistant"}[m["from"]], m["value"]) for m in row["conversations"]])
    ids: list[int] = []
    labels: list[int] = []
    for role, content in turns:
        head = byte_ids(f"<|{role}|>\n")
        ids += head
        labels += [IGNORE_INDEX] * len(head)
        body = byte_ids(content) + ([EOS] if role == "assistant" else byte_ids("\n"))
        ids += body
        labels += body if role == "assistant" else [IGNORE_INDEX] * len(body)
    return ids, labels


KINDS = {"prompt_answer": ["jsonl", "json", "csv", "parquet", "arrow", "dir"],
         "alpaca": ["jsonl", "json", "csv", "parquet", "arrow", "dir"],
         "messages": ["jsonl", "json", "parquet", "arrow", "dir"],  # CSV has no nested lists
         "sharegpt": ["jsonl", "json", "parquet", "arrow", "dir"]}
CASES = [(fmt, kind) for fmt, kinds in KINDS.items() for kind in kinds]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(compose().model)


@pytest.mark.parametrize(("fmt", "kind"), CASES, ids=[f"{f}-{k}" for f, k in CASES])
def test_format_and_file_type_give_the_hand_computed_tokens(fmt: str, kind: str, tmp_path: Path, tok) -> None:
    rows = rows_for(fmt)
    path = write(rows, kind, tmp_path)
    cfg = compose("task=instruct", f"task.path={path}", f"task.format={fmt}", "task.max_length=512")
    examples = render_examples(build_task(cfg.task).examples(0), tok, cfg.task, str(path))
    assert len(examples) == len(rows)
    for row, ex in zip(rows, examples):
        enc = encode(tok, ex, 512)
        want_ids, want_labels = expected(fmt, row)
        assert enc.input_ids == want_ids
        assert enc.labels == want_labels


def test_columns_map_the_files_fields(tmp_path: Path, tok) -> None:
    path = tmp_path / "metamath.jsonl"
    path.write_text(json.dumps({"query": "2+2?", "response": " 4", "type": "x"}) + "\n", encoding="utf-8")
    cfg = compose("task=instruct", f"task.path={path}", "task.format=prompt_answer",
                  "task.columns={prompt: query, answer: response}")
    [ex] = build_task(cfg.task).examples(0)
    assert (ex.prompt, ex.answer) == ("2+2?", " 4")


def test_prompt_template_overrides_the_alpaca_prompt(tmp_path: Path) -> None:
    path = write(rows_for("alpaca"), "jsonl", tmp_path)
    cfg = compose("task=instruct", f"task.path={path}", "task.format=alpaca",
                  "task.prompt_template='Q: {instruction} [{input}] A:'")
    ex = build_task(cfg.task).examples(0)[1]
    assert ex.prompt == "Q: Upper-case béta [béta] A:" and ex.answer == "BÉTA"


def _error(tmp_path: Path, rows, *overrides: str, kind: str = "jsonl") -> str:
    path = write(rows, kind, tmp_path)
    with pytest.raises(FtlabError) as err:
        preflight(["task=instruct", f"task.path={path}", "train.batch_size=1", *overrides], multirun=False)
    line = str(err.value)
    assert "\n" not in line
    return line


def test_missing_column_lists_the_columns_found(tmp_path: Path) -> None:
    line = _error(tmp_path, [{"question": "a", "response": "b"}] * 5, "task.format=alpaca")
    assert "d.jsonl" in line and "'instruction'" in line and "['question', 'response']" in line


def test_null_field_names_file_row_and_key(tmp_path: Path) -> None:
    rows = rows_for("alpaca")
    rows[2]["output"] = None
    line = _error(tmp_path, rows, "task.format=alpaca", kind="parquet")
    assert "d.parquet: row 3" in line and "'output'=None" in line


def test_unknown_role_and_missing_assistant(tmp_path: Path) -> None:
    rows = rows_for("messages")
    rows[4]["messages"][1]["role"] = "robot"
    line = _error(tmp_path, rows, "task.format=messages")
    assert "row 5" in line and "messages[1].role='robot'" in line and "'assistant'" in line
    rows = rows_for("sharegpt")
    rows[1]["conversations"] = [{"from": "human", "value": "hi"}]
    line = _error(tmp_path / "..", rows, "task.format=sharegpt")
    assert "row 2" in line and "'conversations'" in line and "no assistant turn" in line


def test_bad_format_keys(tmp_path: Path) -> None:
    rows = rows_for("alpaca")
    assert "task.format='chatml'" in _error(tmp_path, rows, "task.format=chatml")
    line = _error(tmp_path, rows, "task.format=alpaca", "task.columns={answer: x}")
    assert "task.columns.answer" in line and "'instruction'" in line
    line = _error(tmp_path, rows, "task.format=alpaca", "task.prompt_template='{question}'")
    assert "task.prompt_template" in line and "{instruction}" in line
    line = _error(tmp_path, rows, "task.format=alpaca", "task.chat_template=/x.jinja")
    assert "task.chat_template" in line and "messages|sharegpt" in line
    with pytest.raises(FtlabError, match="task.format='alpaca'.*task=instruct only"):
        preflight(["task=capitalization", "task.format=alpaca"], multirun=False)


def test_truncation_report_counts_examples_tokens_and_empty_targets(tmp_path: Path) -> None:
    rows = [{"prompt": "p" * n, "answer": "a" * m} for n, m in [(5, 3), (30, 3), (10, 15), (2, 40)] * 5]
    path = write(rows, "jsonl", tmp_path)
    cfg = compose("task=instruct", f"task.path={path}", "task.format=prompt_answer", "task.max_length=20")
    facts = data_facts(cfg)
    splits = split_examples(build_task(cfg.task).examples(0), 0.1, 0.1, int(cfg.seed))

    def counts(split: str, prefix: str) -> dict[str, int]:
        rows = [(len(ex.prompt), len(ex.answer)) for ex in getattr(splits, split)]
        full = [p + a + 1 for p, a in rows]  # + EOS, one byte token per character
        return {f"{prefix}examples": len(rows), f"{prefix}truncated_examples": sum(n > 20 for n in full),
                f"{prefix}truncated_tokens": sum(max(0, n - 20) for n in full),
                f"{prefix}no_target_examples": sum(a + 1 >= 20 for _, a in rows)}

    train = counts("train", "data_")
    train["data_train_examples"] = train.pop("data_examples")
    expected = {**train, **counts("val", "data_val_"), **counts("test", "data_test_")}
    assert facts.report() == expected
    assert expected["data_val_truncated_examples"] and expected["data_test_truncated_examples"]  # each split has cuts
    line = summary_line({"eval_exact_match": 0.5, **facts.report()}, "eval_exact_match", Path("/r"))
    assert (f"task.max_length cut {facts.truncated} of {facts.train} train examples "
            f"({facts.cut_tokens} tokens; {facts.answer_cut} left with no target token), "
            f"{expected['data_val_truncated_examples']} of 2 val examples "
            f"({expected['data_val_truncated_tokens']} tokens; {expected['data_val_no_target_examples']} left "
            f"with no target token); {expected['data_test_truncated_examples']} of 2 test examples are longer "
            "than task.max_length; outputs in /r") in line
    only_val = {**facts.report(), "data_truncated_examples": 0}
    line = summary_line({"train_steps": 3, **only_val}, "eval_exact_match", Path("/r"))
    assert line.startswith("trained 3 steps, no evaluation (eval.enabled=false); task.max_length cut "
                           f"{expected['data_val_truncated_examples']} of 2 val examples")


def test_chat_cut_before_any_assistant_token_is_refused(tmp_path: Path) -> None:
    line = _error(tmp_path, rows_for("messages"), "task.format=messages", "task.max_length=8")
    assert "task.max_length=8" in line and "cut before their first assistant token" in line
