"""The sparse base inside a run: masks before the adapter, enforcement while training, the mask
re-applied at merge, and the merged model validated.

The recipe enters this module once, at the mask step: :func:`sparse_base` writes W ⊙ M into the
base and returns a :class:`SparseBase`; the recipe's adapter phase hands it the adapted model
(:meth:`SparseBase.attach`), and the wrapper's :meth:`SparseAdapted.finish` (the adapter hook the
recipe calls for every run before evaluation) merges, re-masks and validates. The three stages:

    prepare_masks   compute (or load ``sparsity.mask_path``), check, write W ⊙ M into the base
                    (SparseGPT: its reconstructed weights, then ⊙ M)
    attach_masks    wrap the adapted model: masks handed to the adapter (``masked`` needs them),
                    W[M == 0] = 0 after every real optimiser step where the base trains
                    (``full`` in ``sparse_to_sparse``), merge = adapter's merge then ⊙ M
    finish_sparse   merge + re-mask + validate; the evaluated and exported model is that sparse
                    merged model, ``validation_report.json`` records the check, ``mask.safetensors``
                    (+ sidecar, ``layer_sparsity.csv``) every pruned layer's mask, and for
                    LoRA-family adapters what the re-masking dropped from the update

The wrapper works for any adapter family: it only uses the :class:`AdaptedModel` hooks and
re-applies M to whatever ``merged_model()`` returns.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ftlab.core.io import write_json
from ftlab.data.inference import loss_on
from ftlab.sparsity.apply import MaskApplier, apply_masks_
from ftlab.sparsity.check import check_fit, check_model, check_targets, validate_weights
from ftlab.sparsity.compute import PrunedBase, compute_pruned, importance_of, layouts_for, spec_of
from ftlab.sparsity.config import check_agrees, sparsity_enabled
from ftlab.sparsity.io import load_masks, save_masks
from ftlab.sparsity.masks import overall_sparsity
from ftlab.sparsity.methods import find_method
from ftlab.sparsity.selection import canonical_parameters, select_modules, transposed_parameters
from ftlab.sparsity.stats import describe, write_layer_table

REPORT_FILE = "validation_report.json"
RUN_MASK_FILE = "mask.safetensors"
MaskFn = Callable[[Any, nn.Module, Any], PrunedBase]


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


def prepare_masks(cfg: Any, model: nn.Module, tokenizer, compute: MaskFn = compute_pruned) -> PrunedBase | None:
    """The run's pruned base (``None`` for a dense one), already written into the base weights:
    SparseGPT's reconstructed weights where it has them, then W ⊙ M.

    ``compute`` is the mask function; a cache can pass a wrapped one (same signature)."""
    sp = cfg.sparsity
    if not sparsity_enabled(sp):
        return None
    if sp.mask_path:
        masks, meta = load_checked_masks(sp.mask_path, model, cfg.model.name, sparsity_cfg=sp)
        levels = {n: e["target"] for n, e in (meta or {}).get("layers", {}).items() if "target" in e} or None
        pruned = PrunedBase(masks, None, levels)
    else:
        pruned = compute(cfg, model, tokenizer)
    if pruned.weights:
        params = canonical_parameters(model)
        with torch.no_grad():
            for name, w in pruned.weights.items():
                params[name].copy_(w.to(params[name]))
    apply_masks_(model, pruned.masks)
    return pruned


class SparseAdapted:
    """An adapted model over a sparse base. Everything not overridden here is the wrapped
    adapter's own (hooks, flags, parameter groups), so new adapter families need nothing."""

    def __init__(self, inner: Any, masks: dict[str, torch.Tensor], mode: str,
                 levels: dict[str, float] | None = None, cfg: Any = None):
        self._inner = inner
        self.cfg = cfg if cfg is not None else getattr(inner, "run_cfg", None)
        self.masks = masks
        self.levels = levels  # per-weight allocated levels (OWL), for the run's layer table
        self.mode = mode
        if hasattr(inner, "set_masks"):
            inner.set_masks(masks)
        # Only weights that train can lose their zeros; frozen sparse bases need no enforcement.
        self._enforce = MaskApplier(inner.model, masks, trainable_only=True) if mode == "sparse_to_sparse" else None
        self._merged: nn.Module | None = None
        self._unmasked: nn.Module | None = None
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

    def merge_unmasked(self) -> nn.Module:
        """The adapter's merge W + ΔW before M is re-applied (the same module object that
        :meth:`merged_model` then re-masks in place)."""
        if self._unmasked is None:
            self._snapshot()
            self._unmasked = self._inner.merged_model()
        return self._unmasked

    def merged_model(self) -> nn.Module:
        """The adapter's merge with M re-applied: W' = (W + ΔW) ⊙ M. Computed once."""
        if self._merged is None:
            merged = self.merge_unmasked()
            apply_masks_(merged, self.masks)
            self._merged = merged
        return self._merged

    def finish(self, run_dir: Path, tokenizer: Any, val: list | None) -> dict[str, Any]:
        """The adapter hook the recipe calls after training: :func:`finish_sparse`."""
        return finish_sparse(self, self.cfg, run_dir, tokenizer, val)


def attach_masks(adapted: Any, masks: PrunedBase | dict[str, torch.Tensor] | None, cfg: Any) -> Any:
    """``adapted`` itself for a dense base, else the :class:`SparseAdapted` wrapper."""
    if masks is None:
        return adapted
    if isinstance(masks, PrunedBase):
        return SparseAdapted(adapted, masks.masks, cfg.sparsity.mode, masks.levels, cfg=cfg)
    return SparseAdapted(adapted, masks, cfg.sparsity.mode, cfg=cfg)


