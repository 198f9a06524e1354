"""How many optimiser steps a run takes: ``train.max_steps``, or ``train.max_epochs`` passes over
the train split.

An epoch is one pass over what the train loader serves: the examples, or (``train.packing``) the
packed rows, which hold every example once. Each rank gets ``items // world`` of them, batched with
``drop_last`` (:class:`~ftlab.data.datamodule.ResumableSampler`), and Lightning steps the optimiser
every ``accumulate_grad_batches`` batches and at each epoch's last batch, so a pass takes
``ceil(batches / accumulate)`` steps. Running ``max_epochs x`` that many steps makes exactly
``max_epochs`` passes, with the checkpoint names, schedule and resume of a step-counted run.
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ftlab.core.errors import ConfigError
from ftlab.data.checks import data_facts, world_size
from ftlab.data.packing import pack_length, pack_rows


def epoch_items(cfg: Any, lengths: list[int] | tuple[int, ...]) -> int:
    """Items of one epoch: train examples, or packed rows of their token ``lengths``."""
    if cfg.train.get("packing"):
        return len(pack_rows(list(lengths), pack_length(cfg.train, cfg.task)))
    return len(lengths)


def steps_per_epoch(cfg: Any, items: int) -> int:
    batches = items // world_size(cfg) // int(cfg.train.batch_size)
    return math.ceil(batches / int(cfg.train.accumulate_grad_batches))


def train_steps(cfg: Any, items: int) -> int:
    """Optimiser steps of the run over ``items`` train items per epoch."""
    epochs = cfg.train.get("max_epochs")
    if epochs is None:
        return int(cfg.train.max_steps)
    per_epoch = steps_per_epoch(cfg, items)
    if per_epoch < 1:
        raise ConfigError("train.batch_size", int(cfg.train.batch_size),
                          f"at most {items // world_size(cfg)}: an epoch of {items} train items takes no step")
    return int(epochs) * per_epoch


def planned_steps(cfg: Any) -> int:
    """:func:`train_steps` before the run, from the data as the preflight measures it (read and
    tokenised once per task/model/seed); ``train.max_steps`` needs no data."""
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    if cfg.train.get("max_epochs") is None:
        return int(cfg.train.max_steps)
    return train_steps(cfg, epoch_items(cfg, data_facts(cfg).lengths))


def planned_steps_per_epoch(cfg: Any) -> int:
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    return steps_per_epoch(cfg, epoch_items(cfg, data_facts(cfg).lengths))

