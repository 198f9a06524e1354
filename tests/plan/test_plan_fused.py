"""The planner's view of hydra/launcher=fused: groups, memory shares beside one base, K per device."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from test_plan import FACTS, _prior

from ftlab.plan.fused import (
    SAFETY_FACTOR,
    fused_groups,
    fused_markdown,
    fused_seconds,
    group_memory,
    groups_within_device,
)
from ftlab.plan.options import PlanOptions
from ftlab.plan.planner import make_plan, run_facts, run_memory
from ftlab.preflight.compose import compose_run

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


def test_fused_time_is_one_step_of_the_summed_batch_of_the_trials_still_in_the_group():
    # priors of one setup at batch 8 (1.0 s/step) and 16 (1.5 s/step): s/step = 0.5 + 0.0625 x samples
    priors = [_prior(8, 100.0, time_s=100.0), _prior(16, 100.0, time_s=150.0)]
    secs, basis = fused_seconds([FACTS, FACTS, FACTS], [10, 10, 5], priors)
    assert secs == pytest.approx(5 * 2.0 + 5 * 1.5)  # 3 trials x 8 for 5 steps, then 2 x 8 for 5 more
    assert basis == "exact/fit"  # batch 16 was measured, batch 24 is on the fitted line
    assert fused_seconds([FACTS], [10], [])[0] is None  # no prior: no basis, as for a separate run


def test_plan_prints_fused_against_separate_time():
    priors = [_prior(8, 100.0, time_s=100.0), _prior(16, 100.0, time_s=150.0)]
    runs = [_run(i, steps=10) for i in range(2)]
    (group,), _ = fused_groups(runs, [], priors)
    assert group.separate_s == pytest.approx(2 * 10 * 1.0) and group.fused_s == pytest.approx(10 * 1.5)
    text = "\n".join(fused_markdown(runs, [], priors))
    assert "| 20 | 15 | 0.75 (exact) |" in text


def test_launcher_group_size_defaults_to_and_is_capped_by_k_per_device():
    cfgs = [compose_run(["model.init_seed=0", "adapter=lora", "adapter.r=4", f"seed={s}", "hardware=gpu"])
            for s in range(5)]
    memories = [run_memory(c, run_facts(c), [], SAFETY_FACTOR) for c in cfgs]
    gp = group_memory(cfgs, memories)
    for c in cfgs:  # room for 2.5 trials beside the base: K = 2
        c.hardware.memory_gb = (gp.base_mb + 2.5 * gp.shares_mb[0]) / SAFETY_FACTOR / 1024
    plan, notes = groups_within_device(cfgs, None, memories)
    assert plan.groups == [[0, 1], [2, 3]] and notes == []
    assert plan.alone[4].startswith("the last job of its group: K=2 trials fit one device (planner: base")
    plan, notes = groups_within_device(cfgs, 4, memories)
    assert plan.groups == [[0, 1], [2, 3]]
    assert notes == [notes[0]] and notes[0].startswith("hydra.launcher.group_size=4 clipped to 2: K=2 trials fit")
    assert groups_within_device(cfgs, 2, memories)[1] == []  # within K: as asked, no line
    for c in cfgs:  # hardware.memory_gb unknown: every job that can share, or as asked
        c.hardware.memory_gb = None
    assert groups_within_device(cfgs, None, memories)[0].groups == [[0, 1, 2, 3, 4]]
    assert groups_within_device(cfgs, 3, memories)[0].groups == [[0, 1, 2], [3, 4]]


def _run(index: int, steps: int) -> SimpleNamespace:
    """A planned LoRA run on the priors' setup (batch 8, 1.0 s/step)."""
    cfg = compose_run(["model.init_seed=0", "adapter=lora", f"seed={index}"])
    memory = run_memory(cfg, run_facts(cfg), [], SAFETY_FACTOR)
    return SimpleNamespace(index=index, name=f"r{index}", cfg=cfg, control=False, memory=memory, facts=FACTS,
                           steps=steps, time=SimpleNamespace(sec_per_step=1.0))
