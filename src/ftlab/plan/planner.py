"""Assemble a plan: compose every job of the sweep (+ controls), name them, build the stage tree,
estimate each run's time and memory, and total the device-hours with and without reuse."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ftlab.adapters.params import (
    OptimizerGroup,
    activation_mb_per_sample,
    init_bytes,
    mask_bytes,
    memory_mode,
    model_facts,
    optimizer_groups,
    state_bytes,
    static_memory_mb,
    trainable_params,
    weights_bytes,
)
from ftlab.adapters.registry import get_adapter
from ftlab.data.epochs import planned_steps, planned_steps_per_epoch
from ftlab.data.packing import pack_length
from ftlab.data.tokenized import tokenized_bytes
from ftlab.hardware import shards_parameters
from ftlab.plan.estimate import MemoryEstimate, RunFacts, TimeEstimate, estimate_memory, estimate_time
from ftlab.plan.naming import name_runs, split_override
from ftlab.plan.options import PlanOptions
from ftlab.plan.priors import Prior, find_priors
from ftlab.plan.search import search_numbers, sweeper_search
from ftlab.plan.stages import StageNode, StageTree, reuse_numbers, stage_tree, trial_chain
from ftlab.preflight.compose import compose_run, expand_sweep
from ftlab.reuse.handover import plan_for_run
from ftlab.reuse.steps import RunSteps, Step, as_plain
from ftlab.training.schedules import is_staged

PLAN_VERSION = 1


@dataclass
class PlannedRun:
    index: int
    name: str
    overrides: list[str]
    cfg: DictConfig
    control: bool
    facts: RunFacts
    trainable: int
    time: TimeEstimate
    memory: MemoryEstimate
    chain: list[str] = field(default_factory=list)
    seconds: float | None = None  # this run's iterations, computed from scratch
    state_bytes: int = 0  # one checkpoint (= one cached stage): trainable-only state
    checkpoints: int = 0  # checkpoints the run keeps in its run dir
    cache_bytes: int = 0  # what its cached steps (base, mask, stages) take in the store
    step_plan: RunSteps | None = None  # the run's plan of steps (the one the recipe executes)
    groups: list[OptimizerGroup] = field(default_factory=list)  # its AdamW groups (LoRA+: B at ratio x lr)

    @property
    def checkpoint_bytes(self) -> int:
        return self.state_bytes * self.checkpoints

    @property
    def steps(self) -> int:
        return 0 if self.control else _train_steps(self.cfg)


@dataclass
class Plan:
    overrides: list[str]
    options: PlanOptions
    runs: list[PlannedRun]
    tree: StageTree
    reuse: dict[str, Any]
    totals: dict[str, Any]
    priors: list[Prior]
    search: dict[str, Any] | None = None  # hydra/sweeper=stage_search: predicted halving (plan/search.py)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S"))


def _train_steps(cfg: DictConfig) -> int:
    if is_staged(cfg.schedule) and cfg.schedule.stages:
        return sum(int(s.iters) for s in cfg.schedule.stages)
    return planned_steps(cfg)


def checkpoint_count(steps: int, every: int | None, epoch_steps: int | None, at_epoch_end: bool,
                     keep: int | None) -> int:
    """Checkpoints a run leaves (``PeriodicCheckpoint``): one every ``every`` steps, one per
    completed epoch, one at a final step that is neither (when ``every`` is set), pruned to the
    newest ``keep``. ``epoch_steps=None``: epoch length unknown, epoch ends not counted."""
    if steps <= 0:
        return 0
    saved = set(range(every, steps + 1, every)) if every else set()
    epoch_ends = set(range(epoch_steps, steps + 1, epoch_steps)) if at_epoch_end and epoch_steps else set()
    count = len(saved) + len(epoch_ends)  # a step that is both gets both dirs
    if every and steps not in saved | epoch_ends:
        count += 1
    return min(count, keep) if keep else count


def epoch_steps(cfg: DictConfig) -> int | None:
    """Optimiser steps per epoch from the task's size and split (``None`` when not known); with
    ``train.max_epochs``, measured on the data (packed rows included)."""
    if cfg.train.get("max_epochs") is not None:
        return planned_steps_per_epoch(cfg)
    t = cfg.task
    n = t.get("num_examples")
    if not n:
        return None
    train = int(n) - round(int(n) * float(t.val_fraction)) - round(int(n) * float(t.test_fraction))
    per_step = int(cfg.train.batch_size) * int(cfg.train.accumulate_grad_batches) * int(cfg.hardware.devices)
    return max(1, train // per_step) if train > 0 else None


def node_bytes(node: StageNode, run: PlannedRun) -> int:
    """Bytes a step stores in the reuse cache: a pre-trained base (its weights), a computed mask
    (one bool per prunable weight), a training stage (one trainable-only state). Steps private
    to a trial (``~trial``) and a loaded base store nothing."""
    if "~" in node.key:
        return 0
    mf = model_facts(run.cfg.model)
    if node.kind == "base":
        return weights_bytes(mf, str(run.cfg.model.dtype)) if node.iters else 0
    if node.kind == "mask":
        return mask_bytes(mf) if node.label.startswith("mask ") and node.label != "mask file" else 0
    if node.kind == "init":
        return init_bytes(mf, run.cfg)
    return run.state_bytes


def step_bytes(step: Step, run: PlannedRun) -> int | None:
    """Bytes ``step``'s artifact takes in the store (:func:`node_bytes`' sizes); ``None`` for a
    step that stores nothing (loaded, read from a file, private to the run, or not cached here)."""
    if not step.cached:
        return None
    mf = model_facts(run.cfg.model)
    if step.kind == "base":
        return weights_bytes(mf, str(run.cfg.model.dtype))
    if step.kind == "mask":
        return mask_bytes(mf)
    if step.kind == "data":
        return tokenized_bytes(run.cfg)
    if step.kind == "init":
        return init_bytes(model_facts(run.cfg.model), run.cfg)
    return run.state_bytes or None  # a stage: one trainable-only state


def control_overrides(job: list[str]) -> list[str]:
    """The job with its adapter swapped for the eval-only control: the base model itself, so the
    adapter and any pruning of it are dropped."""
    keep = [o for o in job if split_override(o)[0].split(".", 1)[0] not in ("adapter", "sparsity")]
    return [*keep, "adapter=none", "sparsity=none"]


def run_facts(cfg: DictConfig) -> RunFacts:
    """``total_params`` counts like ``metrics.json`` does: the base plus the adapter's own weights
    (full fine-tuning adds none), so runs and priors scale against the same quantity."""
    h = cfg.hardware
    mf = model_facts(cfg.model)
    spec = get_adapter(cfg.adapter.name)
    total = mf.total + (trainable_params(mf, cfg) if spec.trains and not spec.full_weights else 0)
    return RunFacts(
        model=cfg.model.name, hardware=h.name, accelerator=h.accelerator, devices=int(h.devices) * int(h.num_nodes),
        precision=str(h.precision), batch_size=int(cfg.train.batch_size),
        accumulate=int(cfg.train.accumulate_grad_batches), adapter=cfg.adapter.name, task=cfg.task.name,
        max_length=int(cfg.task.max_length), total_params=total,
        memory_mode=memory_mode(cfg.model.dtype, cfg.model.quantization, cfg.train.gradient_checkpointing,
                                cfg.train.packing),
    )


def activation_dtype(cfg: DictConfig) -> str:
    return "bfloat16" if "16" in str(cfg.hardware.precision) else str(cfg.model.dtype)


def node_seconds(node: StageNode, run: PlannedRun) -> float | None:
    """Seconds for one stage node, from the run's seconds per fine-tuning step. Pre-training and
    calibration steps are costed by their share of sequences x length relative to a training step."""
    sec = run.time.sec_per_step
    if sec is None or node.iters == 0:
        return 0.0 if node.iters == 0 else None
    cfg = run.cfg
    train_work = cfg.train.batch_size * cfg.train.accumulate_grad_batches * cfg.task.max_length
    if node.kind == "train":
        return node.iters * sec
    if node.kind == "base":
        return node.iters * sec * (cfg.base.batch_size * cfg.base.max_length) / train_work
    calib = cfg.sparsity.calibration
    return node.iters * sec * (calib.batch_size * cfg.task.max_length) / train_work


def composed(job: list[str]) -> tuple[DictConfig, RunSteps]:
    """A job composed and checked, with its plan of steps (the one its composition checks computed,
    :mod:`ftlab.reuse.handover`)."""
    cfg = compose_run(job)
    return cfg, plan_for_run(as_plain(cfg))


def build_runs(overrides: list[str], options: PlanOptions
               ) -> tuple[list[list[str]], list[DictConfig], list[bool], list[RunSteps]]:
    """Every job of the sweep (and its controls), each composed once and planned once."""
    jobs = expand_sweep(overrides)
    both = [composed(job) for job in jobs]
    cfgs, plans = [cfg for cfg, _ in both], [steps for _, steps in both]
    controls_of: dict[str, list[str]] = {}
    if options.controls:
        for job, cfg, steps in zip(jobs, cfgs, plans):
            key = trial_chain(cfg, trains=False, steps=steps)[0].key  # the base model (trial 0: its shared key)
            controls_of.setdefault(key, control_overrides(job))
    ctrl_jobs = list(controls_of.values())
    ctrl = [composed(job) for job in ctrl_jobs]
    return (jobs + ctrl_jobs, cfgs + [c for c, _ in ctrl], [False] * len(jobs) + [True] * len(ctrl_jobs),
            plans + [s for _, s in ctrl])


def make_plan(overrides: list[str], options: PlanOptions, priors: list[Prior] | None = None) -> Plan:
    jobs, cfgs, is_control, plans = build_runs(overrides, options)
    n_jobs = is_control.count(False)
    names = name_runs(jobs[:n_jobs], cfgs[:n_jobs], list(zip(jobs[n_jobs:], cfgs[n_jobs:])))
    priors = find_priors(options.prior_dirs) if priors is None else priors
    trains = [not c and get_adapter(cfg.adapter.name).trains for c, cfg in zip(is_control, cfgs)]
    tree = stage_tree(cfgs, trains, plans)
    runs = []
    for i, (job, cfg, ctrl, name) in enumerate(zip(jobs, cfgs, is_control, names)):
        facts = run_facts(cfg)
        mf = model_facts(cfg.model)
        trainable = trainable_params(mf, cfg)
        memory = run_memory(cfg, facts, priors, options.safety_factor)
        if shards_parameters(cfg.hardware) and facts.devices > 1:
            memory.sharding = (f"FSDP: weights, gradients and optimiser state / {facts.devices} devices "
                               f"+ 2 gathered decoder blocks of {mf.block_params / 1e6:.4g}M parameters")
        if trains[i]:
            est = estimate_time(facts, priors)
        else:  # eval-only: no optimiser steps; its base pre-training is costed like the runs'
            est = estimate_time(facts if get_adapter(cfg.adapter.name).trains else _as_trained(facts, cfgs, i), priors)
        run = PlannedRun(i, name, job, cfg, ctrl or not trains[i], facts, trainable, est, memory, tree.trials[i],
                         step_plan=plans[i])
        if trains[i]:
            run.state_bytes = state_bytes(trainable, cfg.adapter.name, str(cfg.model.dtype))
            run.groups = optimizer_groups(mf, cfg)
            t = cfg.train
            run.checkpoints = checkpoint_count(run.steps, t.save_every_n_steps, epoch_steps(cfg),
                                               bool(t.save_epoch_checkpoints), t.keep_checkpoints)
        run.cache_bytes = sum(node_bytes(tree.nodes[k], run) for k in run.chain)
        runs.append(run)
    totals = compute_totals(runs, tree)
    plan = Plan(list(overrides), options, runs, tree, reuse_numbers(tree), totals, priors)
    search = sweeper_search(list(overrides))
    if search is not None:
        plan.search = search_numbers(runs, tree, search, node_seconds)
    return plan


def run_memory(cfg: DictConfig, facts: RunFacts, priors: list[Prior], safety_factor: float) -> MemoryEstimate:
    """A run's peak memory per device as ``fixed + per_sample x batch``: weights and optimiser
    state from the meta-device model, activations analytic, both refitted on prior runs' peaks."""
    mf = model_facts(cfg.model)
    static = static_memory_mb(mf, trainable_params(mf, cfg), str(cfg.model.dtype), facts.devices,
                              quantization=cfg.model.quantization, full=get_adapter(cfg.adapter.name).full_weights,
                              sharded=shards_parameters(cfg.hardware))
    packed = bool(cfg.train.packing)  # a sample is then a row of pack_length tokens
    seq = pack_length(cfg.train, cfg.task) if packed else int(cfg.task.max_length)
    act = activation_mb_per_sample(mf, seq, activation_dtype(cfg), checkpointing=bool(cfg.train.gradient_checkpointing),
                                   attention=str(cfg.model.attn_implementation), packed=packed)
    mem_gb = cfg.hardware.memory_gb
    return estimate_memory(facts, priors, static, act, None if mem_gb is None else float(mem_gb) * 1024, safety_factor)


