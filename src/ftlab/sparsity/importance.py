"""Importance-score registry: ``sparsity.importance`` -> its :class:`ImportanceSpec`.

Why a registry: a score's needs (calibration batches, gradients, a layer-by-layer pass, weight
reconstruction, its own config keys) decide how masks are computed, what the mask step's cache
key covers and which combinations are refused. The spec states them once; :mod:`compute`,
:mod:`ftlab.reuse.steps`, the planner and the checks read its flags, never score names, so a
new score cannot be half-registered (a calibrated score whose calibration settings stay out of
the mask key would give two different masks one key).

It imports only the mask-method registry (a method may force its importance, e.g. random
pruning). Built-in scores register themselves from :mod:`ftlab.sparsity.scores` and
:mod:`ftlab.sparsity.sparsegpt` (imported by :mod:`ftlab.sparsity`); installed packages add
theirs through the ``ftlab.importance`` entry point, and ``sparsity.importance=pkg.mod:SPEC``
names one by import path. Adding a score = one module defining and registering a spec (plus,
for an outside package, one YAML option naming it; see ``examples/plugin``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ftlab.core.plugins import Registry
from ftlab.sparsity.methods import NO_METHOD, find_method


@dataclass(frozen=True)
class ScoreInputs:
    """What a score function may read for one weight: ``grad`` only for ``gradients`` specs,
    ``input_sq_mean`` (‖X_j‖² per input column) only for ``activations`` specs; ``sparsity`` is
    the run's sparsity config (read only the keys the spec lists in ``config_keys``)."""

    name: str
    weight: torch.Tensor
    seed: int
    sparsity: Any
    grad: torch.Tensor | None = None
    input_sq_mean: torch.Tensor | None = None


@dataclass(frozen=True)
class ImportanceSpec:
    name: str
    #: per-weight scores, higher = keep; ``None`` for a score that prunes and reconstructs itself
    score: Callable[[ScoreInputs], torch.Tensor] | None
    #: reads ∇W of the task loss summed over calibration batches
    gradients: bool = False
    #: reads the inputs of each pruned linear on calibration batches (computed layer by layer)
    activations: bool = False
    #: decoder layer by decoder layer, later layers seeing the earlier ones pruned
    sequential: bool = False
    #: writes new values into the kept weights (SparseGPT); the pruned base stores them
    reconstructs_weights: bool = False
    #: reads ``sparsity.seed`` (random scores)
    seeded: bool = False
    #: run-config keys of its own settings (dotted, e.g. ``sparsity.sparsegpt``); they enter the mask key
    config_keys: tuple[str, ...] = ()
    #: mask methods it can score (``None``: all)
    methods: tuple[str, ...] | None = None
    #: unstructured masks compare within each output row unless ``sparsity.group`` says otherwise,
    #: and prune ``int(cols · level)`` per row (Wanda's published group and count)
    row_group: bool = False
    #: validate(sparsity_cfg) raises ConfigError: checks of its own settings
    validate: Callable[[Any], None] | None = None
    #: formula and reference, for ``docs/methods.md`` and messages
    doc: str = ""

    @property
    def calibrated(self) -> bool:
        """Reads calibration batches of the task: the calibration settings enter the mask key."""
        return self.gradients or self.activations

    def __post_init__(self):
        if self.score is None and not self.reconstructs_weights:
            raise ValueError(f"importance {self.name!r}: a score function, or reconstructs_weights=True")
        if (self.activations or self.reconstructs_weights) and not self.sequential:
            raise ValueError(f"importance {self.name!r}: activation statistics are gathered layer by layer "
                             "(sequential=True)")


_REGISTRY: Registry[ImportanceSpec] = Registry("importance", "sparsity.importance", ImportanceSpec,
                                               "ftlab.importance", import_paths=True)


register_importance = _REGISTRY.register
#: built-in and installed scores (import paths are listed once they have been used)
all_importances = _REGISTRY.all


#: the spec of a registered name, or of an import path ``pkg.module:SPEC`` (registered under that
#: path on first use); one line on ``sparsity.importance`` otherwise
get_importance = _REGISTRY.get


def effective_importance(sparsity: Mapping[str, Any] | Any) -> str:
    """The importance a sparsity config scores with: a mask method whose spec forces one
    (``method=random`` means random scores whatever ``importance`` says) decides, else
    ``sparsity.importance`` (the one place this rule is written). Takes the config node or a
    plain dict."""
    get = sparsity.get if isinstance(sparsity, Mapping) else lambda k, d=None: getattr(sparsity, k, d)
    method = find_method(get("method", NO_METHOD))
    if method is not None and method.importance is not None:
        return method.importance
    return get("importance", None)


def importance_spec(sparsity: Mapping[str, Any] | Any) -> ImportanceSpec:
    """The spec of a sparsity config's effective importance (:func:`effective_importance`)."""
    return get_importance(effective_importance(sparsity))
