"""``full``: every weight trains. ``none``: the eval-only control (nothing trains)."""

from __future__ import annotations

from dataclasses import dataclass

from ftlab.adapters.base import AdaptedModel
from ftlab.adapters.registry import AdapterSpec, register_adapter
from ftlab.config.schema import AdapterConfig


@dataclass
class FullConfig(AdapterConfig):
    name: str = "full"


@dataclass
class NoneConfig(AdapterConfig):
    name: str = "none"


class FullFineTuning(AdaptedModel):
    def __init__(self, model, adapter_cfg, run_cfg):
        for p in model.parameters():
            p.requires_grad_(True)
        super().__init__(model, adapter_cfg, run_cfg)


class Control(AdaptedModel):
    trains = False

    def __init__(self, model, adapter_cfg, run_cfg):
        for p in model.parameters():
            p.requires_grad_(False)
        super().__init__(model, adapter_cfg, run_cfg)


register_adapter(AdapterSpec("full", FullConfig, FullFineTuning, full_weights=True, label="full fine-tuning"))
register_adapter(AdapterSpec("none", NoneConfig, Control, trains=False, supports_quantized_base=True, label="control"))