class SparseBase:
    """The run's pruned base (the mask step's result), already written into the base weights.
    :meth:`attach` wraps the adapted model built over it; nothing else of the sparse pipeline is
    the recipe's business."""

    def __init__(self, pruned: PrunedBase, cfg: Any):
        self.pruned, self.cfg = pruned, cfg

    def attach(self, adapted: Any) -> SparseAdapted:
        """Masks to the adapter, enforcement while training, merge keeps M (:func:`attach_masks`)."""
        return attach_masks(adapted, self.pruned, self.cfg)


def sparse_base(cfg: Any, model: nn.Module, tokenizer: Any, compute: MaskFn = compute_pruned) -> SparseBase | None:
    """The recipe's one entry into sparsity: prune the base (:func:`prepare_masks`, W ← W ⊙ M),
    ``None`` for a dense run."""
    pruned = prepare_masks(cfg, model, tokenizer, compute=compute)
    return SparseBase(pruned, cfg) if pruned is not None else None


def _frozen_base(adapted: SparseAdapted) -> bool:
    """The adapter trains its own parameters over a frozen sparse base (LoRA family), so the
    merge's update is ΔW = merged − base and the base is zero wherever M is."""
    if not adapted.trains:
        return False
    params = canonical_parameters(adapted.inner.model)
    return all(n in params and not params[n].requires_grad for n in adapted.masks)


def dropped_update(merged: nn.Module, base: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, float]:
    """‖ΔW ⊙ (1 − M)‖² / ‖ΔW‖² over all pruned weights, ΔW = merged − base (the share of the
    adapter's update the re-masking throws away), and both squared norms."""
    params = canonical_parameters(merged)
    total = dropped = 0.0
    for name, mask in masks.items():
        delta = params[name].detach().float().cpu() - base[name].float()
        total += float(delta.pow(2).sum())
        dropped += float(delta[~mask].pow(2).sum())
    return {"merge_dropped_update_fraction": dropped / total if total > 0 else 0.0,
            "merge_update_sq_norm": total, "merge_dropped_update_sq_norm": dropped}


def save_run_mask(adapted: SparseAdapted, cfg: Any, run_dir: Path, model: nn.Module) -> Path:
    """Every pruned layer's mask (not only the adapted ones) with its sidecar and layer table, so
    ``python -m ftlab.validate checkpoint=<run>/model mask=<run>/mask.safetensors`` checks the
    whole model."""
    sp = cfg.sparsity
    target = spec_of(sp).target if sp.method != "none" else overall_sparsity(adapted.masks)
    layouts = None
    method = find_method(sp.method)
    if method is not None and method.finds_structures:
        layouts = layouts_for(model, select_modules(model, sp.modules), spec_of(sp))
    transposed = set(transposed_parameters(model))
    meta = describe(adapted.masks, model=cfg.model.name, method=sp.method, importance=importance_of(sp),
                    target=target, spec=spec_of(sp), layouts=layouts, levels=adapted.levels,
                    extra={"source": sp.mask_path or "computed by the run"}, transposed=transposed)
    if sp.method == "none":  # a mask file used as it is: describe, do not promise a target
        meta.pop("method"), meta.pop("level")
    path = save_masks(adapted.masks, Path(run_dir) / RUN_MASK_FILE, meta)
    write_layer_table(adapted.masks, adapted.levels or target, Path(run_dir) / "layer_sparsity.csv", transposed)
    return path


def _val_loss(model: nn.Module, tokenizer: Any, val: list, cfg: Any) -> float:
    was_training = model.training
    model.eval()
    try:
        return loss_on(model, tokenizer, val, cfg.task.max_length, cfg.train.eval_batch_size)
    finally:
        model.train(was_training)


def finish_sparse(adapted: SparseAdapted, cfg: Any, run_dir: Path, tokenizer: Any = None,
                  val: list | None = None) -> dict[str, Any]:
    """Save the adapter (it must precede the merge), merge, re-mask, validate; returns the
    ``metrics.json`` entries and writes ``validation_report.json`` and the run's mask file.

    For an adapter over a frozen base in ``sparse_to_dense`` (LoRA family) it also measures what
    the re-masking discards: ``merge_dropped_update_fraction`` = ‖ΔW ⊙ (1 − M)‖² / ‖ΔW‖², and,
    given ``tokenizer`` and the ``val`` examples, ``val_loss_merged_unmasked`` (the merged model
    W + ΔW before re-masking) and ``val_loss_merged_masked`` ((W + ΔW) ⊙ M, the model evaluated
    and exported). The base weights are copied to CPU for the difference (released after).

    The merged model is what evaluation and export see afterwards (``adapted.model``)."""
    if adapted.trains and cfg.train.save_adapter:
        adapted.save_adapter(Path(run_dir) / "adapter")
    out: dict[str, Any] = {}
    if _frozen_base(adapted):
        params = canonical_parameters(adapted.inner.model)
        base = {n: params[n].detach().to("cpu", copy=True) for n in adapted.masks}
        unmasked = adapted.merge_unmasked()
        out.update(dropped_update(unmasked, base, adapted.masks))
        del base
        if tokenizer is not None and val:
            out["val_loss_merged_unmasked"] = _val_loss(unmasked, tokenizer, val, cfg)
    merged = adapted.merged_model()
    if "merge_update_sq_norm" in out and tokenizer is not None and val:
        out["val_loss_merged_masked"] = _val_loss(merged, tokenizer, val, cfg)
    save_run_mask(adapted, cfg, run_dir, merged)
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
        **out,
    }

