"""Learning-rate schedules as pure functions of the optimiser step, and their registry.

``lr_at(step)`` is the lr used for the update of step ``step`` (0-based). Stage boundaries are
exact: step ``s`` belongs to the first stage whose cumulative iters exceed ``s``.

Each ``schedule=NAME`` is a :class:`ScheduleSpec`: a decay factor after the linear warm-up, or
``staged`` (the lr of each entry of ``schedule.stages``, whose prefixes the cache shares). Code
that depends on the kind of schedule reads ``staged`` (:func:`is_staged`), not the name. Adding
one = a ``register_schedule`` call (or an ``ftlab.schedules`` entry point) and ``conf/schedule/NAME.yaml``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ftlab.core.plugins import Registry


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    #: factor of ``schedule.lr`` after warm-up: ``decay(progress in [0, 1], min_lr_ratio)``
    decay: Callable[[float, float], float] | None
    #: the lr of each entry of ``schedule.stages`` (one cached step per stage); no warm-up, no decay
    staged: bool = False
    doc: str = ""

    def __post_init__(self):
        if (self.decay is None) != self.staged:
            raise ValueError(f"schedule {self.name!r}: a decay function, or staged=True")


_SCHEDULES: Registry[ScheduleSpec] = Registry("schedule", "schedule.name", ScheduleSpec, "ftlab.schedules")


register_schedule = _SCHEDULES.register
all_schedules = _SCHEDULES.all
#: the spec of ``schedule.name``; one line naming the registered schedules otherwise
get_schedule = _SCHEDULES.get


def is_staged(schedule_cfg: Any) -> bool:
    """The schedule trains ``schedule.stages`` one after another (takes the node or a plain dict).
    An unregistered name has no stages: the composition checks refuse it, the plan does not."""
    name = schedule_cfg.get("name") if isinstance(schedule_cfg, dict) else schedule_cfg.name
    spec = _SCHEDULES.find(name)
    return bool(spec and spec.staged)


register_schedule(ScheduleSpec("constant", lambda progress, floor: 1.0, doc="lr"))
register_schedule(ScheduleSpec("cosine", lambda progress, floor: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)),
                               doc="lr · (f + (1 − f) · ½(1 + cos πp)), f = min_lr_ratio"))
register_schedule(ScheduleSpec("linear", lambda progress, floor: floor + (1 - floor) * (1 - progress),
                               doc="lr · (f + (1 − f)(1 − p))"))
register_schedule(ScheduleSpec("stages", None, staged=True, doc="stage i's lr for its iters"))


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
    if not is_staged(schedule_cfg):
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
    spec, lr = get_schedule(schedule_cfg.name), float(schedule_cfg.lr)
    if spec.staged:
        return stage_at(stage_table(schedule_cfg), step).lr
    warmup = int(schedule_cfg.warmup_steps)
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    span = max(1, max_steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    return lr * spec.decay(progress, float(schedule_cfg.min_lr_ratio))


def lr_multiplier(schedule_cfg, max_steps: int):
    """For ``LambdaLR``: each param group's lr = its base lr x lr_at(step) / schedule.lr, so a
    group with its own base lr (e.g. SoRA gates) follows the same shape."""
    ref = float(schedule_cfg.lr)
    return lambda step: lr_at(step, schedule_cfg, max_steps) / ref
