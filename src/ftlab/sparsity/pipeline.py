"""The sparse base inside a run: masks before the adapter, enforcement while training, the mask
re-applied at merge, and the merged model validated.

    prepare_masks   compute (or load ``sparsity.mask_path``), check, write W ⊙ M into the base
    attach_masks    wrap the adapted model: masks handed to the adapter (``masked`` needs them),
                    W[M == 0] = 0 after every real optimiser step where the base trains
                    (``full`` in ``sparse_to_sparse``), merge = adapter's merge then ⊙ M
    finish_sparse   merge + re-mask + validate; the evaluated and exported model is that sparse
                    merged model, and ``validation_report.json`` records the check

The wrapper works for any adapter family: it only uses the :class:`AdaptedModel` hooks and
re-applies M to whatever ``merged_model()`` returns.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ftlab.callbacks.history import write_json
from ftlab.sparsity.apply import MaskApplier, apply_masks_
from ftlab.sparsity.check import check_fit, check_model, check_targets, validate_weights
from ftlab.sparsity.compute import compute_masks, importance_of, spec_of
from ftlab.sparsity.config import check_agrees, sparsity_enabled
from ftlab.sparsity.io import load_masks
from ftlab.sparsity.masks import overall_sparsity
from ftlab.sparsity.selection import canonical_parameters

REPORT_FILE = "validation_report.json"
MaskFn = Callable[[Any, nn.Module, Any], dict[str, torch.Tensor]]


def load_checked_masks(path: str, model: nn.Module, model_name: str, key: str = "sparsity.mask_path",
                       sparsity_cfg: Any = None) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Load a mask file and refuse it unless it fits ``model`` (names, shapes, bool, the sidecar's
    model and target); a configured method/level must agree with the file's sidecar."""
    masks, meta = load_masks(path, key)
    check_fit(masks, {n: tuple(p.shape) for n, p in canonical_parameters(model).items()}, key, path)
    check_model(meta, model_name, key, path)
    if meta:
        check_targets(masks, meta, key, path)
        if sparsity_cfg is not None:
            check_agrees(sparsity_cfg, meta)
    return masks, meta


def prepare_masks(cfg: Any, model: nn.Module, tokenizer, compute: MaskFn = compute_masks) -> dict[str, torch.Tensor] | None:
    """Masks of the run (``None`` for a dense base), already written into the base weights.

    ``compute`` is the mask function; a cache can pass a wrapped one (same signature)."""
    sp = cfg.sparsity
    if not sparsity_enabled(sp):
        return None
    if sp.mask_path:
        masks, _ = load_checked_masks(sp.mask_path, model, cfg.model.name, sparsity_cfg=sp)
    else:
        masks = compute(cfg, model, tokenizer)
    apply_masks_(model, masks)
    return masks


class SparseAdapted:
    """An adapted model over a sparse base. Everything not overridden here is the wrapped
    adapter's own (hooks, flags, parameter groups), so new adapter families need nothing."""

    def __init__(self, inner: Any, masks: dict[str, torch.Tensor], mode: str):
        self._inner = inner
        self.masks = masks
        self.mode = mode
        if hasattr(inner, "set_masks"):
            inner.set_masks(masks)
        # Only weights that train can lose their zeros; frozen sparse bases need no enforcement.
        self._enforce = MaskApplier(inner.model, masks, trainable_only=True) if mode == "sparse_to_sparse" else None
        self._merged: nn.Module | None = None
        self._saved: dict[str, bool] = {}
        self._counts: dict[str, Any] | None = None

    def __getattr__(self, name: str):
        if name.startswith("__") or name == "_inner":
            raise AttributeError(name)
        return getattr(self._inner, name)

    @property
    def inner(self) -> Any:
        return self._inner

    @property
    def model(self) -> nn.Module:
        """The sparse merged model once :meth:`merged_model` ran, the training model before."""
        return self._merged if self._merged is not None else self._inner.model

    @property
    def enforced_params(self) -> int:
        return len(self._enforce) if self._enforce is not None else 0

    def after_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self._inner.after_optimizer_step(optimizer)
        if self._enforce is not None:
            self._enforce.apply()

    # Counts are taken before the merge consumes the adapter's modules.
    def _snapshot(self) -> None:
        inner = self._inner
        self._counts = {
            "trainable_params": inner.trainable_params(),
            "effective_params": inner.effective_params(),
            "sparsity": inner.sparsity(),
            "layer_sparsity": inner.layer_sparsity(),
        }

    def trainable_params(self) -> int:
        return self._counts["trainable_params"] if self._counts else self._inner.trainable_params()

    def effective_params(self) -> int:
        return self._counts["effective_params"] if self._counts else self._inner.effective_params()

    def sparsity(self) -> float | None:
        return self._counts["sparsity"] if self._counts else self._inner.sparsity()

    def layer_sparsity(self) -> dict[str, float] | None:
        return self._counts["layer_sparsity"] if self._counts else self._inner.layer_sparsity()

    def save_adapter(self, directory: Path) -> bool:
        key = str(Path(directory).resolve())
        if key not in self._saved:
            if self._merged is not None and self._inner.trains:
                raise RuntimeError("save the adapter before merging it")
            self._saved[key] = self._inner.save_adapter(directory)
        return self._saved[key]

    def merged_model(self) -> nn.Module:
        """The adapter's merge with M re-applied: W' = (W + ΔW) ⊙ M. Computed once."""
        if self._merged is None:
            self._snapshot()
            merged = self._inner.merged_model()
            apply_masks_(merged, self.masks)
            self._merged = merged
        return self._merged


def attach_masks(adapted: Any, masks: dict[str, torch.Tensor] | None, cfg: Any) -> Any:
    """``adapted`` itself for a dense base, else the :class:`SparseAdapted` wrapper."""
    if masks is None:
        return adapted
    return SparseAdapted(adapted, masks, cfg.sparsity.mode)


def finish_sparse(adapted: SparseAdapted, cfg: Any, run_dir: Path) -> dict[str, Any]:
    """Save the adapter (it must precede the merge), merge, re-mask, validate; returns the
    ``metrics.json`` entries and writes ``validation_report.json``.

    The merged model is what evaluation and export see afterwards (``adapted.model``)."""
    if adapted.trains and cfg.train.save_adapter:
        adapted.save_adapter(Path(run_dir) / "adapter")
    merged = adapted.merged_model()
    report = validate_weights(canonical_parameters(merged), adapted.masks)
    sp = cfg.sparsity
    report = {
        "checkpoint": "merged model (in memory)",
        "mask": sp.mask_path or "computed by the run",
        "method": sp.method,
        "importance": importance_of(sp),
        "mode": sp.mode,
        "target_sparsity": spec_of(sp).target if sp.method != "none" else None,
        **report,
    }
    write_json(Path(run_dir) / REPORT_FILE, report)
    return {
        "sparsity_method": sp.method,
        "sparsity_importance": importance_of(sp),
        "sparsity_mode": sp.mode,
        "sparsity_level": report["target_sparsity"],
        "mask_sparsity": overall_sparsity(adapted.masks),
        "weight_sparsity": report["achieved_sparsity"],
        "validation_passed": report["passed"],
        "validation_leaks": report["leaks"],
        "validation_max_abs_leak": report["max_abs_where_pruned"],
    }

