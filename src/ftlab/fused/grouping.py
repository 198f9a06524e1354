"""Which jobs of a sweep can train fused, and in which groups.

Jobs share a group when everything the frozen part and the batches' layout come from is the same:
the model, base and mask steps (``ftlab/reuse/steps.py``; for a model read from
``model.name_or_path`` the run seed builds nothing, so it does not split groups), the task and
its tokenisation (each trial still draws its own split and order from its own seed; h24's cached
tokenized-data step, once merged, is the step such a group would read once), and the hardware,
memory and batching settings every trial of one forward shares. Seeds, lr, schedule, r, alpha,
dropout, batch size, step counts and targets may differ per trial.

A job that cannot be fused gets one line saying why and runs as it would under the basic launcher.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from ftlab.adapters.inits import init_spec
from ftlab.adapters.registry import get_adapter
from ftlab.artifacts.keys import canonical_json, lookup, pick
from ftlab.fused.build import fusable
from ftlab.hardware import get_target, shards_parameters
from ftlab.models.build import meta_model
from ftlab.models.noise import base_noise, describe
from ftlab.reuse.steps import (
    BATCHING_KEYS,
    HARDWARE_KEYS,
    MEMORY_KEYS,
    MODEL,
    TASK,
    TRAIN,
    as_plain,
    run_steps,
)

#: The task and how its examples become tokens (one tokenisation, one padding/packing layout).
DATA_KEYS = (TASK.name, TASK.path, TASK.num_examples, TASK.val_fraction, TASK.test_fraction, TASK.max_length,
             TASK.options, MODEL.tokenizer)
#: Process-wide settings of one forward (precision, deterministic kernels) and its layout.
SHARED_KEYS = (*HARDWARE_KEYS, *MEMORY_KEYS, *BATCHING_KEYS, TRAIN.deterministic)
#: why the last job of a split group runs alone
LEFTOVER = "the last job of its group (group_size reached)"


@dataclass(frozen=True)
class Plan:
    """Groups of job indices (each >= 2) and the jobs that run alone, with why."""

    groups: list[list[int]]
    alone: dict[int, str]


def why_not_fused(cfg: Any) -> str | None:
    """One line on why this job cannot join a fused group; None if it can."""
    spec = get_adapter(cfg.adapter.name)
    if not fusable(spec):
        return (f"adapter={spec.name} is not a frozen base plus a low-rank update "
                "(fused: lora, sora; DoRA magnitudes, masked updates and full weights run alone)")
    init = init_spec(cfg.adapter.get("init"))
    if init.step:
        return (f"adapter.init={init.name} is a step of its own (it rewrites the frozen base the group's trials "
                "share, or reads calibration data)")
    c = cfg.train
    if c.accumulate_grad_batches != 1:
        return f"train.accumulate_grad_batches={c.accumulate_grad_batches}: fused trials step every micro-batch"
    if c.gradient_checkpointing:
        return "train.gradient_checkpointing=true: recomputation would redraw each trial's dropout"
    if cfg.model.quantization:
        return "model.quantization is set: fused layers are not tested over k-bit bases"
    if cfg.sparsity.method != "none" or cfg.sparsity.get("mask_path"):
        return "a sparse base: its masks are enforced per adapted model"
    h = cfg.hardware
    if h.devices * h.num_nodes > 1 or not get_target(h.accelerator).fuses or shards_parameters(h):
        return f"hardware={h.name}: fused groups run in one single-device process"
    noise = shared_base_noise(cfg.model)
    if noise:
        return (f"the base model draws its own noise in training ({describe(noise)}): one forward over every "
                "trial's rows cannot give each trial its solo run's draws (fused: set them to 0, e.g. "
                f"model.config.{next(iter(noise))}=0.0)")
    return None


def shared_base_noise(model_cfg: Any) -> dict[str, float]:
    """The base's own training-mode noise (:mod:`ftlab.models.noise`), read from the
    architecture on the meta device; empty when it cannot be built here (the group's recipe
    checks the built base again)."""
    model = meta_model(OmegaConf.to_yaml(model_cfg, resolve=True))
    return base_noise(model) if model is not None else {}


def shared_key(cfg: Any) -> str:
    """The text that two jobs of one fused group have in common."""
    c = as_plain(cfg)
    steps = run_steps(c)
    model = dict(steps.model.config)
    if lookup(c, MODEL.name_or_path, None):
        model.pop("derived.init_seed", None)  # read from files: the seed builds nothing
    parts = {"model": model, "base": steps.base.key if steps.base else None,
             "data": pick(c, DATA_KEYS), "shared": pick(c, SHARED_KEYS)}
    return canonical_json(parts)


def plan_groups(cfgs: list[Any], group_size: int,
                limit: Callable[[list[int]], tuple[int, str]] | None = None) -> Plan:
    """Jobs in sweep order, grouped by :func:`shared_key` into groups of up to ``group_size``;
    ``limit(members)`` (of the jobs sharing one key), when given, sets that size instead and the
    reason a job left over runs alone (the planner's K per device: ``ftlab.plan.fused``)."""
    alone: dict[int, str] = {}
    by_key: dict[str, list[int]] = {}
    for i, cfg in enumerate(cfgs):
        reason = why_not_fused(cfg)
        if reason is not None:
            alone[i] = reason
        else:
            by_key.setdefault(shared_key(cfg), []).append(i)
    groups: list[list[int]] = []
    for members in by_key.values():
        size, leftover = limit(members) if limit is not None else (group_size, LEFTOVER)
        for start in range(0, len(members), size):
            chunk = members[start:start + size]
            if len(chunk) > 1:
                groups.append(chunk)
            else:
                alone[chunk[0]] = ("no other job of the sweep shares its model, base, data and hardware settings"
                                   if len(members) == 1 else leftover)
    return Plan(groups, dict(sorted(alone.items())))
