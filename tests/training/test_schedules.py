"""Learning-rate schedules are pure functions of the step; stage boundaries are exact."""

from __future__ import annotations

import math

import pytest

from conftest import compose
from ftlab.training.schedules import lr_at, stage_at, stage_table, total_steps


def test_stage_boundaries_exact() -> None:
    s = compose("schedule=stages", "schedule.stages=[{iters:3,lr:1e-3},{iters:2,lr:5e-4},{iters:4,lr:1e-4}]").schedule
    lrs = [lr_at(step, s, max_steps=0) for step in range(9)]
    assert lrs == [1e-3] * 3 + [5e-4] * 2 + [1e-4] * 4
    assert total_steps(s, max_steps=999) == 9
    assert [st.start for st in stage_table(s)] == [0, 3, 5]
    assert stage_at(stage_table(s), 4).index == 1 and stage_at(stage_table(s), 5).index == 2


def test_warmup_then_cosine_and_linear() -> None:
    cos = compose("schedule=cosine", "schedule.lr=1.0", "schedule.warmup_steps=4", "schedule.min_lr_ratio=0.1").schedule
    assert [lr_at(i, cos, 14) for i in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lr_at(4, cos, 14) == pytest.approx(1.0)
    assert lr_at(9, cos, 14) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(14, cos, 14) == pytest.approx(0.1)
    lin = compose("schedule=linear", "schedule.lr=2.0", "schedule.warmup_steps=0").schedule
    assert [lr_at(i, lin, 4) for i in range(5)] == pytest.approx([2.0, 1.5, 1.0, 0.5, 0.0])
    const = compose("schedule=constant", "schedule.lr=0.3").schedule
    assert {lr_at(i, const, 10) for i in range(10)} == {0.3}
