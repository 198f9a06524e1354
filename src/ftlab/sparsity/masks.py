"""Masks from importance scores. ``True`` = keep, ``False`` = pruned; always ``torch.bool``.

Every method prunes an exact count (``round(level * size)`` per comparison group) and breaks ties
by position, so the achieved sparsity does not drift when scores repeat (zero gradients, already
pruned weights). The global threshold never sorts all scores at once: a strided sample brackets
the k-th smallest value, one counting pass finds the values inside the bracket, and only those are
selected exactly (see :func:`lowest_k_masks`).
"""

from __future__ import annotations

import math

import torch

from ftlab.sparsity.selection import HeadLayout, unit_name, unit_parts

#: ``sparsity.group``: the entries one count is taken over (a layer, each output row, all layers)
GROUPS = ("layer", "row", "global")

#: Rows handled at once by row-wise selections (bounds the int64 index temporaries).
_ROW_CHUNK_ELEMENTS = 1 << 22
#: Sampled scores used to bracket a threshold; below 4x this many scores the exact path runs.
DEFAULT_SAMPLE = 1 << 20


def prune_count(level: float, size: int) -> int:
    """How many of ``size`` entries a level prunes (nearest integer)."""
    return int(math.floor(level * size + 0.5))


def sparsity_of(mask: torch.Tensor) -> float:
    return 1.0 - float(mask.sum()) / max(1, mask.numel())


def overall_sparsity(masks: dict[str, torch.Tensor]) -> float:
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    return 1.0 - kept / max(1, total)


# -- units: one (out, in) matrix each (a linear, a Conv1D transposed, one expert's slice) ----------
def mask_units(masks: dict[str, torch.Tensor], transposed: set[str] | frozenset[str] = frozenset()
               ) -> dict[str, torch.Tensor]:
    """``{unit name: (out, in) view}`` of parameter-shaped masks: a 3-D (fused experts) mask gives
    one unit per expert (``<name>[e]``); names in ``transposed`` are stored ``(in, out)``."""
    out = {}
    for name, m in masks.items():
        for e, part in ([(None, m)] if m.dim() == 2 else enumerate(m)):
            out[unit_name(name, e)] = part.t() if name in transposed else part
    return out


def assemble_units(units: dict[str, torch.Tensor], transposed: set[str] | frozenset[str] = frozenset()
                   ) -> dict[str, torch.Tensor]:
    """The inverse of :func:`mask_units`: unit tensors back into tensors of the parameters' shapes
    (experts stacked in index order)."""
    grouped: dict[str, dict[int | None, torch.Tensor]] = {}
    for name, t in units.items():
        param, e = unit_parts(name)
        grouped.setdefault(param, {})[e] = t.t() if param in transposed else t
    out = {}
    for param, parts in grouped.items():
        out[param] = parts[None] if None in parts else torch.stack([parts[e] for e in sorted(parts)])
    return out


