"""The layer of ``adapter=masked``: peft's ``lora.Linear`` whose delta keeps the base's zeros.

Its own module because subclassing peft's layer imports peft (heavy), which only a masked run needs;
see :mod:`ftlab.adapters.masked` for the arithmetic.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from peft.tuners.lora.layer import Linear as PeftLinear
from peft.tuners.lora.layer import ParamWrapper, _LoraParameterProxy
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
        # peft's delta is in the base weight's layout: (out, in), or (in, out) for a Conv1D
        # (fan_in_fan_out), where the mask is stored in that layout too
        deltas = [(a, self.get_delta_weight(a)) for a in active]
        if all(isinstance(self.lora_dropout[a], nn.Identity) for a in active):
            weight = base.weight + sum(d.to(base.weight.dtype) for _, d in deltas)
            return F.linear(x.to(weight.dtype), weight.t() if self.fan_in_fan_out else weight, base.bias)
        result = base(x)
        for a, d in deltas:
            xa = self._cast_input_dtype(x, d.dtype)
            result = result + F.linear(self.lora_dropout[a](xa), d.t() if self.fan_in_fan_out else d).to(result.dtype)
        return result


class MaskedParamWrapper(ParamWrapper):
    """peft's ``ParamWrapper`` (LoRA on a fused MoE expert parameter, one rank-r update per expert)
    with its delta multiplied by the same fixed mask: ΔW[e] ⊙ M[e] for every expert ``e``.

    peft folds a single adapter's factors into the weight with one ``baddbmm``, which cannot mask;
    with a mask set, the forward registers the masked delta instead (peft's own delta proxy).

    peft accepts only its own class when it nests a second parameter of the same experts module,
    so the wrappers are built as ``ParamWrapper`` and switched to this subclass afterwards
    (:meth:`adopt`); it adds methods and one non-persistent buffer, no constructor state."""

    sparsity_pruned: torch.Tensor | None

    @classmethod
    def adopt(cls, model: nn.Module) -> None:
        """Switch every peft ``ParamWrapper`` of ``model`` to this class, unmasked."""
        for module in model.modules():
            if type(module) is ParamWrapper:
                module.__class__ = cls
                module.register_buffer("sparsity_pruned", None, persistent=False)

    def set_mask(self, mask: torch.Tensor | None) -> None:
        self.sparsity_pruned = None if mask is None else (~mask.to(torch.bool)).to(self.get_param().device)

    def get_delta_weight(self, adapter_name: str, *args: Any, **kwargs: Any) -> torch.Tensor:
        delta = super().get_delta_weight(adapter_name, *args, **kwargs)
        return delta if self.sparsity_pruned is None else delta.masked_fill(self.sparsity_pruned, 0)

    @contextmanager
    def _activate_lora(self, active_adapters: list[str]):
        adapters = [a for a in active_adapters if a in self.lora_A]
        if self.sparsity_pruned is None or not adapters:
            with super()._activate_lora(active_adapters):
                yield
            return
        delta = sum(self.get_delta_weight(a) for a in adapters)
        base = self.get_base_layer()
        original = self.get_param()
        requires_grad = original.requires_grad
        nn.utils.parametrize.register_parametrization(base, self.parameter_name, _LoraParameterProxy(delta))
        base.parametrizations[self.parameter_name].original.requires_grad_(requires_grad)
        try:
            with nn.utils.parametrize.cached():
                yield
        finally:
            self._remove_parametrizations()
