"""The plan of steps of an ftlab run, what each step's key covers (one :class:`StepSpec` per step
kind), and the caching policy: which steps go through the reuse store on this hardware
(:func:`cache_policy`).

    model ─> base (continued pre-training, cached) ─> mask (cached) ─> init (cached) ─> train root ─> stage 1 ...

(``init``: only for a LoRA init that is a step, :class:`ftlab.adapters.inits.InitSpec`: PiSSA and
OLoRA rewrite the frozen base.)

A step's key covers what its spec names: ``reads``, schema fields written as typed references
(``MODEL.name_or_path``: :mod:`ftlab.config.refs` checks each against its dataclass when this
module is imported, so a renamed field fails here, not as a key that silently reads ``None``);
``capability_reads(c)``, the keys a registered spec of the run names (the importance score's, the
mask method's and its structure's, the LoRA init's ``config_keys``; the calibration settings of a
``calibrated`` score, OWL's with OWL), checked against the schema when the key is computed; and
``derive(c)``, values the code derives, entered under a ``derived.`` name (effective seeds, a data
file's content), with ``derives_from`` naming the fields they come from. :func:`step_config` is
the one function that turns a spec and a run config into a step's config; :func:`plan_step`
chains its key to the parent's. A config key that no spec reads, derives from or
:data:`EXCLUDED` lists is caught by ``tests/reuse/test_reuse_keys.py``, which walks the whole
composed config; ``tests/reuse/test_step_keys_golden.py`` holds the keys of 53 composed configs,
so no refactoring moves a key (bump :data:`VERSIONS` where a key must change).

:func:`run_steps` computes the plan once per run: the composition checks
(:mod:`ftlab.preflight.reuse_checks`) compute it and hand it to the run
(:mod:`ftlab.reuse.handover`), whose :class:`ftlab.reuse.runner.StepRunner` holds it; the recipe
executes it through that one runner (base and mask directly, stages through
:class:`ftlab.reuse.stages.StageRun`, which uses the runner's store primitives), the planner
prints it (``python -m ftlab.plan``: :mod:`ftlab.plan.stages`, :mod:`ftlab.plan.report`) and
``python -m ftlab.cache ls --run`` describes its entries. :func:`cache_policy` is the only caching
decision.

Functions take the run config as a plain dict (:func:`as_plain`, once per run: the runner's).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from omegaconf import DictConfig, OmegaConf

import ftlab
from ftlab.adapters.inits import InitSpec, init_spec
from ftlab.adapters.peft_lora import LoraConfig
from ftlab.adapters.registry import all_adapters
from ftlab.artifacts.keys import lookup, pick, step_key
from ftlab.artifacts.manifest import content_fingerprint, fingerprint, tokenizer_fingerprint
from ftlab.config.refs import RUN, Section, check_key
from ftlab.config.schema import StageConfig
from ftlab.sparsity.importance import ImportanceSpec, effective_importance, importance_spec
from ftlab.sparsity.methods import find_method
from ftlab.sparsity.structures import get_structure
from ftlab.training.schedules import is_staged

#: Format version per step kind: bump when the artifact layout or the producing code changes
#: results for the same config. (mask 3: masks cover fused MoE experts and Conv1D layers.)
VERSIONS = {"model": 1, "base": 1, "mask": 3, "mask_file": 1, "train": 1, "stage": 1, "data": 1, "init": 1}

# The schema sections the keys read: every reference below is checked against its dataclass when
# this module is imported (ftlab.config.refs), so a renamed or misspelt field fails here.
MODEL, BASE, SPARSITY, TASK, TRAIN = RUN.model, RUN.base, RUN.sparsity, RUN.task, RUN.train
HARDWARE, SCHEDULE, PATHS, REUSE = RUN.hardware, RUN.schedule, RUN.paths, RUN.reuse
#: The LoRA family's fields (the init step exists for a LoRA adapter only).
LORA = Section("adapter", LoraConfig)
#: One entry of ``schedule.stages``: a stage step's config is the entry itself.
STAGE = Section("", StageConfig)

MODEL_KEYS = (MODEL.name_or_path, MODEL.arch, MODEL.config, MODEL.dtype, MODEL.tokenizer,
              MODEL.attn_implementation)

HARDWARE_KEYS = (HARDWARE.accelerator, HARDWARE.devices, HARDWARE.num_nodes, HARDWARE.strategy,
                 HARDWARE.precision, HARDWARE.num_csx)

#: Optimiser settings that pre-training shares with fine-tuning (``FtlabModule``/``build_trainer``).
OPTIM_KEYS = (TRAIN.weight_decay, TRAIN.betas, TRAIN.eps, TRAIN.gradient_clip_val, TRAIN.deterministic)

BASE_KEYS = (BASE.corpus, BASE.num_examples, BASE.steps, BASE.lr, BASE.batch_size, BASE.max_length,
             BASE.warmup_steps, RUN.seed, TASK.name, TASK.options, *OPTIM_KEYS, *HARDWARE_KEYS)

MASK_KEYS = (SPARSITY.method, SPARSITY.level, SPARSITY.group, SPARSITY.n, SPARSITY.m,
             SPARSITY.structure, SPARSITY.modules)
#: The seeded split of the task's train split (what calibration batches and tokenized data come from).
SPLIT_KEYS = (RUN.seed, TASK.name, TASK.num_examples, TASK.val_fraction, TASK.test_fraction, TASK.max_length,
              TASK.options)
#: What a ``calibrated`` importance (its :class:`~ftlab.sparsity.importance.ImportanceSpec`) or OWL
#: reads: batches of the task's train split.
CALIBRATION_KEYS = (SPARSITY.calibration.key, *SPLIT_KEYS)
#: OWL's own settings (mask key only with ``sparsity.allocation=owl``).
OWL_KEYS = (SPARSITY.allocation, SPARSITY.owl)

#: What a LoRA init that is a step reads (besides its parent's weights): which linears it factorises,
#: the rank, and the scaling s (PiSSA/OLoRA write W - s B0 A0 into the base).
INIT_KEYS = (LORA.name, LORA.init, LORA.r, LORA.alpha, LORA.use_rslora, LORA.target_modules, MODEL.target_modules)
#: What a data-driven init (EVA, CorDA) reads besides: its batches of the task's seeded train split.
INIT_DATA_KEYS = (LORA.calibration.key, *SPLIT_KEYS)

#: Memory features of a fine-tuning run (a k-bit base changes the numbers; checkpointing is kept
#: apart too, although its recomputation is exact, so that a cache hit never hides a failing mode).
MEMORY_KEYS = (MODEL.quantization, TRAIN.gradient_checkpointing)

#: How examples form batches (packed rows, length-grouped order): other batches, other weights.
BATCHING_KEYS = (TRAIN.packing, TRAIN.pack_length, TRAIN.group_by_length)

TRAIN_KEYS = (RUN.seed, RUN.adapter, MODEL.target_modules, SCHEDULE.name, SCHEDULE.lr, SPARSITY.mode,
              TRAIN.batch_size, TRAIN.accumulate_grad_batches, *OPTIM_KEYS, *SPLIT_KEYS[1:],
              *HARDWARE_KEYS, *MEMORY_KEYS, *BATCHING_KEYS)

#: What the tokenized data of a run depends on besides the source file and the format keys: the
#: seeded split, the length cut and the tokenizer.
DATA_KEYS = (*SPLIT_KEYS, MODEL.tokenizer)

#: ``task=instruct``'s format keys, entered when set (the keys of the other tasks stay as they were).
FORMAT_KEYS = (TASK.format, TASK.columns, TASK.prompt_template, TASK.last_turn_only)
#: The mixture's switches, entered only when ``task.sources`` is set.
MIXTURE_KEYS = (TASK.mixture_replacement, TASK.mixture_shared_split)

#: Per-stage keys that only label a stage.
STAGE_LABELS = (STAGE.name,)

#: Keys that change nothing any cached step computes: naming, logging, outputs, evaluation, and
#: the schedule keys ``schedule=stages`` does not read.
EXCLUDED = (
    RUN.name, RUN.tags, RUN.logger.key, RUN.eval.key, RUN.paths.key, RUN.reuse.key, RUN.resume,
    MODEL.name, HARDWARE.name, HARDWARE.memory_gb, SPARSITY.name, SPARSITY.levels,
    TASK.max_new_tokens, TASK.metric, TASK.eval_examples,
    SCHEDULE.warmup_steps, SCHEDULE.min_lr_ratio,
    TRAIN.eval_batch_size, TRAIN.max_steps, TRAIN.max_epochs, TRAIN.log_every_n_steps, TRAIN.save_every_n_steps,
    TRAIN.save_epoch_checkpoints, TRAIN.keep_checkpoints, TRAIN.log_measurements, TRAIN.save_adapter,
    TRAIN.save_merged_model, TRAIN.num_workers,
    # when training stops and which evaluated state is exported: the weights at each step are the same
    TRAIN.early_stopping.key, RUN.export.key,
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
    return int(lookup(c, HARDWARE.devices, 1)) * int(lookup(c, HARDWARE.num_nodes, 1))


def cache_policy(c: Mapping[str, Any]) -> str:
    """The one caching rule: ``""`` when the run's cacheable steps go through the store, else why
    not. Under DDP every rank would take the build lock of a step that needs all ranks, and a
    rank-0-only publish of a stage would need collective checkpoint saving."""
    if not lookup(c, REUSE.enabled, True):
        return "reuse.enabled=false"
    if world_size(c) != 1:
        return "distributed training (devices x nodes > 1)"
    return ""


def _or(value: Any, fallback: Any) -> Any:
    return fallback if value is None else value


def environment() -> dict[str, str]:
    """Versions of the code that produces every artifact (stale hits across upgrades are worse
    than one rebuild)."""
    # str(): torch.__version__ is a TorchVersion, which a weights_only load would refuse
    return {"ftlab": str(ftlab.__version__), "torch": str(torch.__version__),
            "transformers": str(transformers.__version__)}


# -- the specs: what each step kind's key covers ---------------------------------------------
def _nothing(c: Mapping[str, Any]) -> Any:
    return {}


def _no_reads(c: Mapping[str, Any]) -> tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class StepSpec:
    """What the key of one step kind covers, so that the whole of it is read in one place.

    ``reads``: schema fields entered as they are (typed references, checked at import);
    ``capability_reads(c)``: fields a registered spec of the run names (the importance score's,
    the mask method's and its structure's, the LoRA init's ``config_keys``; calibration settings
    for a ``calibrated`` score), checked against the schema by :func:`ftlab.config.refs.check_key`
    when the key is computed; ``derive(c)``: the values the code derives (``derived.*``: effective
    seeds, content hashes, format keys entered only when set); ``derives_from``: the fields those
    come from or that select the step (classified as such, for ``tests/reuse/test_reuse_keys.py``)."""

    kind: str
    reads: tuple[str, ...] = ()
    derives_from: tuple[str, ...] = ()
    derive: Callable[[Mapping[str, Any]], dict[str, Any]] = _nothing
    capability_reads: Callable[[Mapping[str, Any]], tuple[str, ...]] = _no_reads

    @property
    def version(self) -> int:
        return VERSIONS[self.kind]

    @property
    def cacheable(self) -> bool:
        return self.kind in CACHEABLE


def _adapter_schemas() -> dict[str, tuple[type, ...]]:
    """The adapter families' schemas: the ``adapter`` section of the run schema is chosen per run."""
    return {RUN.adapter: tuple(a.config_cls for a in all_adapters())}


