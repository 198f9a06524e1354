"""Checks on masks (do they fit the model, do they reach their target) and on weights (do they
keep a mask's zeros). Each failed check on user input is one line naming the parameter.
"""

from __future__ import annotations

from typing import Any

import torch

from ftlab.core.errors import ConfigError
from ftlab.sparsity.masks import (
    floor_count,
    group_count,
    mask_units,
    nm_pattern_ok,
    prune_count,
    sparsity_of,
    structured_ok,
)
from ftlab.sparsity.methods import find_method
from ftlab.sparsity.selection import HeadLayout

#: Allowed gap between achieved and target sparsity of unstructured masks (0.5 percentage points).
TOLERANCE = 0.005


def check_fit(masks: dict[str, Any], shapes: dict[str, tuple[int, ...]], key: str, value: Any) -> None:
    """Every mask names a parameter of the model, has its shape and is boolean.

    ``masks`` values are tensors or ``(shape, dtype string)`` pairs (a file header).
    """
    if not masks:
        raise ConfigError(key, value, "a mask file with at least one mask")
    for name, m in masks.items():
        shape, dtype = (tuple(m.shape), str(m.dtype)) if isinstance(m, torch.Tensor) else (tuple(m[0]), str(m[1]))
        if name not in shapes:
            raise ConfigError(key, value, f"masks for parameters of this model; {name!r} is not one of its "
                              "parameters (a mask made for another model?)")
        if shape != tuple(shapes[name]):
            raise ConfigError(key, value, f"mask for {name} has shape {list(shape)}, the model's parameter has "
                              f"{list(shapes[name])} (a mask made for another model?)")
        if dtype.lower().removeprefix("torch.") not in ("bool",):
            raise ConfigError(key, value, f"boolean masks; {name} has dtype {dtype.removeprefix('torch.')}")


def check_model(meta: dict | None, model_name: str, key: str, value: Any) -> None:
    """A sidecar that names another model is refused even when every shape happens to fit."""
    if meta and meta.get("model") and meta["model"] != model_name:
        raise ConfigError(key, value, f"a mask for model {model_name!r}; this one was computed for "
                          f"{meta['model']!r}")


def _layout(entry: dict) -> HeadLayout | None:
    head = entry.get("heads")
    return HeadLayout(head["dim"], int(head["heads"]), int(head.get("parts", 1))) if head else None


def check_targets(masks: dict[str, torch.Tensor], meta: dict, key: str, value: Any) -> None:
    """Achieved sparsity matches the sidecar's target, as the method's spec says what a mask is:
    an N:M method's exact pattern, a structured method's whole groups at the nearest achievable
    count, any other within 0.5 pp (per layer, or over all layers for the global comparison
    group)."""
    if "method" not in meta or "level" not in meta:
        return  # a sidecar without a target (e.g. a masked adapter's) describes, it does not promise
    masks = mask_units(masks, set(meta.get("transposed", [])))  # one expert / one (out, in) matrix each
    # a method not installed here is checked as elementwise (the loosest promise)
    method, level = find_method(meta["method"]), float(meta["level"])
    layers = meta.get("layers", {})
    if method is not None and method.needs_n_m:
        n, m = int(meta["n"]), int(meta["m"])
        for name, mask in masks.items():
            if not nm_pattern_ok(mask, n, m):
                raise ConfigError(key, value, f"an exact {n}:{m} pattern; {name} has a group of {m} columns "
                                  f"without exactly {n} pruned entries")
        return
    if method is not None and method.finds_structures:
        for name, mask in masks.items():
            layout = _layout(layers.get(name, {}))
            if not structured_ok(mask, layout):
                raise ConfigError(key, value, f"whole {'heads' if layout else 'channels'} pruned; {name} has a "
                                  "partially pruned group")
            groups = group_count(tuple(mask.shape), meta.get("group", "layer"), layout, structured=True)
            want = prune_count(level, groups) / groups
            if abs(sparsity_of(mask) - want) > TOLERANCE:
                raise ConfigError(key, value, f"{want:.4f} sparsity in {name} ({prune_count(level, groups)} of "
                                  f"{groups} groups); achieved {sparsity_of(mask):.4f}")
        return
    if meta.get("group") == "global":
        total = sum(m.numel() for m in masks.values())
        achieved = 1.0 - sum(int(m.sum()) for m in masks.values()) / total
        if abs(achieved - level) > TOLERANCE:
            raise ConfigError(key, value, f"overall sparsity within 0.5 pp of {level}; achieved {achieved:.4f}")
        return
    for name, mask in masks.items():
        want = float(layers.get(name, {}).get("target", level))  # OWL: the layer's allocated level
        if meta.get("group") == "row":
            count = (floor_count if meta.get("row_count") == "floor" else prune_count)(want, mask.shape[1])
            if not bool(((~mask).sum(1) == count).all()):
                raise ConfigError(key, value, f"{count} pruned entries in every row of {name} (level {want:.4f}, "
                                  f"{meta.get('row_count', 'nearest')} count); some row has another count")
            continue
        if abs(sparsity_of(mask) - want) > TOLERANCE:
            raise ConfigError(key, value, f"sparsity within 0.5 pp of {want} in every layer; {name} has "
                              f"{sparsity_of(mask):.4f}")


# -- weights against a mask -------------------------------------------------------------------
def validate_weights(weights: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Per layer: expected sparsity (the mask's), achieved (exact zeros of W), max |W| where M = 0
    and the count of such non-zeros ("leaks"); ``passed`` when no layer leaks.

    ``weights`` must hold every masked parameter (see :func:`check_fit`).
    """
    layers: dict[str, dict[str, Any]] = {}
    total = zeros = pruned = leaks = 0
    max_leak = 0.0
    for name, mask in masks.items():
        w = weights[name].detach()
        m = mask.to(w.device)
        off = w[~m]
        n_leaks = int(torch.count_nonzero(off))
        layer_max = float(off.abs().max()) if off.numel() else 0.0
        n_zero = int((w == 0).sum())
        layers[name] = {
            "expected_sparsity": sparsity_of(mask),
            "achieved_sparsity": n_zero / w.numel(),
            "max_abs_where_pruned": layer_max,
            "leaks": n_leaks,
            "passed": n_leaks == 0,
        }
        total += w.numel()
        zeros += n_zero
        pruned += int((~mask).sum())
        leaks += n_leaks
        max_leak = max(max_leak, layer_max)
    return {
        "passed": leaks == 0,
        "leaks": leaks,
        "max_abs_where_pruned": max_leak,
        "expected_sparsity": pruned / max(1, total),
        "achieved_sparsity": zeros / max(1, total),
        "layers": layers,
    }
