"""The model's embedding rows against the tokenizer's ids: refused up front, or resized when asked.

A tokenizer with more ids than the model has embedding rows indexes past the table (an index
error in the first forward, or on a GPU a device-side assert). A model with more rows than the
byte tokenizer has ids generates ids that tokenizer cannot decode (``bytes must be in range(0,
256)`` at evaluation, after the whole training). Both are known before anything trains: from the
directory's ``config.json`` in the preflight, from the built model before training. A model with
more rows than a real tokenizer's ids is normal (Qwen2.5 pads 151,665 ids to 151,936 rows) and
kept. ``model.resize_embeddings=true`` resizes the model to the tokenizer instead, with
transformers' ``resize_token_embeddings`` (new rows initialised as transformers does: mean and
covariance of the old ones).
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from ftlab.core.errors import fail

log = logging.getLogger("ftlab")

#: the value of ``model.tokenizer`` whose ids are bytes (ftlab's files-free tokenizer)
BYTE = "byte"


def vocabulary_problem(rows: int, ids: int, tokenizer_kind: str) -> str | None:
    """Why ``rows`` embedding rows cannot serve a ``tokenizer_kind`` tokenizer of ``ids`` ids, or
    ``None`` when they can."""
    if rows < ids:
        return (f"a tokenizer whose {ids} ids fit the model's {rows} embedding rows (larger ids index past "
                "the embedding table)")
    if rows > ids and tokenizer_kind == BYTE:
        return (f"a tokenizer with the model's {rows} ids: the byte tokenizer has {ids} and cannot decode "
                "the other ids the model generates; use model.tokenizer=auto (the model's own tokenizer)")
    return None


def check_vocabulary(rows: int, ids: int, model_cfg: Any) -> None:
    """Refuse in one line (naming ``model.tokenizer``) a vocabulary mismatch, unless
    ``model.resize_embeddings`` asks to resize it."""
    if getattr(model_cfg, "resize_embeddings", False):
        return
    problem = vocabulary_problem(rows, ids, model_cfg.tokenizer)
    if problem:
        fail("model.tokenizer", model_cfg.tokenizer, f"{problem}; or model.resize_embeddings=true to resize the "
             f"model's embeddings to the tokenizer (model.name_or_path={model_cfg.name_or_path})")


def match_vocabulary(model: nn.Module, tokenizer, model_cfg: Any) -> nn.Module:
    """The built model, its embedding rows checked against ``tokenizer`` (or resized to it with
    ``model.resize_embeddings=true``; one line says so)."""
    rows, ids = model.get_input_embeddings().weight.shape[0], len(tokenizer)
    check_vocabulary(rows, ids, model_cfg)
    if rows != ids and getattr(model_cfg, "resize_embeddings", False):
        model.resize_token_embeddings(ids)
        log.warning("model.resize_embeddings=true: resized %s's embeddings from %d to the tokenizer's %d ids",
                    type(model).__name__, rows, ids)
    return model
