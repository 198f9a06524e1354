"""The layer of ``adapter=masked``: peft's ``lora.Linear`` whose delta keeps the base's zeros.

Its own module because subclassing peft's layer imports peft (heavy), which only a masked run needs;
see :mod:`ftlab.adapters.masked` for the arithmetic.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from peft.tuners.lora.layer import Linear as PeftLinear
from torch import nn


class MaskedLoraLinear(PeftLinear):
    """peft's ``lora.Linear`` with its delta multiplied by a fixed boolean mask."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # Not persistent: the mask is an input of the run (recomputed or loaded), not a weight,
        # and peft's adapter state dict must stay a plain LoRA one.
        self.register_buffer("sparsity_pruned", None, persistent=False)

    def set_mask(self, mask: torch.Tensor | None) -> None:
        weight = self.get_base_layer().weight
        self.sparsity_pruned = None if mask is None else (~mask.to(torch.bool)).to(weight.device)

    def _masked(self, delta: torch.Tensor) -> torch.Tensor:
        return delta if self.sparsity_pruned is None else delta.masked_fill(self.sparsity_pruned, 0)

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        return self._masked(super().get_delta_weight(adapter))

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        active = [a for a in self.active_adapters if a in self.lora_A]
        if (self.disable_adapters or self.merged or kwargs.get("adapter_names") is not None
                or any(a in self.lora_variant for a in active) or not active):
            return super().forward(x, *args, **kwargs)
        base = self.get_base_layer()
        deltas = [(a, self._masked((self.lora_B[a].weight @ self.lora_A[a].weight) * self.scaling[a]))
                  for a in active]
        if all(isinstance(self.lora_dropout[a], nn.Identity) for a in active):
            weight = base.weight + sum(d.to(base.weight.dtype) for _, d in deltas)
            return F.linear(x.to(weight.dtype), weight, base.bias)
        result = base(x)
        for a, d in deltas:
            xa = self._cast_input_dtype(x, d.dtype)
            result = result + F.linear(self.lora_dropout[a](xa), d).to(result.dtype)
        return result
