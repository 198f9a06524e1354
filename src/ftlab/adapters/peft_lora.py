"""LoRA and DoRA through peft (``LoraConfig(use_dora=...)``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from ftlab.adapters.base import AdaptedModel
from ftlab.adapters.registry import AdapterSpec, register_adapter
from ftlab.adapters.targets import adapter_targets, peft_parameter_list, peft_target_list, split_targets
from ftlab.config.schema import AdapterConfig
from ftlab.errors import fail
from ftlab.models.quantization import dequantized_merge, is_quantized
from ftlab.models.structure import is_transposed

if TYPE_CHECKING:
    from peft import LoraConfig as PeftLoraConfig


@dataclass
class LowRankConfig(AdapterConfig):
    """Keys shared by every low-rank family (LoRA, DoRA, SoRA, SDoRA, masked LoRA)."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0


@dataclass
class LoraConfig(LowRankConfig):
    name: str = "lora"


@dataclass
class DoraConfig(LowRankConfig):
    name: str = "dora"


def validate_low_rank(adapter_cfg, run_cfg=None) -> None:
    if adapter_cfg.r < 1:
        fail("adapter.r", adapter_cfg.r, "an integer >= 1")
    if adapter_cfg.alpha <= 0:
        fail("adapter.alpha", adapter_cfg.alpha, "a number > 0")
    if not 0.0 <= adapter_cfg.dropout < 1.0:
        fail("adapter.dropout", adapter_cfg.dropout, "a number in [0, 1)")
    targets = adapter_cfg.target_modules
    if targets is not None and len(targets) == 0:
        fail("adapter.target_modules", list(targets), "a non-empty list of module names, or null")


def peft_config(model: nn.Module, adapter_cfg, run_cfg, *, use_dora: bool) -> PeftLoraConfig:
    """peft's config with the targets resolved against ``model`` (one-line error if none match)."""
    # peft is heavy (~4 s of imports): loaded only when a peft adapter is built
    from peft import LoraConfig as PeftLoraConfig

    linears, experts = split_targets(model, adapter_targets(model, adapter_cfg, run_cfg))
    return PeftLoraConfig(
        r=adapter_cfg.r,
        lora_alpha=adapter_cfg.alpha,
        lora_dropout=adapter_cfg.dropout,
        # [] = no module (peft's way of adapting parameters only)
        target_modules=peft_target_list(model, linears) if linears else [],
        # fused MoE experts: one rank-r update per expert (peft's ParamWrapper, lora_A/B of r x experts)
        target_parameters=peft_parameter_list(model, experts) if experts else None,
        # GPT-2's Conv1D stores (in, out): peft transposes its delta (``fan_in_fan_out``)
        fan_in_fan_out=bool(linears) and all(is_transposed(model.get_submodule(n)) for n in linears),
        use_dora=use_dora,
        task_type="CAUSAL_LM",
    )


class PeftLowRank(AdaptedModel):
    use_dora = False

    def __init__(self, model, adapter_cfg, run_cfg):
        from peft import get_peft_model  # heavy (~4 s of imports): only when a peft adapter is built

        super().__init__(get_peft_model(model, peft_config(model, adapter_cfg, run_cfg, use_dora=self.use_dora)),
                         adapter_cfg, run_cfg)

    def save_adapter(self, directory: Path) -> bool:
        self.model.save_pretrained(str(directory), safe_serialization=True)
        return True

    def merged_model(self):
        """Folds the adapter into the base weights; the peft wrapper is consumed (call last).
        A k-bit base is dequantised first, so the merge does not round the update away."""
        if is_quantized(self.model):
            return dequantized_merge(self.model)
        return self.model.merge_and_unload()


class PeftLora(PeftLowRank):
    use_dora = False


class PeftDora(PeftLowRank):
    use_dora = True


register_adapter(AdapterSpec("lora", LoraConfig, PeftLora, validate=validate_low_rank, low_rank=True, experts=True,
                             supports_quantized_base=True, supports_cerebras=True, label="LoRA"))
register_adapter(AdapterSpec("dora", DoraConfig, PeftDora, validate=validate_low_rank, low_rank=True, magnitude=True,
                             supports_quantized_base=True, label="DoRA",
                             experts_note="peft's LoRA on fused expert parameters has no DoRA magnitude",
                             cerebras_note="ModelZoo's Lora callback has no DoRA magnitude vector"))
