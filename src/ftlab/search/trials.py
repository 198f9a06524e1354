"""A trial's chain of prefixes, from its composed run config: what rung ``k`` evaluates and the
cache key it must produce. Pure over plain config dicts (:func:`ftlab.reuse.steps.as_plain`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from ftlab.artifacts.keys import lookup
from ftlab.core.errors import ConfigError, FtlabError
from ftlab.reuse.stages import eval_signature, reuse_applies, world_size
from ftlab.reuse.steps import run_steps


@dataclass(frozen=True)
class TrialChain:
    keys: list[str]  # stage cache keys, stage 1 first
    prefixes: list[str]  # prefix ids: a stage key plus the settings its metric is read under
    iters: list[int]
    stages: list[dict[str, Any]]  # the composed schedule.stages entries
    devices: int


def trial_chain(c: dict[str, Any]) -> TrialChain:
    """Refuses (one line) a trial whose stages the cache would not share, or that is not evaluated."""
    steps = run_steps(c)
    ok, why = reuse_applies(c, steps)
    if not ok:
        key = {"reuse.enabled=false": "reuse.enabled"}.get(why, "schedule.name" if "schedule" in why else "hardware.devices")
        raise ConfigError(key, lookup(c, key, None), f"hydra/sweeper=stage_search trains cached stages ({why})")
    if not lookup(c, "eval.enabled", True):
        raise ConfigError("eval.enabled", False, "true: hydra/sweeper=stage_search reads each job's metric")
    stages = [dict(s) for s in lookup(c, "schedule.stages", None) or []]
    keys = [s.key for s in steps.stages]
    signature = eval_signature(c)
    prefixes = [hashlib.sha256(f"{k}|{signature}".encode()).hexdigest()[:24] for k in keys]
    return TrialChain(keys, prefixes, [int(s["iters"]) for s in stages], stages, world_size(c))


def check_same_depth(chains: list[TrialChain]) -> int:
    depths = sorted({len(ch.keys) for ch in chains})
    if not depths or depths[0] == 0:
        raise ConfigError("schedule.stages", [], "at least one stage per trial for hydra/sweeper=stage_search")
    if len(depths) > 1:
        raise FtlabError(f"schedule.stages is invalid for hydra/sweeper=stage_search: every trial needs the same "
                         f"number of stages (rungs are stage boundaries); the sweep has {depths}")
    return depths[0]
