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