def step_config(spec: StepSpec, c: Mapping[str, Any]) -> dict[str, Any]:
    """The config values a step's key covers: its spec's reads, the capability reads of this run
    (each checked against the schema) and the derived values."""
    schemas = _adapter_schemas()
    reads = spec.reads + tuple(check_key(k, schemas) for k in spec.capability_reads(c))
    return {**pick(c, reads), **spec.derive(c)}


def make_step(kind: str, parent: Step | None, config: dict[str, Any], cached: bool = False) -> Step:
    """A step of ``kind`` over ``config`` (its key chains ``parent``'s)."""
    version = VERSIONS[kind]
    pkey = parent.key if parent else None
    return Step(kind, step_key(kind, pkey, config, version), pkey, config, version, cached and kind in CACHEABLE)


def plan_step(spec: StepSpec, c: Mapping[str, Any], parent: Step | None) -> Step:
    """The one way a step of the plan gets its key: the spec's config of ``c``, chained to ``parent``;
    cached where the spec's kind is stored and :func:`cache_policy` allows."""
    return make_step(spec.kind, parent, step_config(spec, c), cached=not cache_policy(c))


def data_format(c: Mapping[str, Any]) -> dict[str, Any]:
    """``task=instruct``'s format keys that are set (a chat template file by its content hash)."""
    out = {k: lookup(c, k, None) for k in FORMAT_KEYS if lookup(c, k, None)}
    if lookup(c, TASK.chat_template, None):
        out["derived.chat_template"] = fingerprint(lookup(c, TASK.chat_template, None))
    if lookup(c, TASK.sources, None):
        out["derived.sources"] = source_fingerprints(c)
        out.update({k: bool(lookup(c, k, False)) for k in MIXTURE_KEYS})
    return out


