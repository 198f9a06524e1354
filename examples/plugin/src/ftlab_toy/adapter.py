"""``norm_tuning``: train only the normalisation layers' weights (LayerNorm/RMSNorm tuning,
Zhao et al., 2024, "Tuning LayerNorm in Attention"); every other weight stays frozen.

The merged model is the model itself (the trained norms are part of it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatch

from ftlab.adapters.base import AdaptedModel
from ftlab.adapters.registry import AdapterSpec
from ftlab.config.schema import AdapterConfig
from ftlab.core.errors import fail


@dataclass
class NormTuningConfig(AdapterConfig):
    name: str = "norm_tuning"
    #: fnmatch patterns over parameter names that train
    patterns: list[str] = field(default_factory=lambda: ["*norm*"])


def validate(adapter_cfg, run_cfg=None) -> None:
    if not adapter_cfg.patterns:
        fail("adapter.patterns", list(adapter_cfg.patterns), "a non-empty list of fnmatch patterns")


class NormTuning(AdaptedModel):
    def __init__(self, model, adapter_cfg, run_cfg):
        chosen = 0
        for name, p in model.named_parameters():
            trains = any(fnmatch(name, pat) for pat in adapter_cfg.patterns)
            p.requires_grad_(trains)
            chosen += trains
        if not chosen:
            fail("adapter.patterns", list(adapter_cfg.patterns), "patterns matching at least one parameter")
        super().__init__(model, adapter_cfg, run_cfg)


NORM_TUNING = AdapterSpec("norm_tuning", NormTuningConfig, NormTuning, validate=validate, label="norm tuning")
