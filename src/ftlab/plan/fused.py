"""``hydra/launcher=fused`` in a plan: the groups the launcher will form, how many trials of a
group fit one device, and the memory of a group against its trials run one after another.

Memory of a group = one base (weights, :func:`ftlab.adapters.params.static_memory_mb` with nothing
trainable) + per trial its share: trainable tensors with gradients and AdamW moments, and the
activations of its micro-batch (the planner's per-sample estimate x ``train.batch_size``). K per
device is the largest number of trials, taken in sweep order, whose shares fit beside the base
within the planner's safety factor of ``hardware.memory_gb``; unknown when the hardware does not
name its memory (``hardware=cpu``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from ftlab.adapters.params import model_facts, static_memory_mb
from ftlab.fused.grouping import plan_groups

LAUNCHER = "hydra/launcher=fused"


@dataclass
class GroupPlan:
    runs: list[int]  # indices into the plan's runs
    base_mb: float
    shares_mb: list[float]
    device_mb: float | None
    safety_factor: float

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


def fused_groups(runs: list[Any], overrides: list[str]) -> tuple[list[GroupPlan], dict[int, str]]:
    """The launcher's groups over the plan's training runs, with their memory."""
    trained = [r for r in runs if not r.control]
    plan = plan_groups([r.cfg for r in trained], group_size(overrides) or max(len(trained), 1))
    groups = []
    for members in plan.groups:
        rs = [trained[m] for m in members]
        cfg = rs[0].cfg
        base = static_memory_mb(model_facts(cfg.model), 0, str(cfg.model.dtype), quantization=cfg.model.quantization)
        shares = [r.memory.fixed_mb - base + r.memory.per_sample_mb * int(r.cfg.train.batch_size) for r in rs]
        mem_gb = OmegaConf.select(cfg, "hardware.memory_gb")
        groups.append(GroupPlan([r.index for r in rs], base, shares, None if mem_gb is None else float(mem_gb) * 1024,
                                rs[0].memory.safety_factor))
    alone = {trained[i].index: why for i, why in plan.alone.items()}
    return groups, alone


def fused_markdown(runs: list[Any], overrides: list[str]) -> list[str]:
    groups, alone = fused_groups(runs, overrides)
    names = {r.index: r.name for r in runs}
    lines = ["## Fused groups (hydra/launcher=fused)", "",
             "| group | runs | base MiB | per trial MiB | fused MiB | one trial alone MiB | K per device |",
             "|---|---|---|---|---|---|---|"]
    for g, gp in enumerate(groups, start=1):
        k = "unknown (hardware.memory_gb not set)" if gp.k_per_device is None else str(gp.k_per_device)
        shares = ", ".join(f"{s:.0f}" for s in gp.shares_mb)
        lines.append(f"| {g} | {', '.join(f'`{names[i]}`' for i in gp.runs)} | {gp.base_mb:.0f} | {shares} | "
                     f"{gp.fused_mb:.0f} | {gp.separate_mb:.0f} | {k} |")
    lines += [""] + [f"- `{names[i]}` runs alone: {why}" for i, why in alone.items()] + [""]
    return lines
