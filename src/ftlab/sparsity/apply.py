"""Writing a mask's zeros into weights: W ← W ⊙ M.

``masked_fill`` rather than a multiply: a non-finite weight times 0 would stay NaN, and the zero
is written exactly whatever the dtype.
"""

from __future__ import annotations

import torch
from torch import nn

from ftlab.core.errors import FtlabError
from ftlab.sparsity.selection import canonical_parameters


class MaskApplier:
    """Applies masks to the parameters of one (possibly peft-wrapped) model, keeping a copy of
    each pruned-position index on the parameter's device so repeated enforcement (after every
    optimiser step) costs one ``masked_fill_`` per weight."""

    def __init__(self, model: nn.Module, masks: dict[str, torch.Tensor], *, trainable_only: bool = False):
        params = canonical_parameters(model)
        missing = [n for n in masks if n not in params]
        if missing:
            raise FtlabError(f"masked parameter {missing[0]} is not in the model "
                             f"({len(missing)} of {len(masks)} missing)")
        self.targets = [(params[n], masks[n]) for n in masks if params[n].requires_grad or not trainable_only]
        self._pruned: dict[int, torch.Tensor] = {}

    def _pruned_of(self, param: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        cached = self._pruned.get(id(param))
        if cached is None or cached.device != param.device:
            cached = ~mask.to(param.device)
            self._pruned[id(param)] = cached
        return cached

    @torch.no_grad()
    def apply(self) -> None:
        for param, mask in self.targets:
            param.masked_fill_(self._pruned_of(param, mask), 0)

    def __len__(self) -> int:
        return len(self.targets)


def apply_masks_(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """Zero every pruned weight of ``model`` in place; returns the model."""
    MaskApplier(model, masks).apply()
    return model
