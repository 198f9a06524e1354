"""The stage tree of a sweep (Hippo-style): what each trial computes, and what trials share.

A trial is a chain of steps: base model (load, or continued pre-training) -> optional pruning
mask -> training (one step, or one per stage of ``schedule=stages``). The keys are the reuse
cache's own (:func:`ftlab.reuse.steps.run_steps`), and a step is shared only where the cache
really shares it (:meth:`ftlab.reuse.steps.RunSteps.shared`, from the one caching policy
:func:`ftlab.reuse.steps.cache_policy`): base models and masks when ``reuse.enabled`` on one
device, training stages when additionally the schedule is ``stages``. Everything else is private to its trial. So the planned iterations are
what a sweep will actually compute, not an ideal. Pure functions over composed configs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from ftlab.data.epochs import planned_steps
from ftlab.reuse.steps import RunSteps, Step, as_plain, calibrated, run_steps, world_size


@dataclass(frozen=True)
class StageNode:
    key: str
    kind: str  # base | mask | train
    label: str
    iters: int
    parent: str | None
    devices: int = 1  # devices x nodes that run it


@dataclass
class StageTree:
    nodes: dict[str, StageNode] = field(default_factory=dict)
    trials: list[list[str]] = field(default_factory=list)  # per trial, its chain of node keys

    def users(self, key: str) -> list[int]:
        return [i for i, chain in enumerate(self.trials) if key in chain]

    def children(self, key: str | None) -> list[StageNode]:
        return [n for n in self.nodes.values() if n.parent == key]


def _mask_iters(c: dict[str, Any], step: Step) -> int:
    s = c.get("sparsity") or {}
    if step.kind != "mask" or not calibrated(c):
        return 0
    return int((s.get("calibration") or {}).get("batches", 0))


def trial_chain(cfg: DictConfig | dict, trains: bool = True, trial: int = 0,
                steps: RunSteps | None = None) -> list[StageNode]:
    """The steps of one trial. ``trains=False`` (an eval-only control) stops after the base/mask.
    A step the cache would not share gets a key private to ``trial``. ``steps``: the trial's plan
    of steps when already computed (else computed here)."""
    c = as_plain(cfg)
    steps = steps if steps is not None else run_steps(c)
    dev = world_size(c)
    chain: list[StageNode] = []

    def add(step_key: str, shared: bool, kind: str, label: str, iters: int) -> None:
        key = step_key if shared else f"{step_key}~trial{trial}"
        chain.append(StageNode(key, kind, label, iters, chain[-1].key if chain else None, dev))

    name = c["model"]["name"]
    if steps.base is not None:
        iters = int(c["base"]["steps"])
        add(steps.base.key, steps.shared(steps.base), "base", f"base {name} +{iters} pre-training it", iters)
    else:  # loading costs no iterations; the node names the base model the trials share
        add(steps.model.key, True, "base", f"base {name} (load)", 0)
    if steps.mask is not None:
        s = c["sparsity"]
        label = "mask file" if steps.mask.kind == "mask_file" else f"mask {s.get('method')}@{s.get('level')}"
        add(steps.mask.key, steps.shared(steps.mask), "mask", label, _mask_iters(c, steps.mask))
    if steps.init is not None and trains:  # a LoRA init that rewrites the base (costs no iterations)
        add(steps.init.key, steps.shared(steps.init), "init", f"init {c['adapter']['init']} r={c['adapter']['r']}", 0)
    if not trains:
        return chain
    if steps.stages:
        for i, (step, st) in enumerate(zip(steps.stages, c["schedule"]["stages"]), start=1):
            label = f"stage {i}" + (f" {st['name']}" if st.get("name") else "") + f" lr={st['lr']:g}"
            add(step.key, steps.shared(step), "train", label, int(st["iters"]))
    else:
        add(steps.train.key, steps.shared(steps.train), "train", f"train {c['adapter']['name']} {c['schedule']['name']}",
            planned_steps(c))
    return chain


def stage_tree(cfgs: Iterable[DictConfig | dict], trains: Iterable[bool] | None = None,
               steps: list[RunSteps] | None = None) -> StageTree:
    cfgs = list(cfgs)
    trains = list(trains) if trains is not None else [True] * len(cfgs)
    steps = list(steps) if steps is not None else [None] * len(cfgs)
    tree = StageTree()
    for i, (cfg, t, s) in enumerate(zip(cfgs, trains, steps)):
        chain = trial_chain(cfg, t, i, s)
        for node in chain:
            tree.nodes.setdefault(node.key, node)
        tree.trials.append([n.key for n in chain])
    return tree


def reuse_numbers(tree: StageTree) -> dict[str, Any]:
    """Naive (every trial from scratch) vs planned (each node once) iterations."""
    naive = sum(tree.nodes[k].iters for chain in tree.trials for k in chain)
    planned = sum(n.iters for n in tree.nodes.values())
    naive_dev = sum(tree.nodes[k].iters * tree.nodes[k].devices for chain in tree.trials for k in chain)
    planned_dev = sum(n.iters * n.devices for n in tree.nodes.values())
    bases = [n for n in tree.nodes.values() if n.kind == "base"]
    return {
        "trials": len(tree.trials),
        "nodes_naive": sum(len(c) for c in tree.trials),
        "nodes_planned": len(tree.nodes),
        "naive_iters": naive,
        "planned_iters": planned,
        "saved_iters": naive - planned,
        "speedup": naive / planned if planned else 1.0,
        "naive_device_iters": naive_dev,
        "planned_device_iters": planned_dev,
        "base_models": len(bases),
        "shared_base_models": sum(1 for n in bases if len(tree.users(n.key)) > 1),
        "base_users": {n.key: tree.users(n.key) for n in bases},
    }
