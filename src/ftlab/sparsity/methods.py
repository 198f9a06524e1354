"""Mask-method registry: ``sparsity.method`` -> its :class:`MaskMethodSpec`.

Why a registry: what a method is (elementwise, whole structures, a fixed N:M pattern), which
comparison groups and per-layer allocations it accepts, which importance it forces and which of
its settings a mask depends on decide how masks are computed, checked, keyed and which launchers
can run them. The spec states these once; :mod:`compute`, :mod:`check`, :mod:`config`, the mask
step's key and the Cerebras launcher read its flags, never method names, so a method added from
outside (entry-point group ``ftlab.masks``, or ``sparsity.method=pkg.mod:SPEC``) is computed,
validated and cached like a built-in one.

The built-in methods are defined here, next to the flags they set; their mask functions are the
pure ones of :mod:`ftlab.sparsity.masks`. Structures (``sparsity.structure``) have their own
registry in :mod:`ftlab.sparsity.structures`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ftlab.core.errors import ConfigError
from ftlab.core.plugins import Registry
from ftlab.sparsity.masks import GROUPS, nm_mask, structure_masks, unstructured_masks

#: ``sparsity.method`` of a dense base (no mask); not a registered method.
NO_METHOD = "none"

#: masks(scores, spec, structures, levels) -> {weight: bool keep-mask}. ``spec`` is the
#: :class:`ftlab.sparsity.compute.MaskSpec` (level, group, n, m, row_floor, and
#: ``sparsity.options`` as ``spec.options``); ``structures`` the :class:`~ftlab.sparsity.structures.Structure` list of
#: a ``finds_structures`` method; ``levels`` OWL's per-weight levels of an ``allocates`` method.
MaskFunction = Callable[[dict[str, torch.Tensor], Any, Any, "dict[str, float] | None"], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class MaskMethodSpec:
    name: str
    masks: MaskFunction
    #: prunes whole structures (``sparsity.structure`` names which, a registered StructureSpec);
    #: masks need the structures the selected weights form, and a saved mask keeps whole units
    finds_structures: bool = False
    #: a fixed N:M pattern: reads ``sparsity.n`` / ``sparsity.m``, its target sparsity is n/m
    #: (``sparsity.level`` is unused) and a saved mask must hold the exact pattern
    needs_n_m: bool = False
    #: ``sparsity.group`` values it accepts (a single one: the group is fixed by the method)
    groups: tuple[str, ...] = GROUPS
    #: scores with this importance whatever ``sparsity.importance`` says (random pruning)
    importance: str | None = None
    #: accepts per-layer levels (``sparsity.allocation=owl``)
    allocates: bool = False
    #: every weight is kept or pruned on its own (no structure, no pattern)
    elementwise: bool = False
    #: run-config keys of its own settings (e.g. ``sparsity.options.block``); they enter the mask key
    config_keys: tuple[str, ...] = ()
    #: validate(sparsity_cfg) raises ConfigError: checks of its own settings
    validate: Callable[[Any], None] | None = None
    #: formula and reference, for ``docs/methods.md`` and messages
    doc: str = ""

    def __post_init__(self):
        if self.finds_structures and self.needs_n_m:
            raise ValueError(f"mask method {self.name!r}: whole structures or an N:M pattern, not both")
        if not self.groups or set(self.groups) - set(GROUPS):
            raise ValueError(f"mask method {self.name!r}: groups must be a non-empty subset of {GROUPS}")


_REGISTRY: Registry[MaskMethodSpec] = Registry("mask method", "sparsity.method", MaskMethodSpec, "ftlab.masks",
                                                import_paths=True, also=f" (or {NO_METHOD})")
register_method = _REGISTRY.register
#: the spec of a registered name, or of an import path ``pkg.module:SPEC`` (registered under that
#: path on first use); one line on ``sparsity.method`` otherwise
get_method = _REGISTRY.get


#: built-in and installed mask methods (import paths are listed once they have been used)
all_methods = _REGISTRY.all


def find_method(name: Any) -> MaskMethodSpec | None:
    """The spec of a registered name or an import path; ``None`` for ``none`` or an unknown name
    (for code that describes a config that may be dense; :func:`get_method` refuses instead)."""
    if not isinstance(name, str) or name == NO_METHOD:
        return None
    return _REGISTRY.resolve(name)


# -- built-in methods ---------------------------------------------------------------------------
def _unstructured(scores: dict[str, torch.Tensor], spec: Any, structures: Any,
                  levels: dict[str, float] | None) -> dict[str, torch.Tensor]:
    """The lowest scores go, compared per layer, per row or globally (OWL: each weight's level)."""
    if levels:
        return {name: unstructured_masks({name: s}, levels[name], spec.group, row_floor=spec.row_floor)[name]
                for name, s in scores.items()}
    return unstructured_masks(scores, spec.level, spec.group, row_floor=spec.row_floor)


def _n_m(scores: dict[str, torch.Tensor], spec: Any, structures: Any,
         levels: dict[str, float] | None) -> dict[str, torch.Tensor]:
    """In every M consecutive input columns of each row, the N lowest go."""
    out = {}
    for name, s in scores.items():
        if s.shape[1] % spec.m:
            raise ConfigError("sparsity.m", spec.m, f"a divisor of the input width of every pruned module; "
                              f"{name} has {s.shape[1]} columns")
        out[name] = nm_mask(s, spec.n, spec.m)
    return out


def _structured(scores: dict[str, torch.Tensor], spec: Any, structures: Any,
                levels: dict[str, float] | None) -> dict[str, torch.Tensor]:
    """Whole structures: the units of lowest summed importance go, one decision for all members."""
    if structures is None:
        raise ValueError("method=structured needs the structures its weights form (structures_for)")
    return structure_masks(scores, spec.level, structures)


UNSTRUCTURED = register_method(MaskMethodSpec(
    "unstructured", _unstructured, allocates=True, elementwise=True,
    doc="the lowest-importance weights go, compared per layer, per output row or globally"))
STRUCTURED = register_method(MaskMethodSpec(
    "structured", _structured, finds_structures=True, groups=("layer",),
    doc="whole structures (sparsity.structure) of lowest summed importance go, per decoder layer"))
N_M = register_method(MaskMethodSpec(
    "nm", _n_m, needs_n_m=True, groups=("layer",),
    doc="N:M semi-structured: the N lowest of every M consecutive input weights of a row go"))
RANDOM = register_method(MaskMethodSpec(
    "random", _unstructured, importance="random", elementwise=True,
    doc="control: seeded uniform scores, unstructured"))
