"""Tokenized train/val data as a cached step of the plan (``data`` in :mod:`ftlab.reuse.steps`).

The artifact is one directory of numpy arrays per split: ``<split>_ids.npy`` and
``<split>_labels.npy`` (int32, every example's tokens one after another) and
``<split>_offsets.npy`` (int64, where each example starts; one more than examples). A run reads
them memory-mapped, so a large set is tokenized once per sweep and its pages are shared by every
process on the node instead of being held as Python lists per process. No pickles.

API (what a launcher that runs several trials in one process reuses): :func:`tokenized_data`
``(cfg, tokenizer, splits, runner)`` -> ``{"train": TokenizedSplit, "val": TokenizedSplit}``,
each a sequence of :class:`~ftlab.data.encoding.Encoded` (token ids and loss labels).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from ftlab.artifacts.manifest import content_fingerprint
from ftlab.core.errors import FtlabError
from ftlab.data.checks import data_facts
from ftlab.data.encoding import Encoded, encode
from ftlab.data.task_base import Splits

SPLITS = ("train", "val")


@dataclass(frozen=True)
class TokenizedSplit(Sequence):
    """Examples stored back to back: example ``i`` is ``ids[offsets[i]:offsets[i + 1]]``."""

    ids: np.ndarray
    labels: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return Encoded(self.ids[a:b].tolist(), self.labels[a:b].tolist())

    @property
    def lengths(self) -> list[int]:
        return np.diff(self.offsets).tolist()


def build_split(encoded: Iterable[Encoded]) -> TokenizedSplit:
    ids: list[int] = []
    labels: list[int] = []
    offsets = [0]
    for e in encoded:
        ids += e.input_ids
        labels += e.labels
        offsets.append(len(ids))
    return TokenizedSplit(np.asarray(ids, dtype=np.int32), np.asarray(labels, dtype=np.int32),
                          np.asarray(offsets, dtype=np.int64))


def tokenize(splits: Splits, tokenizer, max_length: int) -> dict[str, TokenizedSplit]:
    """Encode the train and val splits (rendered conversations by their loss spans)."""
    return {name: build_split(encode(tokenizer, ex, max_length) for ex in getattr(splits, name)) for name in SPLITS}


def write_tokenized(data: dict[str, TokenizedSplit], artifact: Path) -> None:
    for name, split in data.items():
        for part in ("ids", "labels", "offsets"):
            np.save(artifact / f"{name}_{part}.npy", getattr(split, part))


def read_tokenized(artifact: Path) -> dict[str, TokenizedSplit]:
    """The artifact's splits, memory-mapped (read-only)."""
    return {name: TokenizedSplit(*(np.load(artifact / f"{name}_{part}.npy", mmap_mode="r")
                                   for part in ("ids", "labels", "offsets"))) for name in SPLITS}


def check_unchanged(step_config: dict[str, Any], cfg: Any) -> None:
    """A source file that changed since the plan computed the step's key would be cached under the
    old content's key: refuse it."""
    planned = [(cfg.task.path, step_config.get("derived.task_file"))]
    planned += [(src.get("path"), src.get("derived.file")) for src in step_config.get("derived.sources") or []]
    for path, digest in planned:
        now = content_fingerprint(path)
        if path and digest != now:
            raise FtlabError(f"{path}: the data file changed between the plan and the run ({digest} -> {now}); "
                             "run again to plan with its new content")


def tokenized_data(cfg: Any, tokenizer, splits: Splits, runner=None) -> dict[str, TokenizedSplit]:
    """The run's tokenized train/val data: from the reuse store when the plan has a cached ``data``
    step (built once by the first run that needs it), else tokenized in memory."""
    max_length = int(cfg.task.max_length)
    step = runner.steps.data if runner is not None else None
    if step is None:
        return tokenize(splits, tokenizer, max_length)
    check_unchanged(step.config, cfg)
    return runner.run(step, lambda: tokenize(splits, tokenizer, max_length), write_tokenized, read_tokenized)


def tokenized_bytes(cfg: Any) -> int:
    """Bytes of the ``data`` step's artifact (:mod:`ftlab.data.tokenized`): int32 ids and labels
    per token, an int64 offset per example, for train and val (val scaled from train's mean)."""
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    lengths = data_facts(cfg).lengths
    share = float(cfg.task.val_fraction) / max(1e-9, 1.0 - float(cfg.task.val_fraction) - float(cfg.task.test_fraction))
    return int((sum(lengths) * 8 + len(lengths) * 8) * (1.0 + share))