#: The fields :func:`data_format` reads.
FORMAT_FROM = (*FORMAT_KEYS, TASK.chat_template, TASK.sources, *MIXTURE_KEYS)


def source_fingerprints(c: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each ``task.sources`` entry with its file's content hash."""
    return [{**dict(src), "derived.file": content_fingerprint(str(dict(src).get("path")))}
            for src in (lookup(c, TASK.sources, None) or [])]


def _task_file(c: Mapping[str, Any]) -> dict[str, Any]:
    return {"derived.task_file": content_fingerprint(lookup(c, TASK.path, None))}


def _model_derived(c: Mapping[str, Any]) -> dict[str, Any]:
    out = {"derived.init_seed": _or(lookup(c, MODEL.init_seed, None), lookup(c, RUN.seed)),
           "derived.model_files": fingerprint(lookup(c, MODEL.name_or_path, None))}
    if lookup(c, MODEL.resize_embeddings, False):  # a resized embedding is another model
        out["derived.resize_embeddings"] = True
    out["derived.environment"] = environment()
    return out


def _base_derived(c: Mapping[str, Any]) -> dict[str, Any]:
    return {"derived.base_seed": _or(lookup(c, BASE.seed, None), lookup(c, RUN.seed)), **_task_file(c)}


def importance(c: Mapping[str, Any]) -> str:
    """The importance the mask is scored with (``method=random`` forces random)."""
    return effective_importance(lookup(c, SPARSITY.key, None) or {})


def importance_of_plan(c: Mapping[str, Any]) -> ImportanceSpec:
    """The spec of the run's importance: its flags decide what the mask key covers."""
    return importance_spec(lookup(c, SPARSITY.key, None) or {})


def owl(c: Mapping[str, Any]) -> bool:
    return lookup(c, SPARSITY.allocation, "uniform") == "owl"


def calibrated(c: Mapping[str, Any]) -> bool:
    """The mask reads calibration batches (a ``calibrated`` importance, or OWL's allocation)."""
    return importance_of_plan(c).calibrated or owl(c)


def method_keys(c: Mapping[str, Any]) -> tuple[str, ...]:
    """The mask method's own ``config_keys`` and, for a ``finds_structures`` method, its
    structure's (:mod:`ftlab.sparsity.methods`, :mod:`ftlab.sparsity.structures`)."""
    method = find_method(lookup(c, SPARSITY.method, "none"))
    if method is None:
        return ()
    structure = get_structure(lookup(c, SPARSITY.structure, "channel")) if method.finds_structures else None
    return tuple(method.config_keys) + (tuple(structure.config_keys) if structure is not None else ())


def _mask_capability_reads(c: Mapping[str, Any]) -> tuple[str, ...]:
    """Calibration settings for a ``calibrated`` score (or OWL), OWL's options with OWL, the score's
    own ``config_keys`` and the mask method's (and its structure's)."""
    return ((CALIBRATION_KEYS if calibrated(c) else ()) + (OWL_KEYS if owl(c) else ())
            + tuple(importance_of_plan(c).config_keys) + method_keys(c))


def mask_keys(c: Mapping[str, Any]) -> tuple[str, ...]:
    """The allow-list of the mask step for this config, derived from the specs."""
    return MASK_KEYS + _mask_capability_reads(c)


def _mask_derived(c: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"derived.importance": importance(c)}
    if importance_of_plan(c).seeded:
        out["derived.mask_seed"] = _or(lookup(c, SPARSITY.seed, None), lookup(c, RUN.seed))
    if calibrated(c):
        out.update(_task_file(c))
        out.update(data_format(c))
    return out


def _mask_file_derived(c: Mapping[str, Any]) -> dict[str, Any]:
    return {"derived.mask_file": fingerprint(lookup(c, SPARSITY.mask_path))}


def _data_derived(c: Mapping[str, Any]) -> dict[str, Any]:
    out = {**_task_file(c), **data_format(c)}
    if lookup(c, MODEL.tokenizer, "byte") != "byte":
        out["derived.tokenizer_files"] = tokenizer_fingerprint(lookup(c, MODEL.name_or_path, None))
    out["derived.environment"] = environment()
    return out


def _init_of(c: Mapping[str, Any]) -> InitSpec:
    return init_spec(lookup(c, LORA.init, None))


def _init_capability_reads(c: Mapping[str, Any]) -> tuple[str, ...]:
    spec = _init_of(c)
    return tuple(spec.config_keys) + (INIT_DATA_KEYS if spec.data else ())


def _init_derived(c: Mapping[str, Any]) -> dict[str, Any]:
    if not _init_of(c).data:
        return {}
    # fingerprint, not content_fingerprint: a directory of data enters by its files' names, sizes and times
    return {"derived.task_file": fingerprint(lookup(c, TASK.path, None)), **data_format(c)}


def _train_derived(c: Mapping[str, Any]) -> dict[str, Any]:
    return {**_task_file(c), **data_format(c)}


MODEL_STEP = StepSpec("model", MODEL_KEYS, (MODEL.init_seed, MODEL.resize_embeddings), _model_derived)
BASE_STEP = StepSpec("base", BASE_KEYS, (BASE.enabled, BASE.seed, TASK.path), _base_derived)
MASK_STEP = StepSpec("mask", MASK_KEYS, (SPARSITY.importance, SPARSITY.seed, SPARSITY.allocation, SPARSITY.owl,
                                         SPARSITY.sparsegpt.key, SPARSITY.options, TASK.path, *FORMAT_FROM),
                     _mask_derived, _mask_capability_reads)
MASK_FILE_STEP = StepSpec("mask_file", (), (SPARSITY.mask_path,), _mask_file_derived)
DATA_STEP = StepSpec("data", DATA_KEYS, (TASK.path, *FORMAT_FROM), _data_derived)
INIT_STEP = StepSpec("init", INIT_KEYS, (TASK.path, *FORMAT_FROM), _init_derived, _init_capability_reads)
TRAIN_STEP = StepSpec("train", TRAIN_KEYS, (TASK.path, *FORMAT_FROM), _train_derived)
#: A stage's config is its ``schedule.stages`` entry without the labels (:func:`stage_config`).
STAGE_STEP = StepSpec("stage", (), (SCHEDULE.stages,))

#: Every step kind's spec, in plan order.
SPECS = (DATA_STEP, MODEL_STEP, BASE_STEP, MASK_STEP, MASK_FILE_STEP, INIT_STEP, TRAIN_STEP, STAGE_STEP)

#: Keys that select a step or enter a key in derived form (``derived.*``), from the specs.
DERIVED = tuple(dict.fromkeys(k for spec in SPECS for k in spec.derives_from))


# -- the steps -----------------------------------------------------------------------------
def model_step(c: Mapping[str, Any]) -> Step:
    return plan_step(MODEL_STEP, c, None)


def base_step(c: Mapping[str, Any], model: Step) -> Step | None:
    return plan_step(BASE_STEP, c, model) if lookup(c, BASE.enabled, False) else None


def mask_step(c: Mapping[str, Any], parent: Step) -> Step | None:
    if lookup(c, SPARSITY.mask_path, None):
        return plan_step(MASK_FILE_STEP, c, parent)
    if lookup(c, SPARSITY.method, "none") == "none":
        return None
    return plan_step(MASK_STEP, c, parent)


def data_step(c: Mapping[str, Any]) -> Step | None:
    """The tokenized train/val split of ``task=instruct`` (a root: it does not depend on the
    weights). The data enter by content (:func:`content_fingerprint`), the tokenizer by kind and,
    for a model dir's own, by the content of the dir's files other than weights."""
    return plan_step(DATA_STEP, c, None) if lookup(c, TASK.format, None) else None


def init_step(c: Mapping[str, Any], parent: Step) -> Step | None:
    """The LoRA init over the weights when its spec makes it a step (it rewrites the base or reads
    data): two runs with the same init, weights (and batches) share its product."""
    return plan_step(INIT_STEP, c, parent) if _init_of(c).step else None


def train_step(c: Mapping[str, Any], parent: Step) -> Step:
    return plan_step(TRAIN_STEP, c, parent)


def stage_config(stage: Mapping[str, Any]) -> dict[str, Any]:
    """A stage step's config: its entry without the labels (each key a :class:`StageConfig` field:
    ``getattr`` on :data:`STAGE` refuses any other)."""
    return {getattr(STAGE, k): v for k, v in stage.items() if k not in STAGE_LABELS}


def stage_steps(c: Mapping[str, Any], root: Step) -> list[Step]:
    if not is_staged(lookup(c, SCHEDULE.key, None) or {}):
        return []
    out, parent = [], root
    for stage in lookup(c, SCHEDULE.stages, None) or []:
        parent = make_step(STAGE_STEP.kind, parent, stage_config(dict(stage)), cached=not cache_policy(c))
        out.append(parent)
    return out


def run_steps(c: Mapping[str, Any]) -> RunSteps:
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


def cache_dir(c: Mapping[str, Any]) -> Path:
    return Path(os.path.expanduser(lookup(c, PATHS.cache_dir, "experiments/.cache")))