# -- comparison groups: layer and global --------------------------------------------------------
def _sample(scores: list[torch.Tensor], size: int) -> torch.Tensor:
    total = sum(s.numel() for s in scores)
    parts = []
    for s in scores:
        want = max(1, math.ceil(size * s.numel() / total))
        step = max(1, s.numel() // want)
        parts.append(s.reshape(-1)[::step].float())
    return torch.cat(parts).sort().values


def _bracket(sample: torch.Tensor, p: float, spread: float) -> tuple[float, float]:
    n = sample.numel()
    delta = spread * (math.sqrt(p * (1 - p) / n) + 2.0 / n)
    lo_i, hi_i = math.floor((p - delta) * n), math.ceil((p + delta) * n)
    lo = float(sample[lo_i]) if lo_i >= 0 else -math.inf
    hi = float(sample[hi_i]) if hi_i < n else math.inf
    return lo, hi


def _kth_smallest(scores: list[torch.Tensor], k: int, sample_size: int) -> tuple[float, int, int]:
    """(t, #scores < t, #scores == t) for t the k-th smallest score (1-based) over all tensors."""
    total = sum(s.numel() for s in scores)
    if total <= 4 * sample_size:
        flat = torch.cat([s.reshape(-1).float() for s in scores])
        t = flat.kthvalue(k).values
        return float(t), int((flat < t).sum()), int((flat == t).sum())
    sample = _sample(scores, sample_size)
    spread = 6.0
    while True:
        lo, hi = _bracket(sample, k / total, spread)
        below = sum(int(torch.count_nonzero(s < lo)) for s in scores)
        if below < k:
            band = torch.cat([s[(s >= lo) & (s <= hi)].reshape(-1).float() for s in scores])
            if below + band.numel() >= k:
                t = band.kthvalue(k - below).values
                return float(t), below + int((band < t).sum()), int((band == t).sum())
        spread *= 4.0  # the sample misjudged the quantile (rare): widen the bracket and recount


def lowest_k_masks(scores: list[torch.Tensor], k: int, sample_size: int = DEFAULT_SAMPLE) -> list[torch.Tensor]:
    """Keep-masks over several tensors pruning exactly the ``k`` lowest scores among all of them.

    Extra memory: one bool mask per tensor plus per-tensor temporaries and the bracketed band
    (about ``12 / sqrt(sample_size)`` of all scores); no sort of the full score set.
    """
    if k <= 0:
        return [torch.ones_like(s, dtype=torch.bool) for s in scores]
    t, n_lt, n_eq = _kth_smallest(scores, k, sample_size)
    ties_to_prune = k - n_lt  # 1..n_eq entries equal to t are pruned, the first ones by position
    remaining = ties_to_prune
    masks = []
    for s in scores:
        keep = s > t  # prunes every tie; undone below for the ties beyond the count
        if n_eq > ties_to_prune:
            eq = (s == t).reshape(-1).nonzero().squeeze(1)
            keep.view(-1)[eq[remaining:]] = True
            remaining = max(0, remaining - eq.numel())
        masks.append(keep)
    return masks


def _row_chunks(rows: int, cols: int):
    step = max(1, _ROW_CHUNK_ELEMENTS // max(1, cols))
    for start in range(0, rows, step):
        yield slice(start, min(rows, start + step))


def floor_count(level: float, size: int) -> int:
    """Wanda's reference count per row, ``int(cols * level)`` (never above the level)."""
    return int(size * level)


def row_mask(score: torch.Tensor, level: float, floor: bool = False) -> torch.Tensor:
    """Prune the same count in every output row (Wanda's comparison group); ``floor`` counts as
    the Wanda reference code does, else the nearest count."""
    rows, cols = score.shape
    k = floor_count(level, cols) if floor else prune_count(level, cols)
    keep = torch.ones_like(score, dtype=torch.bool)
    if k == 0:
        return keep
    for sl in _row_chunks(rows, cols):
        idx = torch.argsort(score[sl], dim=1, stable=True)[:, :k]
        keep[sl].scatter_(1, idx, False)
    return keep


def unstructured_masks(scores: dict[str, torch.Tensor], level: float, group: str,
                       sample_size: int = DEFAULT_SAMPLE, row_floor: bool = False) -> dict[str, torch.Tensor]:
    if group == "row":
        return {name: row_mask(s, level, row_floor) for name, s in scores.items()}
    if group == "layer":
        return {name: lowest_k_masks([s], prune_count(level, s.numel()), sample_size)[0]
                for name, s in scores.items()}
    if group == "global":
        names = list(scores)
        total = sum(s.numel() for s in scores.values())
        masks = lowest_k_masks([scores[n] for n in names], prune_count(level, total), sample_size)
        return dict(zip(names, masks))
    raise ValueError(f"unknown comparison group {group!r}")


# -- N:M --------------------------------------------------------------------------------------
def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """In every group of ``m`` consecutive input columns of each row, prune the ``n`` lowest."""
    rows, cols = score.shape
    if cols % m:
        raise ValueError(f"{cols} input columns do not split into groups of {m}")
    keep = torch.ones((rows, cols // m, m), dtype=torch.bool, device=score.device)
    for sl in _row_chunks(rows, cols):
        grouped = score[sl].reshape(-1, cols // m, m)
        idx = torch.argsort(grouped, dim=-1, stable=True)[..., :n]
        keep[sl].scatter_(2, idx, False)
    return keep.reshape(rows, cols)


def nm_pattern_ok(mask: torch.Tensor, n: int, m: int) -> bool:
    """Exactly ``n`` pruned entries in every group of ``m`` consecutive columns."""
    rows, cols = mask.shape
    if cols % m:
        return False
    pruned = (~mask).reshape(rows, cols // m, m).sum(-1)
    return bool((pruned == n).all())


# -- structured: whole channels or heads --------------------------------------------------------
def group_scores(score: torch.Tensor, layout: HeadLayout | None) -> torch.Tensor:
    """Summed importance per group: output rows (channels), or heads of an attention projection."""
    if layout is None:
        return score.sum(1)
    if layout.dim == "out":
        return score.reshape(layout.parts, layout.heads, -1).sum((0, 2))
    return score.reshape(score.shape[0], layout.heads, -1).sum((0, 2))


def keep_units(totals: torch.Tensor, level: float) -> torch.Tensor:
    """Keep-flags of units: the ``round(level * units)`` lowest totals go (ties by position)."""
    drop = torch.argsort(totals, stable=True)[:prune_count(level, totals.numel())]
    keep = torch.ones(totals.numel(), dtype=torch.bool)
    keep[drop.cpu()] = False
    return keep


def expand_units(keep_group: torch.Tensor, layout: HeadLayout | None, shape: tuple[int, int]) -> torch.Tensor:
    """A weight's keep-mask from its units' keep-flags."""
    rows, cols = shape
    if layout is None:
        return keep_group[:, None].expand(rows, cols).clone()
    if layout.dim == "out":
        per_part = keep_group.repeat_interleave(rows // (layout.heads * layout.parts))
        return per_part.repeat(layout.parts)[:, None].expand(rows, cols).clone()
    return keep_group.repeat_interleave(cols // layout.heads)[None, :].expand(rows, cols).clone()


def structured_mask(score: torch.Tensor, level: float, layout: HeadLayout | None) -> torch.Tensor:
    """One weight on its own: prune the ``round(level * groups)`` groups of lowest summed importance."""
    return expand_units(keep_units(group_scores(score, layout), level), layout, tuple(score.shape))


def structure_masks(scores: dict[str, torch.Tensor], level: float, structures) -> dict[str, torch.Tensor]:
    """Whole structures (:mod:`ftlab.sparsity.structures`): a unit's score is the sum over all
    member weights of their scores in that unit, and one keep decision covers every member."""
    out = {}
    for st in structures:
        totals = sum(group_scores(scores[n].float(), st.layout(n)).cpu() for n in st.members)
        keep = keep_units(totals, level)
        for n in st.members:
            out[n] = expand_units(keep, st.layout(n), tuple(scores[n].shape)).to(scores[n].device)
    return out


def group_count(shape: tuple[int, ...], group: str, layout: HeadLayout | None, *, structured: bool = False,
                n_m: bool = False) -> int:
    """Independent units one layer's count is rounded over (sets the achievable precision):
    whole structures' units, an N:M pattern's entries, or the row / layer entries otherwise."""
    rows, cols = shape
    if structured:
        return layout.heads if layout is not None else rows
    if n_m:
        return rows * cols
    return cols if group == "row" else rows * cols


def structured_ok(mask: torch.Tensor, layout: HeadLayout | None) -> bool:
    """Every group is entirely kept or entirely pruned."""
    if layout is None:
        per = mask.all(1) | (~mask).all(1)
    elif layout.dim == "out":
        blocks = mask.reshape(layout.parts, layout.heads, -1).transpose(0, 1).reshape(layout.heads, -1)
        per = blocks.all(1) | (~blocks).all(1)
    else:
        blocks = mask.reshape(mask.shape[0], layout.heads, -1).transpose(0, 1).reshape(layout.heads, -1)
        per = blocks.all(1) | (~blocks).all(1)
    return bool(per.all())
