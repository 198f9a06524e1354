"""The plan of steps of an ftlab run, the config keys each depends on (the allow-lists), and the
caching policy: which steps go through the reuse store on this hardware (:func:`cache_policy`).

    model ─> base (continued pre-training, cached) ─> mask (cached) ─> init (cached) ─> train root ─> stage 1 ...

(``init``: only for a LoRA init that is a step, :class:`ftlab.adapters.inits.InitSpec`: PiSSA and
OLoRA rewrite the frozen base.)

:func:`run_steps` computes the plan once per run (:class:`ftlab.reuse.runner.StepRunner` holds
it); the recipe executes it through that one runner (base and mask directly, stages through
:class:`ftlab.reuse.stages.StageRun`, which uses the runner's store primitives), the planner
prints it (``python -m ftlab.plan``: :mod:`ftlab.plan.stages`, :mod:`ftlab.plan.report`),
``python -m ftlab.cache ls --run`` describes its entries, and composition checks read it
(:mod:`ftlab.preflight.reuse_checks`). :func:`cache_policy` is the only caching decision.

Every list here is explicit. A key that is in no list and not in :data:`EXCLUDED` is caught by
``tests/reuse/test_reuse_keys.py``, which walks the whole composed config: a new config key must be
classified before it can silently produce stale hits. Values the code derives (the effective
seeds, a data file's content) enter a key under a ``derived.`` name.

Functions take the run config as a plain dict (``OmegaConf.to_container(cfg, resolve=True)``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from omegaconf import DictConfig, OmegaConf

import ftlab
from ftlab.adapters.inits import init_spec
from ftlab.artifacts.keys import lookup, pick, step_key
from ftlab.artifacts.manifest import content_fingerprint, fingerprint, tokenizer_fingerprint
from ftlab.sparsity.importance import ImportanceSpec, effective_importance, importance_spec
from ftlab.sparsity.methods import find_method
from ftlab.sparsity.structures import get_structure
from ftlab.training.schedules import is_staged

#: Format version per step kind: bump when the artifact layout or the producing code changes
#: results for the same config. (mask 3: masks cover fused MoE experts and Conv1D layers.)
VERSIONS = {"model": 1, "base": 1, "mask": 3, "mask_file": 1, "train": 1, "stage": 1, "data": 1, "init": 1}

MODEL_KEYS = ("model.name_or_path", "model.arch", "model.config", "model.dtype", "model.tokenizer",
              "model.attn_implementation")

HARDWARE_KEYS = ("hardware.accelerator", "hardware.devices", "hardware.num_nodes", "hardware.strategy",
                 "hardware.precision", "hardware.num_csx")

#: Optimiser settings that pre-training shares with fine-tuning (``FtlabModule``/``build_trainer``).
OPTIM_KEYS = ("train.weight_decay", "train.betas", "train.eps", "train.gradient_clip_val", "train.deterministic")

BASE_KEYS = ("base.corpus", "base.num_examples", "base.steps", "base.lr", "base.batch_size", "base.max_length",
             "base.warmup_steps", "seed", "task.name", "task.options", *OPTIM_KEYS, *HARDWARE_KEYS)

MASK_KEYS = ("sparsity.method", "sparsity.level", "sparsity.group", "sparsity.n", "sparsity.m",
             "sparsity.structure", "sparsity.modules")
#: What a ``calibrated`` importance (its :class:`~ftlab.sparsity.importance.ImportanceSpec`) or OWL
#: reads: batches of the task's train split.
CALIBRATION_KEYS = ("sparsity.calibration", "seed", "task.name", "task.num_examples", "task.val_fraction",
                    "task.test_fraction", "task.max_length", "task.options")

#: What a LoRA init that is a step reads (besides its parent's weights): which linears it factorises,
#: the rank, and the scaling s (PiSSA/OLoRA write W - s B0 A0 into the base).
INIT_KEYS = ("adapter.name", "adapter.init", "adapter.r", "adapter.alpha", "adapter.use_rslora",
             "adapter.target_modules", "model.target_modules")
#: What a data-driven init (EVA, CorDA) reads besides: its batches of the task's seeded train split.
INIT_DATA_KEYS = ("adapter.calibration", "seed", "task.name", "task.num_examples", "task.val_fraction",
                  "task.test_fraction", "task.max_length", "task.options")

#: Memory features of a fine-tuning run (a k-bit base changes the numbers; checkpointing is kept
#: apart too, although its recomputation is exact, so that a cache hit never hides a failing mode).
MEMORY_KEYS = ("model.quantization", "train.gradient_checkpointing")

#: How examples form batches (packed rows, length-grouped order): other batches, other weights.
BATCHING_KEYS = ("train.packing", "train.pack_length", "train.group_by_length")

TRAIN_KEYS = ("seed", "adapter", "model.target_modules", "schedule.name", "schedule.lr", "sparsity.mode",
              "train.batch_size", "train.accumulate_grad_batches", *OPTIM_KEYS,
              "task.name", "task.num_examples", "task.val_fraction", "task.test_fraction", "task.max_length",
              "task.options", *HARDWARE_KEYS, *MEMORY_KEYS, *BATCHING_KEYS)

#: Per-stage keys that only label a stage.
STAGE_LABELS = ("name",)

#: Keys that change nothing any cached step computes: naming, logging, outputs, evaluation, and
#: the schedule keys ``schedule=stages`` does not read.
EXCLUDED = (
    "name", "tags", "logger", "eval", "paths", "reuse", "resume",
    "model.name", "hardware.name", "hardware.memory_gb", "sparsity.name", "sparsity.levels",
    "task.max_new_tokens", "task.metric", "task.eval_examples",
    "schedule.warmup_steps", "schedule.min_lr_ratio",
    "train.eval_batch_size", "train.max_steps", "train.max_epochs", "train.log_every_n_steps", "train.save_every_n_steps",
    "train.save_epoch_checkpoints", "train.keep_checkpoints", "train.log_measurements", "train.save_adapter",
    "train.save_merged_model", "train.num_workers",
    # when training stops and which evaluated state is exported: the weights at each step are the same
    "train.early_stopping", "export",
)

#: Keys that select a step or enter a key in derived form (``derived.*``).
DERIVED = (
    "model.init_seed",  # derived.init_seed (None -> run seed)
    "model.resize_embeddings",  # derived.resize_embeddings, entered only when true (other keys stay as they were)
    "base.enabled",  # whether the base step exists
    "base.seed",  # derived.base_seed
    "task.path",  # derived.task_file (content hash)
    # task=instruct's format keys: entered only when set (keys of the other tasks stay as they were);
    # the chat template file by its content hash
    "task.format", "task.columns", "task.prompt_template", "task.last_turn_only", "task.chat_template",
    "task.sources",  # derived.sources (each source's settings and content hash)
    "task.mixture_replacement", "task.mixture_shared_split",  # entered only when task.sources is set
    "sparsity.mask_path",  # the mask_file step (content hash)
    "sparsity.importance",  # derived.importance (method=random forces random)
    "sparsity.seed",  # derived.mask_seed (a ``seeded`` importance only)
    "schedule.stages",  # one stage step per entry
    "sparsity.allocation", "sparsity.owl",  # mask key only with allocation=owl (calibrated too)
    "sparsity.sparsegpt",  # mask key only where the importance's spec lists it (config_keys)
    "sparsity.options",  # the same, for scores, mask methods and structures from outside ftlab
)


#: Step kinds whose product is stored (the others are built in memory, read from a file, or are
#: the private root of a trial's training).
CACHEABLE = ("base", "mask", "stage", "data", "init")


@dataclass(frozen=True)
class Step:
    kind: str
    key: str
    parent: str | None
    config: dict[str, Any]
    version: int
    cached: bool = False  # goes through the reuse store in this run (:func:`cache_policy`)


@dataclass(frozen=True)
class RunSteps:
    model: Step
    base: Step | None
    mask: Step | None
    train: Step
    stages: list[Step]
    why_not_cached: str = ""  # why the cacheable steps are not cached ("" when they are)
    data: Step | None = None  # the tokenized train/val data (task=instruct, ftlab.data.tokenized)
    init: Step | None = None  # a LoRA init that rewrites the frozen base (PiSSA, OLoRA), over the weights

    @property
    def weights(self) -> Step:
        """The step whose output the adapter is built on."""
        return self.mask or self.base or self.model

    def all(self) -> list[Step]:
        """Every step, root first (the data step, a root of its own, first of all)."""
        return [s for s in (self.data, self.model, self.base, self.mask, self.init, self.train)
                if s is not None] + list(self.stages)

    def labelled(self) -> list[tuple[str, Step]]:
        """Every step with the name the planner and ``python -m ftlab.cache`` print (``stage 2``)."""
        out = [(s.kind, s) for s in (self.data, self.model, self.base, self.mask, self.init, self.train)
               if s is not None]
        return out + [(f"stage {i}", s) for i, s in enumerate(self.stages, start=1)]

    def cached_text(self, step: Step) -> str:
        """``yes``, or ``no`` with the reason where the policy (not the step's kind) decides."""
        if step.cached:
            return "yes"
        return f"no ({self.why_not_cached})" if step.kind in CACHEABLE and self.why_not_cached else "no"

    @property
    def uses_cache(self) -> bool:
        """Some step of the run goes through the store (checked at composition: the cache dir must
        be writable)."""
        return any(s.cached for s in self.all())

    @property
    def caches_stages(self) -> bool:
        """``schedule=stages`` and its stages go through the store."""
        return bool(self.stages) and self.stages[0].cached

    def shared(self, step: Step) -> bool:
        """Whether two trials with this step's key share its product: it is cached, or it is a mask
        file (read, nothing stored) where the policy caches. The planner's stage tree reads this."""
        return step.cached or (step.kind == "mask_file" and not self.why_not_cached)


def world_size(c: Mapping[str, Any]) -> int:
    return int(lookup(c, "hardware.devices", 1)) * int(lookup(c, "hardware.num_nodes", 1))


def cache_policy(c: Mapping[str, Any]) -> str:
    """The one caching rule: ``""`` when the run's cacheable steps go through the store, else why
    not. Under DDP every rank would take the build lock of a step that needs all ranks, and a
    rank-0-only publish of a stage would need collective checkpoint saving."""
    if not lookup(c, "reuse.enabled", True):
        return "reuse.enabled=false"
    if world_size(c) != 1:
        return "distributed training (devices x nodes > 1)"
    return ""


def make_step(kind: str, parent: Step | None, config: dict[str, Any], cached: bool = False) -> Step:
    version = VERSIONS[kind]
    pkey = parent.key if parent else None
    return Step(kind, step_key(kind, pkey, config, version), pkey, config, version, cached and kind in CACHEABLE)


def _or(value: Any, fallback: Any) -> Any:
    return fallback if value is None else value


def environment() -> dict[str, str]:
    """Versions of the code that produces every artifact (stale hits across upgrades are worse
    than one rebuild)."""
    # str(): torch.__version__ is a TorchVersion, which a weights_only load would refuse
    return {"ftlab": str(ftlab.__version__), "torch": str(torch.__version__),
            "transformers": str(transformers.__version__)}


# -- the steps -----------------------------------------------------------------------------
def model_step(c: dict[str, Any]) -> Step:
    config = pick(c, MODEL_KEYS)
    config["derived.init_seed"] = _or(lookup(c, "model.init_seed", None), c["seed"])
    config["derived.model_files"] = fingerprint(lookup(c, "model.name_or_path", None))
    if lookup(c, "model.resize_embeddings", False):  # a resized embedding is another model
        config["derived.resize_embeddings"] = True
    config["derived.environment"] = environment()
    return make_step("model", None, config)


def base_step(c: dict[str, Any], model: Step) -> Step | None:
    if not lookup(c, "base.enabled", False):
        return None
    config = pick(c, BASE_KEYS)
    config["derived.base_seed"] = _or(lookup(c, "base.seed", None), c["seed"])
    config["derived.task_file"] = content_fingerprint(lookup(c, "task.path", None))
    return make_step("base", model, config, cached=not cache_policy(c))


def importance(c: dict[str, Any]) -> str:
    """The importance the mask is scored with (``method=random`` forces random)."""
    return effective_importance(c.get("sparsity") or {})


def importance_of_plan(c: dict[str, Any]) -> ImportanceSpec:
    """The spec of the run's importance: its flags decide what the mask key covers."""
    return importance_spec(c.get("sparsity") or {})


def calibrated(c: dict[str, Any]) -> bool:
    """The mask reads calibration batches (a ``calibrated`` importance, or OWL's allocation)."""
    return importance_of_plan(c).calibrated or lookup(c, "sparsity.allocation", "uniform") == "owl"


def method_keys(c: dict[str, Any]) -> tuple[str, ...]:
    """The mask method's own ``config_keys`` and, for a ``finds_structures`` method, its
    structure's (:mod:`ftlab.sparsity.methods`, :mod:`ftlab.sparsity.structures`)."""
    method = find_method(lookup(c, "sparsity.method", "none"))
    if method is None:
        return ()
    structure = get_structure(lookup(c, "sparsity.structure", "channel")) if method.finds_structures else None
    return tuple(method.config_keys) + (tuple(structure.config_keys) if structure is not None else ())


def mask_keys(c: dict[str, Any]) -> tuple[str, ...]:
    """The allow-list of the mask step for this config, derived from the specs: calibration
    settings for a ``calibrated`` score (or OWL), OWL's options with OWL, the score's own
    ``config_keys`` and the mask method's (and its structure's)."""
    owl = lookup(c, "sparsity.allocation", "uniform") == "owl"
    return (MASK_KEYS + (CALIBRATION_KEYS if calibrated(c) else ())
            + (("sparsity.allocation", "sparsity.owl") if owl else ())
            + tuple(importance_of_plan(c).config_keys) + method_keys(c))


def mask_step(c: dict[str, Any], parent: Step) -> Step | None:
    sp = c.get("sparsity") or {}
    if sp.get("mask_path"):
        return make_step("mask_file", parent, {"derived.mask_file": fingerprint(sp["mask_path"])})
    if sp.get("method", "none") == "none":
        return None
    config = pick(c, mask_keys(c))
    config["derived.importance"] = importance(c)
    if importance_of_plan(c).seeded:
        config["derived.mask_seed"] = _or(sp.get("seed"), c["seed"])
    if calibrated(c):
        config["derived.task_file"] = content_fingerprint(lookup(c, "task.path", None))
        config.update(data_format(c))
    return make_step("mask", parent, config, cached=not cache_policy(c))


def data_format(c: dict[str, Any]) -> dict[str, Any]:
    """``task=instruct``'s format keys that are set (a chat template file by its content hash)."""
    out = {k: lookup(c, k, None) for k in ("task.format", "task.columns", "task.prompt_template",
                                            "task.last_turn_only") if lookup(c, k, None)}
    if lookup(c, "task.chat_template", None):
        out["derived.chat_template"] = fingerprint(lookup(c, "task.chat_template", None))
    if lookup(c, "task.sources", None):
        out["derived.sources"] = source_fingerprints(c)
        out.update({k: bool(lookup(c, k, False)) for k in ("task.mixture_replacement", "task.mixture_shared_split")})
    return out


def source_fingerprints(c: dict[str, Any]) -> list[dict[str, Any]]:
    """Each ``task.sources`` entry with its file's content hash."""
    return [{**dict(src), "derived.file": content_fingerprint(str(dict(src).get("path")))}
            for src in (lookup(c, "task.sources", None) or [])]


#: What the tokenized data of a run depends on besides the source file and the format keys: the
#: seeded split, the length cut and the tokenizer.
DATA_KEYS = ("seed", "task.name", "task.num_examples", "task.val_fraction", "task.test_fraction",
             "task.max_length", "task.options", "model.tokenizer")


def data_step(c: dict[str, Any]) -> Step | None:
    """The tokenized train/val split of ``task=instruct`` (a root: it does not depend on the
    weights). The data enter by content (:func:`content_fingerprint`), the tokenizer by kind and,
    for a model dir's own, by the content of the dir's files other than weights."""
    if not lookup(c, "task.format", None):
        return None
    config = pick(c, DATA_KEYS)
    config["derived.task_file"] = content_fingerprint(lookup(c, "task.path", None))
    config.update(data_format(c))
    if lookup(c, "model.tokenizer", "byte") != "byte":
        config["derived.tokenizer_files"] = tokenizer_fingerprint(lookup(c, "model.name_or_path", None))
    config["derived.environment"] = environment()
    return make_step("data", None, config, cached=not cache_policy(c))


def init_step(c: dict[str, Any], parent: Step) -> Step | None:
    """The LoRA init over the weights when its spec makes it a step (it rewrites the base or reads
    data): two runs with the same init, weights (and batches) share its product."""
    spec = init_spec(lookup(c, "adapter.init", None))
    if not spec.step:
        return None
    config = pick(c, INIT_KEYS + spec.config_keys + (INIT_DATA_KEYS if spec.data else ()))
    if spec.data:
        config["derived.task_file"] = fingerprint(lookup(c, "task.path", None))
        config.update(data_format(c))
    return make_step("init", parent, config, cached=not cache_policy(c))


def train_step(c: dict[str, Any], parent: Step) -> Step:
    config = pick(c, TRAIN_KEYS)
    config["derived.task_file"] = content_fingerprint(lookup(c, "task.path", None))
    config.update(data_format(c))
    return make_step("train", parent, config)


def stage_config(stage: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stage.items() if k not in STAGE_LABELS}


def stage_steps(c: dict[str, Any], root: Step) -> list[Step]:
    if not is_staged(c.get("schedule") or {}):
        return []
    out, parent = [], root
    for stage in lookup(c, "schedule.stages", None) or []:
        parent = make_step("stage", parent, stage_config(dict(stage)), cached=not cache_policy(c))
        out.append(parent)
    return out


def run_steps(c: dict[str, Any]) -> RunSteps:
    """The plan of steps of one run (plain resolved config), each with its key and whether it
    is cached here."""
    model = model_step(c)
    base = base_step(c, model)
    mask = mask_step(c, base or model)
    init = init_step(c, mask or base or model)
    train = train_step(c, init or mask or base or model)
    return RunSteps(model, base, mask, train, stage_steps(c, train), cache_policy(c), data_step(c), init)


def as_plain(cfg: Any) -> dict[str, Any]:
    """A run config (DictConfig or dict) as a plain resolved dict."""
    if isinstance(cfg, DictConfig):
        if "hydra" in cfg:  # composed with its hydra node (checks at composition): no step reads it, and
            cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])  # it resolves only in a job
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg)


def cache_dir(c: dict[str, Any]) -> Path:
    return Path(os.path.expanduser(lookup(c, "paths.cache_dir", "experiments/.cache")))
