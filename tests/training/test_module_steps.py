"""The LightningModule is the one place a fit's step count comes from: ``train.max_steps``,
``train.max_epochs`` x steps per epoch of the run's train items, or a stage schedule's total; the
recipe builds its Trainer with the module's count, and a fused trial's module counts alike."""

from __future__ import annotations

import pytest
from torch import nn

from conftest import compose
from ftlab.adapters.base import AdaptedModel
from ftlab.training.module import FtlabModule


@pytest.mark.parametrize(("overrides", "items", "steps"), [
    (["train.max_steps=7"], 100, 7),
    (["train.max_epochs=3", "train.max_steps=null", "train.batch_size=4"], 10, 6),  # 10 // 4 = 2 steps per epoch
    (["schedule=stages", "schedule.stages=[{iters:4,lr:1e-3},{iters:3,lr:1e-4}]"], 100, 7),
])
def test_module_counts_the_steps_of_its_fit(overrides, items, steps):
    cfg = compose(*overrides)
    adapted = AdaptedModel(nn.Linear(2, 2), cfg.adapter, cfg)
    assert FtlabModule(adapted, cfg, train_items=items).max_steps == steps
    assert FtlabModule(adapted, cfg, max_steps=5).max_steps == (7 if "schedule=stages" in overrides else 5)
