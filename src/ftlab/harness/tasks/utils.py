"""``process_docs`` of ftlab's harness task configs (loaded by lm-eval through ``!function``).

HellaSwag uses lm-eval's own preprocessing; BoolQ only maps the original release's ``answer``
(bool) onto the ``label`` (0/1) that lm-eval's SuperGLUE config reads, so every published BoolQ
layout scores through the same config.
"""

from __future__ import annotations

import datasets
from lm_eval.tasks.hellaswag.utils import process_docs as hellaswag_docs


def _boolq_label(doc: dict) -> dict:
    answer = doc.get("answer")
    return {"label": int(answer) if answer is not None else int(doc["label"])}


def boolq_docs(dataset: datasets.Dataset) -> datasets.Dataset:
    return dataset.map(_boolq_label)


__all__ = ["boolq_docs", "hellaswag_docs"]
