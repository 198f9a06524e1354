"""Range checks a type cannot express. Each failure is one :class:`ConfigError` line.

Group-specific checks live next to the code that owns the group (an adapter's in its registry
spec, the sparsity checks in :mod:`ftlab.sparsity.config` ...); this module calls them in order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ftlab.adapters.registry import all_adapters, get_adapter
from ftlab.config.schema import SparsityConfig
from ftlab.config.values import check_values
from ftlab.core.errors import UnknownKeyError, fail
from ftlab.data.tasks import build_task, task_names, validate_real_task
from ftlab.hardware import get_target
from ftlab.launchers.slurm import validate_launcher as check_slurm_launcher
from ftlab.models.memory import validate_model as check_model_memory
from ftlab.preflight.environment import check_resume
from ftlab.preflight.model_checks import check_model
from ftlab.preflight.reuse_checks import validate_cache_dir as check_cache_dir
from ftlab.sparsity.config import validate_sparsity as check_sparsity
from ftlab.training.loggers import get_logger
from ftlab.training.schedules import get_schedule, is_staged

PRECISIONS = ("32-true", "32", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "64-true")


def validate_schedule(cfg) -> None:
    s = cfg.schedule
    spec = get_schedule(s.name)  # one line naming the registered schedules when unknown
    if spec.staged:
        if not s.stages:
            fail("schedule.stages", s.stages, "a non-empty list of {iters, lr}")
        for i, st in enumerate(s.stages):
            for key in ("iters", "lr"):
                if OmegaConf.is_config(st) and OmegaConf.is_missing(st, key):
                    fail(f"schedule.stages[{i}].{key}", "???", "set for every stage, e.g. "
                         "schedule.stages='[{iters: 100, lr: 1e-3}, {iters: 50, lr: 1e-4}]'")


def validate_train_length(cfg) -> None:
    """Exactly one of ``train.max_steps`` and ``train.max_epochs``."""
    t = cfg.train
    epochs = t.get("max_epochs")
    if epochs is None:
        if t.max_steps is None:
            fail("train.max_steps", None, "an integer >= 1, or null with train.max_epochs set (exactly one of them)")
        return  # ranges: the fields' own bounds (ftlab.config.values)
    if t.max_steps is not None:
        fail("train.max_steps", t.max_steps, f"null when train.max_epochs={epochs} is set (exactly one of them: "
                                             "add train.max_steps=null)")
    if is_staged(cfg.schedule):
        fail("train.max_epochs", epochs, f"null for schedule={cfg.schedule.name} (its stages count their own iters)")
    target = get_target(cfg.hardware.accelerator)
    if not target.counts_epochs:
        fail("train.max_epochs", epochs, f"null with hardware.accelerator={cfg.hardware.accelerator} (its {target.label or target.name} "
             "job is counted in train.max_steps)")


def validate_train(cfg) -> None:
    t = cfg.train
    validate_train_length(cfg)
    if t.packing and t.pack_length is not None and t.pack_length < cfg.task.max_length:
        fail("train.pack_length", t.pack_length, f"an integer >= task.max_length ({cfg.task.max_length}) or null")
    if t.packing and t.group_by_length:
        fail("train.group_by_length", True, "false when train.packing=true (packed rows all have pack_length tokens)")


def validate_hardware(cfg) -> None:
    h = cfg.hardware
    target = get_target(h.accelerator)  # one line naming the registered targets when unknown
    if target.in_process and str(h.precision) not in PRECISIONS:  # Lightning's; a launcher checks its own
        fail("hardware.precision", h.precision, f"one of {list(PRECISIONS)}")
    if target.validate is not None:
        target.validate(cfg)


def validate_task(cfg) -> None:
    t = cfg.task
    if t.name not in task_names():
        fail("task.name", t.name, f"one of {task_names()}")
    task = build_task(t)
    task.check_options()
    if t.path is not None and not (Path(t.path).is_file() or (task.reads_directories and Path(t.path).is_dir())):
        fail("task.path", t.path, "an existing data file")
    if t.val_fraction + t.test_fraction >= 1.0:
        fail("task.val_fraction+task.test_fraction", t.val_fraction + t.test_fraction, "a sum < 1")


def validate_logger(cfg) -> None:
    spec = get_logger(cfg.logger.name)  # one line naming the registered loggers when unknown
    if spec.validate is not None:
        spec.validate(cfg.logger)


def validate_adapter(cfg) -> None:
    spec = get_adapter(cfg.adapter.name)
    if spec.validate is not None:
        spec.validate(cfg.adapter, cfg)


def validate_resume(cfg) -> None:
    check_resume(cfg)


def validate_model(cfg) -> None:
    check_model(cfg)


def validate_task_metric(cfg) -> None:
    from ftlab.evaluation.metrics import (
        SCORERS,  # torchmetrics (loads matplotlib): not at `python -m ftlab` start-up
    )

    if cfg.task.metric not in SCORERS:
        fail("task.metric", cfg.task.metric, f"one of {sorted(SCORERS)}")
    validate_real_task(cfg)


def validate_sparsity(cfg) -> None:
    check_sparsity(cfg)


def validate_stage_thresholds(cfg) -> None:
    """A per-stage ``sparse_lambda_2`` only means something for a gated adapter."""
    s = cfg.schedule
    if not is_staged(s) or not s.stages or get_adapter(cfg.adapter.name).gated:
        return
    gated = "/".join(a.name for a in all_adapters() if a.gated)
    for i, st in enumerate(s.stages):
        if st.sparse_lambda_2 is not None:
            fail(f"schedule.stages[{i}].sparse_lambda_2", st.sparse_lambda_2,
                 f"unset for adapter={cfg.adapter.name} (only {gated} have a threshold)")


def validate_known_keys(cfg) -> None:
    """``+key=value`` adds a key no schema has (``+train.batch_sise=4``); nothing would read it."""
    def walk(node: Any, prefix: str) -> None:
        cls = OmegaConf.get_type(node)
        if dataclasses.is_dataclass(cls):
            fields = {f.name for f in dataclasses.fields(cls)}
            for key in node:
                if key not in fields and not (prefix == "" and key == "hydra"):
                    raise UnknownKeyError(f"{prefix}{key}", cls.__name__, ", ".join(sorted(fields)))
        for key in node:
            if key != "hydra" and OmegaConf.is_dict(node._get_node(key)) and node[key] is not None:
                walk(node[key], f"{prefix}{key}.")

    walk(cfg, "")


def validate_unused_sparsity(cfg) -> None:
    """``sparsity=none`` with a sparsity key set (``sparsity.level=0.5``) would silently train the
    dense model: the keys only act once a method (or a mask file) is chosen."""
    sp = cfg.sparsity
    if sp.method != "none" or sp.mask_path:
        return
    defaults = OmegaConf.structured(SparsityConfig)
    for key in defaults:
        if key in ("name", "method", "mask_path"):
            continue
        if OmegaConf.select(sp, key) != OmegaConf.select(defaults, key):
            value = OmegaConf.to_container(sp[key]) if OmegaConf.is_config(sp[key]) else sp[key]
            fail(f"sparsity.{key}", value, "left unset with sparsity=none (a dense base); choose a method "
                 "first, e.g. sparsity=unstructured, structured, nm or random, or sparsity.mask_path=FILE")


def validate_cache_dir(cfg) -> None:
    check_cache_dir(cfg)


def validate_model_memory(cfg) -> None:
    check_model_memory(cfg, [a.name for a in all_adapters() if a.supports_quantized_base],
                       host_cpu=get_target(cfg.hardware.accelerator).host_cpu)


def validate_launcher(cfg) -> None:
    """With its ``hydra`` node composed: a SLURM launcher asks for the job's own device layout."""
    check_slurm_launcher(cfg)


def validate_values(cfg) -> None:
    """Each value against its schema field's own rules (finite, bounds, non-empty)."""
    check_values(cfg)


#: Ordered checks; other groups append theirs (e.g. sparsity, launchers).
VALIDATORS: list[Callable[[Any], None]] = [
    validate_known_keys,
    validate_values,  # before anything is built from a value
    validate_model_memory,  # before the meta-device build, which fails on an unavailable kernel
    validate_model,
    validate_adapter,
    validate_schedule,
    validate_train,
    validate_hardware,
    validate_task,
    validate_task_metric,
    validate_logger,
    validate_resume,
    validate_sparsity,
    validate_unused_sparsity,
    validate_cache_dir,
    validate_launcher,
    validate_stage_thresholds,
]


def validate_config(cfg) -> None:
    """Raise :class:`ftlab.core.errors.ConfigError` on the first bad value."""
    for check in VALIDATORS:
        check(cfg)
