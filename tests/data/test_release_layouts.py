"""PIQA's labels files and ARC's nested rows are rewritten to the layout lm-eval reads; the
rewritten file's content (the evaluation cache's data digest) follows the labels."""

from __future__ import annotations

import json

import pytest

from ftlab.core.errors import FtlabError
from ftlab.data.benchmark_files import resolve
from ftlab.data.release_layouts import normalized
from real_task_files import write_jsonl

PIQA = [{"goal": "g1", "sol1": "a", "sol2": "b"}, {"goal": "g2", "sol1": "c", "sol2": "d"}]


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in open(path)]


def test_piqa_labels_joined_and_the_digest_follows_them(tmp_path):
    rows = write_jsonl(tmp_path / "valid.jsonl", PIQA)
    labels = tmp_path / "valid-labels.lst"
    labels.write_text("1\n0\n")
    first = normalized(rows, "k")
    assert [r["label"] for r in _rows(first)] == [1, 0] and _rows(first)[0]["goal"] == "g1"
    assert normalized(rows, "k") == first  # content-addressed: written once
    labels.write_text("0\n0\n")
    assert normalized(rows, "k") != first and [r["label"] for r in _rows(normalized(rows, "k"))] == [0, 0]
    (tmp_path / "other").mkdir()
    plain = write_jsonl(tmp_path / "other" / "valid.jsonl", PIQA)
    assert normalized(plain, "k") == plain  # no labels file, flat rows: read as they are


def test_arc_nested_rows_flattened_and_release_names_are_splits(tmp_path):
    nested = {"id": "q1", "question": {"stem": "why?", "choices": [{"text": "x", "label": "A"},
                                                                  {"text": "y", "label": "B"}]}, "answerKey": "B"}
    release = tmp_path / "ARC-Challenge"
    release.mkdir()
    write_jsonl(release / "ARC-Challenge-Test.jsonl", [nested])
    write_jsonl(release / "ARC-Challenge-Dev.jsonl", [nested])
    data = resolve("eval.data.arc_challenge", str(release))
    assert sorted(data.files) == ["test", "validation"]
    (row,) = _rows(data.files["test"][0])
    assert row == {"id": "q1", "question": "why?", "choices": {"text": ["x", "y"], "label": ["A", "B"]},
                   "answerKey": "B"}


@pytest.mark.parametrize("labels, rows, needle", [
    ("1\n", PIQA, "has 1 labels for the 2 rows"),
    ("1\nyes\n", PIQA, "valid-labels.lst:2: label 'yes' is not an integer"),
])
def test_bad_labels_one_line(tmp_path, labels, rows, needle):
    write_jsonl(tmp_path / "valid.jsonl", rows)
    (tmp_path / "valid-labels.lst").write_text(labels)
    with pytest.raises(FtlabError) as err:
        resolve("eval.data.piqa", str(tmp_path))
    assert needle in str(err.value) and "eval.data.piqa" in str(err.value) and "\n" not in str(err.value)


def test_mixed_nested_rows_name_the_line(tmp_path):
    good = {"question": {"stem": "s", "choices": [{"text": "x", "label": "A"}]}, "answerKey": "A"}
    path = write_jsonl(tmp_path / "ARC-Easy-Test.jsonl", [good, {"question": "flat", "answerKey": "A"}])
    with pytest.raises(FtlabError, match=r"ARC-Easy-Test.jsonl:2: 'question' is not"):
        normalized(path, "eval.data.arc_easy")
