"""Build the parts of one tiny run in-process (config, datamodule, LightningModule) and fit them
with a real Lightning Trainer and only the callbacks a test names: direct tests of callbacks and
of the datamodule without going through the recipe (``ftlab.recipe.run``)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from conftest import compose
from ftlab.adapters.registry import get_adapter
from ftlab.data.datamodule import TaskDataModule
from ftlab.models import build_model, build_tokenizer
from ftlab.training.module import FtlabModule
from ftlab.training.trainer import build_trainer

#: 80 examples -> 64 train (8 batches of 8), 8 val, 8 test; short sequences, quick generation.
SMALL = [
    "task.num_examples=80",
    "task.max_length=32",
    "train.batch_size=8",
    "train.eval_batch_size=16",
    "task.eval_examples=4",
    "task.max_new_tokens=4",
    "train.log_every_n_steps=2",
]


class RecordingModule(FtlabModule):
    """:class:`FtlabModule` that records what each training step computed (the task loss of every
    micro-batch, the learning rate the step ran at), independently of the callbacks under test."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen_losses: list[float] = []
        self.seen_lrs: list[float] = []

    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        self.seen_losses.append(float(self.pending_losses[-1]))
        self.seen_lrs.append(float(self.optimizers().param_groups[0]["lr"]))
        return out


def tiny_parts(*overrides: str, module_cls: type[FtlabModule] = RecordingModule):
    """``(cfg, datamodule, module)`` of a tiny run composed from ``SMALL + overrides``."""
    cfg = compose(*SMALL, *overrides)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    tokenizer = build_tokenizer(cfg.model)
    model = build_model(cfg.model, tokenizer, seed=cfg.seed)
    adapted = get_adapter(cfg.adapter.name).build(model, cfg.adapter, cfg)
    dm = TaskDataModule(cfg, tokenizer)
    dm.setup()
    return cfg, dm, module_cls(adapted, cfg)


def tiny_fit(cfg, dm, module, callbacks: list, max_steps: int, run_dir: Path | None = None,
             ckpt: Path | None = None) -> L.Trainer:
    """Fit ``module`` for ``max_steps`` optimiser steps with ``callbacks`` (from ``ckpt`` if given)."""
    torch.manual_seed(cfg.seed)
    trainer = build_trainer(cfg, max_steps=max_steps, callbacks=callbacks, logger=False, run_dir=run_dir)
    trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt) if ckpt else None, weights_only=True)
    return trainer
