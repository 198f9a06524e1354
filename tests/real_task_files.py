"""Generators of small files in the published schemas of BoolQ, HellaSwag and GSM8K.

The content is made up here (pseudo-words, generated arithmetic), never copied from the datasets;
only the field names and layouts follow the public releases.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd


def _words(rng: random.Random, n: int) -> str:
    return " ".join("".join(rng.choice("abcdefghijklmnop") for _ in range(rng.randint(2, 6))) for _ in range(n))


def boolq_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"question": f"is {_words(rng, 3)}", "title": _words(rng, 2), "answer": rng.random() < 0.5,
             "passage": _words(rng, rng.randint(5, 12)) + "."} for _ in range(n)]


def hellaswag_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        ctx_a, ctx_b = _words(rng, 4) + ".", _words(rng, 2)
        rows.append({"ind": i, "activity_label": _words(rng, 1).title(), "ctx_a": ctx_a, "ctx_b": ctx_b,
                     "ctx": f"{ctx_a} {ctx_b} [step]", "split": "val", "split_type": "indomain",
                     "label": rng.randrange(4), "endings": [_words(rng, rng.randint(1, 5)) + "." for _ in range(4)],
                     "source_id": f"gen~{i}"})
    return rows


def gsm8k_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        rows.append({"question": f"A box holds {a} pens and {b} more are added. How many pens are there?",
                     "answer": f"There are {a}+{b}=<<{a}+{b}={a + b}>>{a + b} pens.\n#### {a + b}"})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_parquet(path)
    return path


# -- lm-eval tasks by name (eval.benchmarks): rows in the layouts of the public releases --------

def piqa_rows(n: int, seed: int = 0) -> list[dict]:
    """PIQA as its HF mirror publishes it: goal, sol1, sol2, label (0/1)."""
    rng = random.Random(seed)
    return [{"goal": f"how to {_words(rng, 3)}", "sol1": _words(rng, rng.randint(2, 6)),
             "sol2": _words(rng, rng.randint(2, 6)), "label": rng.randrange(2)} for _ in range(n)]


def arc_rows(n: int, seed: int = 0) -> list[dict]:
    """ARC (allenai/ai2_arc): id, question, choices {text, label}, answerKey (letters or digits)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        labels = ["A", "B", "C", "D"] if i % 5 else ["1", "2", "3", "4"]
        rows.append({"id": f"gen_{i}", "question": f"which {_words(rng, 4)}?",
                     "choices": {"text": [_words(rng, rng.randint(1, 3)) for _ in labels], "label": labels},
                     "answerKey": rng.choice(labels)})
    return rows


def winogrande_rows(n: int, seed: int = 0, labelled: bool = True) -> list[dict]:
    """WinoGrande's release (dev.jsonl): qID, sentence with one '_', option1, option2, answer '1'/'2'
    (test.jsonl has no answer)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        row = {"qID": f"gen-{i}", "sentence": f"{_words(rng, 3)} _ {_words(rng, 4)}.",
               "option1": _words(rng, 1), "option2": _words(rng, 1)}
        if labelled:
            row["answer"] = rng.choice(["1", "2"])
        rows.append(row)
    return rows


def wikitext_rows(n: int, seed: int = 0) -> list[dict]:
    """WikiText-2 document level (EleutherAI/wikitext_document_level): one 'page' per row, with the
    release's tokenized markup ('@-@', ' , ', '= = heading = =')."""
    rng = random.Random(seed)
    pages = []
    for _ in range(n):
        body = " , ".join(_words(rng, rng.randint(4, 9)) for _ in range(rng.randint(8, 20)))
        pages.append({"page": f" = {_words(rng, 2)} = \n {body} @-@ {rng.randint(2, 99)} . \n"})
    return pages
