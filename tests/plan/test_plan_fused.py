"""The planner's view of hydra/launcher=fused: groups, memory shares beside one base, K per device."""

from __future__ import annotations

from ftlab.plan.fused import fused_groups, fused_markdown
from ftlab.plan.options import PlanOptions
from ftlab.plan.planner import make_plan

SWEEP = ["hydra/launcher=fused", "model.init_seed=0", "adapter=lora,dora", "adapter.r=4,8", "hardware=gpu",
         "hardware.memory_gb=1"]


def test_groups_shares_and_k_per_device():
    plan = make_plan(SWEEP, PlanOptions(prior_dirs=[]))
    groups, alone = fused_groups(plan.runs, plan.overrides)
    (group,) = groups
    assert [plan.runs[i].cfg.adapter.name for i in group.runs] == ["lora", "lora"]
    assert len(alone) == 2 and all("adapter=dora" in why for why in alone.values())
    assert group.fused_mb == group.base_mb + sum(group.shares_mb) > group.separate_mb
    assert group.shares_mb[1] > group.shares_mb[0] > 0  # r=8 trains more than r=4
    assert group.k_per_device == 2  # 1 GiB holds the tiny base and both trials
    group.device_mb = group.base_mb + group.shares_mb[0] * 1.5 / group.safety_factor  # room for one r=4 share
    assert group.k_per_device == 1
    text = "\n".join(fused_markdown(plan.runs, plan.overrides))
    assert "## Fused groups" in text and "runs alone: adapter=dora" in text
