"""Checks of the ``sparsity`` group, run at composition for every job of a run or sweep.

Structural checks (which modules match, do they have heads, does N:M divide their width, does a
mask file fit) use the model built on the ``meta`` device, so they cost no weights and no data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ftlab.core.errors import fail
from ftlab.models.build import meta_model
from ftlab.sparsity.check import check_fit, check_model
from ftlab.sparsity.compute import layouts_for, spec_of
from ftlab.sparsity.importance import get_importance, importance_spec
from ftlab.sparsity.io import load_masks, mask_shapes, sidecar_path
from ftlab.sparsity.masks import GROUPS
from ftlab.sparsity.methods import NO_METHOD, MaskMethodSpec, all_methods, get_method
from ftlab.sparsity.selection import select_modules
from ftlab.sparsity.structures import get_structure

MODES = ("sparse_to_dense", "sparse_to_sparse")
ALLOCATIONS = ("uniform", "owl")
OWL_KEYS = ("threshold_m", "lambda")


def sparsity_enabled(sparsity_cfg: Any) -> bool:
    """A run has a sparse base when it names a method or a mask file."""
    return sparsity_cfg.method != "none" or bool(sparsity_cfg.mask_path)


def _level(key: str, value: Any) -> None:
    if not (isinstance(value, (int, float)) and 0.0 <= float(value) < 1.0):
        fail(key, value, "a number in [0, 1)")


def _meta_model(model_yaml: str):
    """The architecture on the meta device (no weights), or ``None`` if it cannot be built here."""
    return meta_model(model_yaml)


def check_agrees(sp: Any, meta: dict) -> None:
    """A configured method/level must be the mask file's; ``sparsity=none`` takes the file as is."""
    if sp.method == "none":
        return
    if sp.method != meta.get("method"):
        fail("sparsity.method", sp.method, f"the mask file's method {meta.get('method')!r} "
             "(or sparsity=none to use the file as it is)")
    if "level" in meta and abs(spec_of(sp).target - float(meta["level"])) > 1e-9:
        fail("sparsity.level", spec_of(sp).target, f"the mask file's level {meta['level']} "
             "(or sparsity=none to use the file as it is)")


def _structural_checks(cfg: Any) -> None:
    sp = cfg.sparsity
    model = _meta_model(OmegaConf.to_yaml(cfg.model, resolve=True))
    if model is None:
        return
    if sp.mask_path:
        shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
        # safetensors: the header alone; .pt: the (weights-only) file, as the run loads it
        found = mask_shapes(sp.mask_path) if Path(sp.mask_path).suffix == ".safetensors" \
            else load_masks(sp.mask_path)[0]
        check_fit(found, shapes, "sparsity.mask_path", sp.mask_path)
        side = sidecar_path(sp.mask_path)
        if side.is_file():
            try:
                meta = json.loads(side.read_text())
            except ValueError as err:
                fail("sparsity.mask_path", sp.mask_path, f"a mask whose sidecar {side.name} is JSON ({err})")
            check_model(meta, cfg.model.name, "sparsity.mask_path", sp.mask_path)
            check_agrees(sp, meta)
    if sp.method == "none":
        return
    spec = spec_of(sp)
    targets = select_modules(model, sp.modules)
    layouts_for(model, targets, spec)  # raises for structure=head on a module without heads
    if get_method(sp.method).needs_n_m:
        for name, lin in targets.items():
            if lin.in_features % sp.m:
                fail("sparsity.m", sp.m, f"a divisor of the input width of every pruned module; {name} has "
                     f"{lin.in_features} columns")


def _check_method(method: MaskMethodSpec, sp: Any) -> None:
    """What the method's spec says about the other keys, then its own settings."""
    if method.needs_n_m and not 1 <= sp.n < sp.m:
        fail("sparsity.n", sp.n, f"an integer in [1, sparsity.m={sp.m}): N:M prunes N of every M weights")
    if len(method.groups) == 1 and sp.group not in (None, method.groups[0]):
        fail("sparsity.group", sp.group, f"'{method.groups[0]}' for method={sp.method} (its groups are fixed by "
             "the method)")
    if sp.group is not None and sp.group not in method.groups:
        fail("sparsity.group", sp.group, f"one of {list(method.groups)} for method={sp.method}")
    if method.validate is not None:
        method.validate(sp)


