"""What a mask is (the sidecar) and what it looks like (per-layer CSV table, PNG histogram).

Both list *units* (:func:`ftlab.sparsity.masks.mask_units`): a fused expert parameter's mask is
one row / one bar per expert (``<parameter>[e]``), a ``Conv1D``'s in its ``(out, in)`` orientation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ftlab.core.io import CsvAppender, atomic_path
from ftlab.sparsity.masks import mask_units, overall_sparsity, sparsity_of
from ftlab.sparsity.selection import HeadLayout, unit_parts

TABLE_COLUMNS = ["layer", "rows", "cols", "numel", "pruned", "sparsity", "target"]


def describe(masks: dict[str, torch.Tensor], *, model: str, method: str, importance: str, target: float,
             spec: Any, layouts: dict[str, HeadLayout | None] | None = None,
             extra: dict[str, Any] | None = None, levels: dict[str, float] | None = None,
             transposed: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """The sidecar: model, method, importance, level and per-unit achieved sparsity (and the
    per-unit allocated level where OWL allocated one; the structure units of structured masks);
    ``transposed`` lists the parameters stored ``(in, out)`` (``Conv1D``)."""
    layouts = layouts or {}
    layers = {}
    for name, m in mask_units(masks, transposed).items():
        entry: dict[str, Any] = {"shape": list(m.shape), "sparsity": sparsity_of(m)}
        if layouts.get(name) is not None:
            entry["heads"] = {"dim": layouts[name].dim, "heads": layouts[name].heads}
            if layouts[name].parts != 1:
                entry["heads"]["parts"] = layouts[name].parts
        level = _level_of(levels, name)
        if level is not None:
            entry["target"] = float(level)
        layers[name] = entry
    return {
        "model": model,
        "method": method,
        "importance": importance,
        "level": target,
        "group": spec.group,
        "row_count": "floor" if getattr(spec, "row_floor", False) else "nearest",
        "n": spec.n,
        "m": spec.m,
        "structure": spec.structure,
        "overall_sparsity": overall_sparsity(masks),
        "transposed": sorted(n for n in transposed if n in masks),
        **(extra or {}),
        "layers": layers,
    }


def _level_of(levels: dict[str, float] | None, unit: str) -> float | None:
    """A unit's allocated level: its own entry, else its parameter's (OWL allocates per layer)."""
    if not levels:
        return None
    return levels.get(unit, levels.get(unit_parts(unit)[0]))


def layer_rows(masks: dict[str, torch.Tensor], target: float | dict[str, float],
               transposed: set[str] | frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """One row per pruned unit (a weight, or one expert of a fused expert parameter); ``target``
    is the level, or each weight's allocated one (OWL)."""
    rows = []
    for name, m in mask_units(masks, transposed).items():
        r, c = m.shape
        pruned = int((~m).sum())
        want = _level_of(target, name) if isinstance(target, dict) else target
        rows.append({"layer": name, "rows": r, "cols": c, "numel": m.numel(), "pruned": pruned,
                     "sparsity": f"{pruned / m.numel():.6f}", "target": f"{want:.6f}"})
    return rows


def write_layer_table(masks: dict[str, torch.Tensor], target: float | dict[str, float], path: str | Path,
                      transposed: set[str] | frozenset[str] = frozenset()) -> Path:
    out = CsvAppender(Path(path), TABLE_COLUMNS)
    out.open()
    for row in layer_rows(masks, target, transposed):
        out.append(row)
    return Path(path)


def plot_histogram(masks: dict[str, torch.Tensor], target: float, path: str | Path, title: str = "",
                   transposed: set[str] | frozenset[str] = frozenset()) -> Path:
    """Left: achieved sparsity per layer against the target. Right: histogram of per-row
    sparsity over all pruned layers (uniform for row groups, spread out for global masks)."""
    import matplotlib  # optional heavy dependency: only when a histogram is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    masks = mask_units(masks, transposed)
    names = list(masks)
    per_layer = [sparsity_of(masks[n]) for n in names]
    per_row = torch.cat([1.0 - masks[n].float().mean(1) for n in names]).numpy()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4 + 0.12 * len(names)))
    short = [n.removesuffix(".weight").removeprefix("model.") for n in names]
    ax1.barh(range(len(names)), per_layer, color="tab:blue")
    ax1.axvline(target, color="tab:red", linestyle="--", label=f"target {target:.2f}")
    ax1.set_yticks(range(len(names)), short, fontsize=7)
    ax1.invert_yaxis()
    ax1.set_xlim(0, 1)
    ax1.set_xlabel("sparsity per layer")
    ax1.legend(loc="lower right")
    ax2.hist(per_row, bins=50, range=(0, 1), color="tab:gray")
    ax2.axvline(target, color="tab:red", linestyle="--")
    ax2.set_xlabel("sparsity per output row")
    ax2.set_ylabel("rows")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)
    return path
