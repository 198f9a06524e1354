"""Learning-rate schedules as pure functions of the optimiser step.

``lr_at(step)`` is the lr used for the update of step ``step`` (0-based). Stage boundaries are
exact: step ``s`` belongs to the first stage whose cumulative iters exceed ``s``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Stage:
    start: int  # first step of the stage
    iters: int
    lr: float
    index: int
    config: Any = None

    @property
    def end(self) -> int:
        return self.start + self.iters


def stage_table(schedule_cfg) -> list[Stage]:
    """Stages with absolute step ranges (``schedule=stages``), else one implicit stage."""
    if schedule_cfg.name != "stages":
        return []
    out, start = [], 0
    for i, st in enumerate(schedule_cfg.stages):
        out.append(Stage(start, int(st.iters), float(st.lr), i, st))
        start += int(st.iters)
    return out


def total_steps(schedule_cfg, max_steps: int) -> int:
    stages = stage_table(schedule_cfg)
    return stages[-1].end if stages else int(max_steps)


def stage_at(stages: list[Stage], step: int) -> Stage:
    for st in stages:
        if step < st.end:
            return st
    return stages[-1]


def lr_at(step: int, schedule_cfg, max_steps: int) -> float:
    name, lr = schedule_cfg.name, float(schedule_cfg.lr)
    if name == "stages":
        return stage_at(stage_table(schedule_cfg), step).lr
    warmup = int(schedule_cfg.warmup_steps)
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    if name == "constant":
        return lr
    floor = float(schedule_cfg.min_lr_ratio)
    span = max(1, max_steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    if name == "cosine":
        factor = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    elif name == "linear":
        factor = floor + (1 - floor) * (1 - progress)
    else:
        raise ValueError(f"unknown schedule {name!r}")
    return lr * factor


def lr_multiplier(schedule_cfg, max_steps: int):
    """For ``LambdaLR``: each param group's lr = its base lr x lr_at(step) / schedule.lr, so a
    group with its own base lr (e.g. SoRA gates) follows the same shape."""
    ref = float(schedule_cfg.lr)
    return lambda step: lr_at(step, schedule_cfg, max_steps) / ref
