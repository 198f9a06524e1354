"""``hydra/launcher=fused`` in a plan: the groups the launcher will form, how many trials of a
group fit one device, and the memory and time of a group against its trials run one by one.

Memory of a group = one base (weights, :func:`ftlab.adapters.params.static_memory_mb` with nothing
trainable) + per trial its share: trainable tensors with gradients and AdamW moments, and the
activations of its micro-batch (the planner's per-sample estimate x ``train.batch_size``). K per
device is the largest number of trials, taken in sweep order, whose shares fit beside the base
within the planner's safety factor of ``hardware.memory_gb``; unknown when the hardware does not
name its memory (``hardware=cpu``). The launcher uses the same K: its default group size, and the
cap of an explicit ``hydra.launcher.group_size`` (:func:`launcher_plan`).

Time, from the planner's own cost model (:func:`ftlab.plan.estimate.estimate_time`, seconds per
step from prior runs): separate = each trial's steps x its own seconds per step, one after the
other; fused = per step of the group, the seconds of ONE step whose batch is the sum of the
batches of the trials still in the group (a trial with fewer steps leaves it). So the prediction
credits fusion exactly with what the priors show a larger batch costs less than several small
ones (the ``fit`` model's per-step overhead); a ``scaled`` estimate is linear in tokens and
predicts no gain. Start-up (process, base load, tokenisation, per run) and stage reuse are not in
either number.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ftlab.adapters.params import model_facts, static_memory_mb
from ftlab.fused.grouping import LEFTOVER, plan_groups
from ftlab.fused.grouping import Plan as Groups
from ftlab.plan.estimate import MemoryEstimate, RunFacts, estimate_time
from ftlab.plan.planner import run_facts, run_memory
from ftlab.plan.priors import Prior, find_priors

LAUNCHER = "hydra/launcher=fused"
#: the planner's defaults (``plan.prior_dirs``, ``plan.safety_factor``), which the launcher uses
PRIOR_DIRS = ("experiments", "multirun")
SAFETY_FACTOR = 0.65


@dataclass
class GroupPlan:
    runs: list[int]  # indices into the plan's runs
    base_mb: float
    shares_mb: list[float]
    device_mb: float | None
    safety_factor: float
    separate_s: float | None = None  # the trials' steps one after another (no basis: None)
    fused_s: float | None = None  # the group's fused steps
    time_basis: str = ""  # the estimate method of the fused steps

    @property
    def fused_mb(self) -> float:
        return self.base_mb + sum(self.shares_mb)

    @property
    def separate_mb(self) -> float:
        """Peak of the same trials run one after another: the largest single trial."""
        return self.base_mb + max(self.shares_mb)

    @property
    def k_per_device(self) -> int | None:
        if self.device_mb is None:
            return None
        room, k = self.safety_factor * self.device_mb - self.base_mb, 0
        for share in self.shares_mb:
            if share > room:
                break
            room, k = room - share, k + 1
        return k


def launcher_requested(overrides: list[str]) -> bool:
    return LAUNCHER in overrides


def group_size(overrides: list[str]) -> int | None:
    for o in overrides:
        if o.startswith("hydra.launcher.group_size="):
            value = o.split("=", 1)[1]
            return None if value == "null" else int(value)
    return None


def base_mb(cfg: Any) -> float:
    """The frozen base the group holds once: its weights, nothing trainable."""
    return static_memory_mb(model_facts(cfg.model), 0, str(cfg.model.dtype), quantization=cfg.model.quantization)


def group_memory(cfgs: list[Any], memories: list[MemoryEstimate]) -> GroupPlan:
    """One group's memory (``runs`` left empty for the caller)."""
    base = base_mb(cfgs[0])
    shares = [m.fixed_mb - base + m.per_sample_mb * int(c.train.batch_size) for c, m in zip(cfgs, memories)]
    mem_gb = OmegaConf.select(cfgs[0], "hardware.memory_gb")
    return GroupPlan([], base, shares, None if mem_gb is None else float(mem_gb) * 1024, memories[0].safety_factor)


def fused_seconds(facts: list[RunFacts], steps: list[int], priors: list[Prior]) -> tuple[float | None, str]:
    """Seconds of the group's fused steps: while trials ``active`` remain, each step costs one
    step of the summed batch (module docstring); with its estimate method(s)."""
    total, methods, done = 0.0, [], 0
    for end in sorted(set(steps)):
        active = [f for f, s in zip(facts, steps) if s >= end]
        batch = sum(f.batch_size for f in active)
        est = estimate_time(dataclasses.replace(facts[0], batch_size=batch), priors)
        if est.sec_per_step is None:
            return None, est.method
        total += (end - done) * est.sec_per_step
        methods.append(est.method)
        done = end
    return total, "/".join(sorted(set(methods)))