def _check_importance(sp: Any) -> None:
    """The importance's spec decides: masks it can score, its own settings (``spec.validate``)."""
    spec = importance_spec(sp)
    if spec.methods is not None and sp.method not in spec.methods and sp.method != "none":
        fail("sparsity.importance", spec.name, f"an importance that scores method={sp.method} ({spec.name} "
             f"scores method={' or '.join(spec.methods)} only)")
    if spec.validate is not None and sp.method != "none":
        spec.validate(sp)


def _check_allocation(sp: Any) -> None:
    if sp.allocation not in ALLOCATIONS:
        fail("sparsity.allocation", sp.allocation, f"one of {list(ALLOCATIONS)}")
    unknown = sorted(set(sp.owl) - set(OWL_KEYS))
    if unknown:
        fail(f"sparsity.owl.{unknown[0]}", sp.owl[unknown[0]], f"one of the keys {list(OWL_KEYS)}")
    if sp.allocation != "owl":
        return
    if not get_method(sp.method).allocates:
        allocating = [m.name for m in all_methods() if m.allocates]
        fail("sparsity.allocation", "owl", f"method={' or '.join(allocating)} (OWL allocates per-layer levels of "
             f"unstructured masks; method={sp.method})")
    if sp.group == "global":
        fail("sparsity.group", "global", "'row' or 'layer' with allocation=owl (the layers' levels are allocated)")
    m, lam = sp.owl.get("threshold_m"), sp.owl.get("lambda")
    if not (isinstance(m, (int, float)) and m > 0):
        fail("sparsity.owl.threshold_m", m, "a number > 0 (an outlier scores above M x its layer's mean)")
    if not (isinstance(lam, (int, float)) and 0 <= lam < 1):
        fail("sparsity.owl.lambda", lam, "a number in [0, 1) (the half-width of the allocated levels)")


def validate_sparsity(cfg: Any) -> None:
    sp = cfg.sparsity
    q = cfg.model.quantization
    if q is not None and sparsity_enabled(sp):
        fail("sparsity", sp.name, f"none with model.quantization={q} (a mask writes zeros into the "
             "dense weights; prune and save a model first, then quantise that)")
    method = None if sp.method == NO_METHOD else get_method(sp.method)  # one line naming the registered ones
    get_importance(sp.importance)  # one line naming the registered scores when unknown
    if sp.group is not None and sp.group not in GROUPS:
        fail("sparsity.group", sp.group, f"one of {list(GROUPS)} (or null: row for wanda, layer otherwise)")
    get_structure(sp.structure)  # one line naming the registered structures when unknown
    if sp.mode not in MODES:
        fail("sparsity.mode", sp.mode, f"one of {list(MODES)}")
    _level("sparsity.level", sp.level)
    for i, level in enumerate(sp.levels or []):
        _level(f"sparsity.levels[{i}]", level)
    if method is not None:
        _check_method(method, sp)
    _check_importance(sp)
    _check_allocation(sp)
    for key in ("batches", "batch_size"):
        if getattr(sp.calibration, key) < 1:
            fail(f"sparsity.calibration.{key}", getattr(sp.calibration, key), "an integer >= 1")
    if sp.modules is not None and not sp.modules:
        fail("sparsity.modules", list(sp.modules), "null or a non-empty list of fnmatch patterns over module names")
    if sp.mask_path:
        path = Path(sp.mask_path)
        if path.suffix not in (".safetensors", ".pt"):
            fail("sparsity.mask_path", sp.mask_path, "a .safetensors or .pt mask file")
        if not path.is_file():
            fail("sparsity.mask_path", sp.mask_path, "an existing mask file")
    if sparsity_enabled(sp):
        _structural_checks(cfg)
