"""``adapter=peft``: any of peft's weight tuners by name (VeRA, LoHa, LoKr, OFT, BOFT, IA³, HRA,
MiSS, FourierFT, ...), configured with peft's own config keys.

    adapter=peft adapter.peft_type=loha adapter.peft_config='{r: 8, alpha: 16}'

Why a pass-through instead of one family module per tuner: peft already defines each tuner's
config, layers, ``save_pretrained`` format and ``merge_and_unload``; ftlab adds the targets (the
model's decoder linears, as for LoRA), training, evaluation and export. Only tuners that merge
into the base are accepted (prompt-learning methods keep virtual tokens and cannot be exported
as a merged model); LoRA and DoRA have their own options (``adapter=lora|dora``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from torch import nn

from ftlab.adapters.base import AdaptedModel
from ftlab.adapters.registry import AdapterSpec, register_adapter
from ftlab.adapters.targets import adapter_targets, peft_target_list
from ftlab.config.schema import AdapterConfig
from ftlab.core.errors import fail
from ftlab.hardware import shards_parameters
from ftlab.models.build import build_model


@dataclass
class PeftTunerConfig(AdapterConfig):
    name: str = "peft"
    # a peft PeftType name, any case: vera | loha | lokr | oft | boft | ia3 | hra | miss | fourierft ...
    peft_type: str = "loha"
    # keyword arguments of that tuner's peft config class (target_modules and task_type are ftlab's)
    peft_config: Any = None  # a dict; null in the YAML so that `adapter.peft_config={r: 8}` sets it whole


#: Keys ftlab sets itself in every tuner's config.
OWN_KEYS = ("target_modules", "task_type", "peft_type")


def merging_tuners() -> list[str]:
    """peft's tuners that inject layers and merge into the base (lower-case names), LoRA excluded."""
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING  # peft is heavy (~4 s): only for adapter=peft

    return sorted(str(t.value).lower() for t, cls in PEFT_TYPE_TO_TUNER_MAPPING.items()
                  if hasattr(cls, "merge_and_unload") and str(t.value) not in ("LORA", "ADALORA", "XLORA"))


def peft_tuner_config(adapter_cfg, target_modules: list[str] | None = None):
    """The tuner's peft config from ``adapter.peft_config`` (peft's own checks; one line on failure)."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING  # peft is heavy (~4 s): only for adapter=peft
    from peft.utils import PeftType

    tuner = str(adapter_cfg.peft_type).lower()
    allowed = merging_tuners()
    if tuner not in allowed:
        fail("adapter.peft_type", adapter_cfg.peft_type, f"one of {allowed} (peft tuners that merge into the "
             "base; LoRA/DoRA: adapter=lora|dora)")
    given = adapter_cfg.peft_config
    if given is not None and not (OmegaConf.is_dict(given) or isinstance(given, dict)):
        fail("adapter.peft_config", given, "a mapping of peft config keyword arguments, e.g. {r: 8}, or null")
    kwargs = OmegaConf.to_container(given, resolve=True) if OmegaConf.is_dict(given) else dict(given or {})
    for key in OWN_KEYS:
        if key in kwargs:
            fail(f"adapter.peft_config.{key}", kwargs[key], f"unset ({key} is ftlab's: "
                 "adapter.target_modules / the model's target_modules)")
    config_cls = PEFT_TYPE_TO_CONFIG_MAPPING[PeftType(tuner.upper())]
    try:
        return config_cls(task_type="CAUSAL_LM", target_modules=target_modules, **kwargs)
    except (TypeError, ValueError) as err:
        fail("adapter.peft_config", kwargs, f"keyword arguments of peft's {config_cls.__name__} ({err})")


def validate_peft(adapter_cfg, run_cfg=None) -> None:
    peft_tuner_config(adapter_cfg, ["q_proj"])  # keys and values, against peft's own config class
    if run_cfg is None:
        return
    if run_cfg.sparsity.method != "none" or run_cfg.sparsity.mask_path:
        fail("adapter", "peft", "lora, dora, masked, full or sora with a sparse base (a merged peft tuner's "
             "update is dense and would fill the pruned weights)")
    if shards_parameters(run_cfg.hardware):
        fail("adapter", "peft", f"lora or dora with hardware.strategy={run_cfg.hardware.strategy} (ftlab shards "
             "only the LoRA family's layers)")


class PeftTuner(AdaptedModel):
    def __init__(self, model: nn.Module, adapter_cfg, run_cfg):
        from peft import get_peft_model  # heavy (~4 s of imports): only when a peft adapter is built

        targets = peft_target_list(model, adapter_targets(model, adapter_cfg, run_cfg))
        super().__init__(get_peft_model(model, peft_tuner_config(adapter_cfg, targets)), adapter_cfg, run_cfg)

    def save_adapter(self, directory: Path) -> bool:
        self.model.save_pretrained(str(directory), safe_serialization=True)
        return True

    def merged_model(self) -> nn.Module:
        return self.model.merge_and_unload()


def count_trainable(run_cfg: Any) -> int:
    """The tuner's trainable parameters, from peft's layers on the meta device (no weights)."""
    model = build_model(run_cfg.model, device="meta")
    return PeftTuner(model, run_cfg.adapter, run_cfg).trainable_params()


register_adapter(AdapterSpec("peft", PeftTunerConfig, PeftTuner, validate=validate_peft, label="peft tuner",
                             count_trainable=count_trainable))