def fused_groups(runs: list[Any], overrides: list[str],
                 priors: list[Prior] | None = None) -> tuple[list[GroupPlan], dict[int, str]]:
    """The launcher's groups over the plan's training runs, with their memory and time."""
    trained = [r for r in runs if not r.control]
    requested = group_size(overrides)
    plan, _ = groups_within_device([r.cfg for r in trained], requested, [r.memory for r in trained])
    groups = []
    for members in plan.groups:
        rs = [trained[m] for m in members]
        gp = group_memory([r.cfg for r in rs], [r.memory for r in rs])
        gp.runs = [r.index for r in rs]
        secs = [r.time.sec_per_step for r in rs]
        if all(s is not None for s in secs):
            gp.separate_s = sum(s * r.steps for s, r in zip(secs, rs))
        gp.fused_s, gp.time_basis = fused_seconds([r.facts for r in rs], [r.steps for r in rs], priors or [])
        groups.append(gp)
    alone = {trained[i].index: why for i, why in plan.alone.items()}
    return groups, alone


def groups_within_device(cfgs: list[Any], requested: int | None,
                         memories: list[MemoryEstimate]) -> tuple[Groups, list[str]]:
    """:func:`ftlab.fused.grouping.plan_groups` with each group's size capped by its K per
    device: ``requested`` (``hydra.launcher.group_size``; None = K, or every job where K is
    unknown) above K is clipped to K, with one line saying why."""
    notes: list[str] = []

    def limit(members: list[int]) -> tuple[int, str]:
        gp = group_memory([cfgs[m] for m in members], [memories[m] for m in members])
        k, size = gp.k_per_device, requested or len(members)
        if k is None or size <= k:
            return size, LEFTOVER
        why = (f"K={k} trials fit one device (planner: base {gp.base_mb:.0f} MiB + per trial "
               f"{min(gp.shares_mb):.0f}-{max(gp.shares_mb):.0f} MiB within {gp.safety_factor:g} x "
               f"{gp.device_mb:.0f} MiB, hardware.memory_gb)")
        if requested is not None:
            notes.append(f"hydra.launcher.group_size={requested} clipped to {max(k, 1)}: {why}")
        return max(k, 1), f"the last job of its group: {why}"

    return plan_groups(cfgs, requested or max(len(cfgs), 1), limit=limit), notes


def launcher_plan(cfgs: list[DictConfig], requested: int | None) -> tuple[Groups, list[str]]:
    """The fused launcher's groups: the planner's memory estimates (prior runs under
    ``experiments/`` and ``multirun/``, safety factor 0.65) cap every group at its K per device."""
    priors = find_priors(list(PRIOR_DIRS))
    memories = [run_memory(cfg, run_facts(cfg), priors, SAFETY_FACTOR) for cfg in cfgs]
    return groups_within_device(cfgs, requested, memories)


def _fmt_s(s: float | None) -> str:
    return "no basis" if s is None else f"{s:.0f}"


def fused_markdown(runs: list[Any], overrides: list[str], priors: list[Prior] | None = None) -> list[str]:
    groups, alone = fused_groups(runs, overrides, priors)
    names = {r.index: r.name for r in runs}
    lines = ["## Fused groups (hydra/launcher=fused)", "",
             "| group | runs | base MiB | per trial MiB | fused MiB | one trial alone MiB | K per device "
             "| separate s | fused s | fused / separate |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for g, gp in enumerate(groups, start=1):
        k = "unknown (hardware.memory_gb not set)" if gp.k_per_device is None else str(gp.k_per_device)
        shares = ", ".join(f"{s:.0f}" for s in gp.shares_mb)
        ratio = (f"{gp.fused_s / gp.separate_s:.2f} ({gp.time_basis})"
                 if gp.fused_s is not None and gp.separate_s else "n/a")
        lines.append(f"| {g} | {', '.join(f'`{names[i]}`' for i in gp.runs)} | {gp.base_mb:.0f} | {shares} | "
                     f"{gp.fused_mb:.0f} | {gp.separate_mb:.0f} | {k} | {_fmt_s(gp.separate_s)} | "
                     f"{_fmt_s(gp.fused_s)} | {ratio} |")
    lines += ["", "Time: separate = each trial's steps x its seconds per step; fused = per group step, one step "
              "of the summed batch of the trials still in the group (the planner's estimate from prior runs; "
              "start-up and stage reuse not included). Groups are capped at K per device.", ""]
    lines += [f"- `{names[i]}` runs alone: {why}" for i, why in alone.items()] + [""]
    return lines
