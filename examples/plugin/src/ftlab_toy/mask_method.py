"""``block``: a mask method pruning whole blocks of ``sparsity.options.block`` consecutive input
columns of a row, the blocks of lowest summed importance in each layer.

It shows how a method declares what it is: the spec's flags (not elementwise, no structures, no
N:M pattern, the layer as its only comparison group) tell ftlab how to check and launch it, and its
``config_keys`` put ``sparsity.options.block`` into the mask step's cache key."""

from __future__ import annotations

import torch

from ftlab.core.errors import fail
from ftlab.sparsity.masks import lowest_k_masks, prune_count
from ftlab.sparsity.methods import MaskMethodSpec


def block_size(options) -> int:
    return int(options.get("block", 2))


def block_masks(scores: dict[str, torch.Tensor], spec, structures, levels) -> dict[str, torch.Tensor]:
    """Per layer: sum the scores of each row's blocks, drop the ``round(level * blocks)`` lowest."""
    b = block_size(spec.options)
    out = {}
    for name, s in scores.items():
        rows, cols = s.shape
        if cols % b:
            fail("sparsity.options.block", b, f"a divisor of the input width of every pruned module; {name} has "
                 f"{cols} columns")
        totals = s.float().reshape(rows, cols // b, b).sum(-1)
        keep = lowest_k_masks([totals], prune_count(spec.level, totals.numel()))[0]
        out[name] = keep.repeat_interleave(b, dim=1)
    return out


def validate(sparsity) -> None:
    b = sparsity.options.get("block", 2)
    if isinstance(b, bool) or not isinstance(b, int) or b < 1:
        fail("sparsity.options.block", b, "an integer >= 1 (input columns per pruned block)")


BLOCK = MaskMethodSpec("block", block_masks, groups=("layer",), config_keys=("sparsity.options.block",),
                       validate=validate, doc="blocks of sparsity.options.block input columns (toy plugin method)")
