"""Calibration batches: the first ``calibration.batches × calibration.batch_size`` training
examples of the task, in the run's seeded split order.

They come straight from the task registry and the encoder (no DataModule), so mask computation
is the same inside a training run, in ``python -m ftlab.masks`` and in a cache that computes a
mask once for a whole sweep: a pure function of (task config, seed, tokenizer).
"""

from __future__ import annotations

from typing import Any

import torch

from ftlab.core.errors import ConfigError
from ftlab.data.encoding import collate, encode_example
from ftlab.data.tasks import build_task


def calibration_batches(cfg: Any, tokenizer, cal: Any = None, key: str = "sparsity.calibration") -> list[dict[str, torch.Tensor]]:
    """``cal``/``key``: another ``batches``/``batch_size`` section than the pruning's (a LoRA init's
    ``adapter.calibration``), named so in the error line."""
    cal = cal if cal is not None else cfg.sparsity.calibration
    train = build_task(cfg.task).splits(cfg.seed).train
    want = cal.batches * cal.batch_size
    if len(train) < want:
        raise ConfigError(f"{key}.batches", cal.batches,
                          f"at most {len(train) // cal.batch_size} batches of {cal.batch_size}: the task's "
                          f"train split has {len(train)} examples")
    enc = [encode_example(tokenizer, e.prompt, e.answer, cfg.task.max_length) for e in train[:want]]
    return [collate(enc[i:i + cal.batch_size], tokenizer.pad_token_id) for i in range(0, want, cal.batch_size)]


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}
