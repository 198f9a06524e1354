"""Which jobs of a sweep share a fused group, and the one line for those that cannot."""

from __future__ import annotations

import pytest

from conftest import compose
from ftlab.core.errors import ConfigError
from ftlab.fused.grouping import plan_groups
from ftlab.fused.recipe import check_no_base_noise
from ftlab.recipe.run import prepare_model

BASE = ["model.init_seed=0", "task.num_examples=80"]


def test_jobs_sharing_base_and_data_group_others_run_alone_with_why():
    cfgs = [compose(*BASE, *o) for o in (
        ["adapter=lora", "adapter.r=4", "seed=1"],
        ["adapter=lora", "adapter.r=8", "seed=2", "schedule.lr=3e-3", "train.batch_size=4"],
        ["adapter=sora", "adapter.r=2", "seed=3", "train.max_steps=7"],
        ["adapter=dora"],
        ["adapter=lora", "task.max_length=48"],  # other tokenisation: its own (single-job) group
        ["adapter=lora", "train.accumulate_grad_batches=2"],
        ["adapter=lora", "model.init_seed=5"],  # another random base
        ["adapter=lora", "adapter.init=pissa"],  # rewrites the base the group shares
        ["adapter=lora", "+model.config.attention_dropout=0.1"],  # the base's own dropout
    )]
    plan = plan_groups(cfgs, group_size=8)
    assert plan.groups == [[0, 1, 2]]
    assert "adapter=dora is not a frozen base plus a low-rank update" in plan.alone[3]
    assert "no other job of the sweep shares" in plan.alone[4]
    assert plan.alone[5].startswith("train.accumulate_grad_batches=2")
    assert plan.alone[7].startswith("adapter.init=pissa is a step of its own (it rewrites the frozen base")
    assert plan.alone[8].startswith("the base model draws its own noise in training (attention_dropout=0.1)")
    assert set(plan.alone) == {3, 4, 5, 6, 7, 8}


def test_group_size_splits_groups_in_sweep_order():
    cfgs = [compose(*BASE, "adapter=lora", f"seed={s}") for s in range(5)]
    plan = plan_groups(cfgs, group_size=2)
    assert plan.groups == [[0, 1], [2, 3]]
    assert "group_size" in plan.alone[4]


def test_a_base_with_its_own_dropout_is_refused_by_the_group_in_one_line():
    """The launcher runs such jobs alone; any other caller of the recipe gets one line first."""
    cfg = compose(*BASE, "+model.config.attention_dropout=0.1")
    _, model = prepare_model(cfg)
    with pytest.raises(ConfigError, match=r"^model.config='attention_dropout=0.1' is invalid: 0 for fused trials"):
        check_no_base_noise(model)
    check_no_base_noise(prepare_model(compose(*BASE))[1])  # the tiny default: no noise
