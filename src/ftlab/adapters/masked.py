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
from torch import nn
from transformers.pytorch_utils import Conv1D

from ftlab.adapters.base import AdaptedModel
from ftlab.adapters.peft_lora import LowRankConfig, peft_config, validate_low_rank
from ftlab.adapters.registry import AdapterSpec, register_adapter
from ftlab.core.errors import FtlabError, fail
from ftlab.sparsity.config import sparsity_enabled
from ftlab.sparsity.io import save_masks
from ftlab.sparsity.selection import canonical_name

MASK_FILE = "sparsity_mask.safetensors"


@dataclass
class MaskedConfig(LowRankConfig):
    name: str = "masked"


class MaskedLora(AdaptedModel):
    def __init__(self, model: nn.Module, adapter_cfg: Any, run_cfg: Any):
        from peft import get_peft_model  # heavy (~4 s of imports): only when a peft adapter is built

        # subclass peft's layers (imports peft)
        from ftlab.adapters.masked_layer import MaskedLoraLinear, MaskedParamWrapper

        config = peft_config(model, adapter_cfg, run_cfg, use_dora=False)
        config._register_custom_module({nn.Linear: MaskedLoraLinear, Conv1D: MaskedLoraLinear})
        super().__init__(get_peft_model(model, config), adapter_cfg, run_cfg)
        MaskedParamWrapper.adopt(self.model)  # fused MoE experts (peft's target_parameters)
        self.layer_cls = (MaskedLoraLinear, MaskedParamWrapper)
        self.masks: dict[str, torch.Tensor] | None = None

    def masked_layers(self) -> dict[str, Any]:
        """``{base weight name: layer}`` of the adapted linears (``MaskedLoraLinear``) and expert
        parameters (``MaskedParamWrapper``, one per fused parameter)."""
        return {canonical_name(f"{n}.{getattr(m, 'parameter_name', 'weight')}"): m
                for n, m in self.model.named_modules() if isinstance(m, self.layer_cls)}

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
    if run_cfg is not None and not sparsity_enabled(run_cfg.sparsity):
        fail("adapter", "masked", "a sparse base: set sparsity=unstructured|structured|nm|random or "
             "sparsity.mask_path (masked LoRA keeps a mask's zeros, and there is no mask)")


register_adapter(AdapterSpec("masked", MaskedConfig, MaskedLora, validate=validate_masked, low_rank=True, masked=True,
                             experts=True, label="masked LoRA"))
