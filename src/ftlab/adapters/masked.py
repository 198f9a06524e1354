"""``masked``: LoRA over a sparse base whose update keeps the base's zeros (SQFT-style).

ΔW = s · (B A) ⊙ M in the forward pass and at merge, so W' = W ⊙ M + s · (B A) ⊙ M is exactly as
sparse as the base. Built on peft's LoRA layer (a custom module registered for ``nn.Linear``):
A, B, scaling, dropout, ``save_pretrained`` and ``merge_and_unload`` are peft's; only the delta is
masked. Without dropout the forward folds the masked delta into the base weight and runs one
matmul, which keeps its step time close to plain LoRA's.

The adapter saved by ``save_adapter`` is a plain peft LoRA plus ``sparsity_mask.safetensors``:
loaded with peft alone its delta is *unmasked*, so re-apply the mask (or use the merged model).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from peft import get_peft_model
from peft.tuners.lora.layer import Linear as PeftLinear
from torch import nn

from ftlab.adapters.base import AdaptedModel
from ftlab.adapters.peft_lora import LowRankConfig, peft_config, validate_low_rank
from ftlab.adapters.registry import AdapterSpec, register_adapter
from ftlab.errors import FtlabError, fail

MASK_FILE = "sparsity_mask.safetensors"


@dataclass
class MaskedConfig(LowRankConfig):
    name: str = "masked"


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


class MaskedLora(AdaptedModel):
    def __init__(self, model: nn.Module, adapter_cfg: Any, run_cfg: Any):
        config = peft_config(model, adapter_cfg, run_cfg, use_dora=False)
        config._register_custom_module({nn.Linear: MaskedLoraLinear})
        super().__init__(get_peft_model(model, config), adapter_cfg, run_cfg)
        self.masks: dict[str, torch.Tensor] | None = None

    def masked_layers(self) -> dict[str, MaskedLoraLinear]:
        """``{base weight name: layer}`` of the adapted linears."""
        from ftlab.sparsity.selection import canonical_name

        return {canonical_name(f"{n}.weight"): m for n, m in self.model.named_modules()
                if isinstance(m, MaskedLoraLinear)}

    def set_masks(self, masks: dict[str, torch.Tensor]) -> None:
        """Adapted linears with a mask train ΔW ⊙ M; those without one (not pruned) plain ΔW."""
        self.masks = {}
        for name, layer in self.masked_layers().items():
            layer.set_mask(masks.get(name))
            if name in masks:
                self.masks[name] = masks[name]

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        if self.masks is None:
            raise FtlabError("adapter=masked needs the sparse base's masks before training "
                             "(set sparsity=<unstructured|structured|nm|random> or sparsity.mask_path)")
        return super().param_groups(lr, weight_decay)

    def save_adapter(self, directory: Path) -> bool:
        from ftlab.sparsity.io import save_masks

        self.model.save_pretrained(str(directory), safe_serialization=True)
        if self.masks:
            save_masks(self.masks, Path(directory) / MASK_FILE,
                       {"model": self.run_cfg.model.name, "note": "mask of the masked-LoRA delta: "
                        "W' = W + s*(B@A)*M for the listed weights"})
        return True

    def merged_model(self) -> nn.Module:
        """peft's merge with the masked delta; the wrapper is consumed (call last)."""
        return self.model.merge_and_unload()


def validate_masked(adapter_cfg: Any, run_cfg: Any) -> None:
    validate_low_rank(adapter_cfg, run_cfg)
    from ftlab.sparsity.config import sparsity_enabled

    if run_cfg is not None and not sparsity_enabled(run_cfg.sparsity):
        fail("adapter", "masked", "a sparse base: set sparsity=unstructured|structured|nm|random or "
             "sparsity.mask_path (masked LoRA keeps a mask's zeros, and there is no mask)")


register_adapter(AdapterSpec("masked", MaskedConfig, MaskedLora, validate=validate_masked))
