"""The stage tree of a sweep (Hippo-style): what each trial computes, and what trials share.

A trial is a chain of steps: base model (load, or continued pre-training) -> optional pruning
mask -> training stages in order. Each step's key hashes its parent's key and the config values
that step depends on, so two trials share a step exactly when they share its whole history and
its values over the same step range. Pure functions over composed configs: nothing is built.

Keys err on the side of *not* merging: the training step depends on the whole run config minus an
explicit list of keys that only affect naming, logging, checkpointing or evaluation. A planned
iteration count is therefore never lower than what a correct cache can deliver.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

FORMAT_VERSION = 1
#: run-config keys that change nothing a training step computes
IRRELEVANT = ("name", "tags", "logger", "eval", "paths", "reuse", "resume")
IRRELEVANT_TRAIN = ("log_every_n_steps", "save_every_n_steps", "save_epoch_checkpoints", "keep_checkpoints",
                    "log_measurements", "save_adapter", "save_merged_model", "num_workers", "eval_batch_size")
IRRELEVANT_TASK = ("eval_examples", "max_new_tokens", "metric")
#: importance scores that need calibration batches (forward/backward passes)
CALIBRATED = ("gradient", "taylor", "wanda")


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


def step_key(parent: str | None, kind: str, payload: Any) -> str:
    blob = json.dumps({"v": FORMAT_VERSION, "parent": parent, "kind": kind, "payload": payload},
                      sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _plain(cfg: DictConfig | dict) -> dict:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg)


def _seed(value: Any, fallback: Any) -> Any:
    return fallback if value is None else value


def base_payload(c: dict) -> dict:
    """What the base model depends on: architecture and init seed, plus the pre-training phase."""
    payload: dict[str, Any] = {"model": c["model"], "init_seed": _seed(c["model"].get("init_seed"), c["seed"])}
    if c["base"]["enabled"]:
        base = dict(c["base"], seed=_seed(c["base"].get("seed"), c["seed"]))
        t = c["task"]
        payload.update({
            "base": base,
            "corpus": {"task": t["name"], "path": t.get("path"), "options": t.get("options")},
            "optim": {k: c["train"][k] for k in ("betas", "eps", "weight_decay", "gradient_clip_val",
                                                  "deterministic")},
            "precision": c["hardware"]["precision"],
        })
    return payload


def mask_payload(c: dict) -> dict | None:
    s = c.get("sparsity") or {}
    if s.get("name", "none") == "none" and s.get("method", "none") == "none":
        return None
    payload = {k: v for k, v in s.items() if k != "mode"}
    payload["seed"] = _seed(s.get("seed"), c["seed"])
    if s.get("importance") in CALIBRATED:
        payload["data"] = {k: c["task"].get(k) for k in ("name", "path", "options", "num_examples", "max_length")}
    return payload


def mask_iters(c: dict) -> int:
    s = c.get("sparsity") or {}
    return int(s.get("calibration", {}).get("batches", 0)) if s.get("importance") in CALIBRATED else 0


def train_common(c: dict) -> dict:
    """The run config as one training step sees it (no model/base/sparsity: those are parents)."""
    out = {k: v for k, v in c.items() if k not in IRRELEVANT and k not in ("model", "base", "sparsity")}
    out["train"] = {k: v for k, v in c["train"].items() if k not in IRRELEVANT_TRAIN}
    out["task"] = {k: v for k, v in c["task"].items() if k not in IRRELEVANT_TASK}
    out["sparsity_mode"] = (c.get("sparsity") or {}).get("mode")
    return out


def devices_of(c: dict) -> int:
    h = c["hardware"]
    return int(h.get("devices", 1)) * int(h.get("num_nodes", 1))


def trial_chain(cfg: DictConfig | dict, trains: bool = True, salt: str | None = None) -> list[StageNode]:
    """The steps of one trial. ``trains=False`` (an eval-only control) stops after the base/mask;
    ``salt`` makes every key private to the trial (``reuse.enabled=false``)."""
    c = _plain(cfg)
    dev = devices_of(c)
    parent = salt
    chain: list[StageNode] = []
    base = base_payload(c)
    key = step_key(parent, "base", base)
    iters = int(c["base"]["steps"]) if c["base"]["enabled"] else 0
    label = f"base {c['model']['name']}" + (f" +{iters} pre-training it" if iters else " (load)")
    chain.append(StageNode(key, "base", label, iters, None, dev))
    parent = key
    mask = mask_payload(c)
    if mask is not None:
        key = step_key(parent, "mask", mask)
        chain.append(StageNode(key, "mask", f"mask {mask.get('method')}@{mask.get('level')}", mask_iters(c),
                               parent, dev))
        parent = key
    if not trains:
        return chain
    common = train_common(c)
    sched = dict(common["schedule"])
    stages = sched.pop("stages", None) if sched.get("name") == "stages" else None
    if stages:
        common = dict(common, schedule=sched, train={k: v for k, v in common["train"].items() if k != "max_steps"})
        start = 0
        for i, st in enumerate(stages):
            values = {k: v for k, v in st.items() if k != "name" and v is not None}
            key = step_key(parent, "train", {"common": common, "start": start, "stage": values})
            label = f"stage {i} {st.get('name') or ''}".rstrip() + f" lr={st['lr']}"
            chain.append(StageNode(key, "train", label, int(st["iters"]), parent, dev))
            parent, start = key, start + int(st["iters"])
    else:
        key = step_key(parent, "train", {"common": common})
        steps = int(c["train"]["max_steps"])
        chain.append(StageNode(key, "train", f"train {c['adapter']['name']} {sched['name']}", steps, parent, dev))
    return chain


def stage_tree(cfgs: Iterable[DictConfig | dict], trains: Iterable[bool] | None = None) -> StageTree:
    """Merge the trials' chains; a trial with ``reuse.enabled=false`` shares nothing."""
    cfgs = list(cfgs)
    trains = list(trains) if trains is not None else [True] * len(cfgs)
    tree = StageTree()
    for i, (cfg, t) in enumerate(zip(cfgs, trains)):
        c = _plain(cfg)
        salt = None if (c.get("reuse") or {}).get("enabled", True) else f"private-trial-{i}"
        chain = trial_chain(c, t, salt)
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