def _as_trained(facts: RunFacts, cfgs: list[DictConfig], i: int) -> RunFacts:
    """A control has no training steps of its own; a base pre-training it shares is costed with
    the adapter of a run that trains on the same setup (or LoRA)."""
    others = [c.adapter.name for c in cfgs if get_adapter(c.adapter.name).trains and c.model.name == facts.model]
    return RunFacts(**{**facts.__dict__, "adapter": others[0] if others else "lora"})


def compute_totals(runs: list[PlannedRun], tree: StageTree) -> dict[str, Any]:
    """Device-hours naive (each run alone) and planned (each stage node once)."""
    node_time: dict[str, float | None] = {}
    node_run: dict[str, PlannedRun] = {}
    for run in runs:
        secs: float | None = 0.0
        for key in run.chain:
            t = node_seconds(tree.nodes[key], run)
            node_time.setdefault(key, t)
            node_run.setdefault(key, run)
            secs = None if t is None or secs is None else secs + t
        run.seconds = secs
    stored: dict[str, int] = {}
    for run in runs:
        for key in run.chain:
            stored.setdefault(key, node_bytes(tree.nodes[key], run))
    known = [r for r in runs if r.seconds is not None]
    naive = sum(r.seconds * r.facts.devices for r in known)
    planned = 0.0
    for key, t in node_time.items():
        if t is not None and all(r.seconds is not None for r in runs if key in r.chain):
            planned += t * tree.nodes[key].devices
    return {
        "runs": len(runs),
        "runs_without_basis": [r.name for r in runs if r.seconds is None],
        "device_hours_naive": naive / 3600,
        "device_hours_planned": planned / 3600,
        "device_hours_saved": (naive - planned) / 3600,
        "speedup": naive / planned if planned else None,
        "checkpoint_bytes": sum(r.checkpoint_bytes for r in runs),
        "cache_bytes": sum(stored.values()),  # each shared entry once
        "cache_bytes_unshared": sum(r.cache_bytes for r in runs),  # were every run to store its own
    }


def resolved(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)
