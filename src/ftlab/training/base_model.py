"""Phase one of the two-phase pattern: continued pre-training of the base model on a corpus.

A randomly initialised tiny model knows nothing, so a control run cannot be beaten meaningfully;
a short pre-training on the task's corpus (a different format than the task's prompts) gives a
base model that knows the content but not the task. The result is a plain HF model: the reuse
layer can cache it and share it across every fine-tuning run of a sweep.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import lightning as L
from torch import nn

from ftlab.adapters.full import FullFineTuning
from ftlab.data.datamodule import TaskDataModule
from ftlab.training.module import FtlabModule
from ftlab.training.trainer import build_trainer


def base_schedule(base_cfg: Any) -> SimpleNamespace:
    return SimpleNamespace(name="cosine", lr=float(base_cfg.lr), warmup_steps=int(base_cfg.warmup_steps),
                           min_lr_ratio=0.1, stages=None)


def pretrain_base(cfg: Any, model: nn.Module, tokenizer) -> nn.Module:
    """Train every weight of ``model`` for ``base.steps`` steps on the task corpus, in place."""
    base = cfg.base
    L.seed_everything(cfg.seed if base.seed is None else base.seed, workers=True, verbose=False)
    adapted = FullFineTuning(model, None, cfg)
    schedule = base_schedule(base)
    module = FtlabModule(adapted, cfg, lr=base.lr, schedule=schedule, max_steps=base.steps)
    dm = TaskDataModule(cfg, tokenizer, corpus=True)
    trainer = build_trainer(cfg, max_steps=base.steps, callbacks=[], validate=False, accumulate=1,
                            progress_label="base")
    trainer.fit(module, datamodule=dm)
    return frozen(model)


def frozen(model: nn.Module) -> nn.Module:
    """A base model as fine-tuning receives it, built or loaded from the cache: eval mode, no grads."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
