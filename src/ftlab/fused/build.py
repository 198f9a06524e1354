"""Lend each trial's adapter to the fused layers of one shared base.

A trial's adapter is built by its own family (``spec.build``: peft for LoRA, ftlab's gated layers
for SoRA), exactly as in its solo run and from the same RNG state, so its initial tensors are the
solo run's. Its adapted layers are then taken out of the base again (:func:`adapt_trial`) and
kept on the trial: the trial's :class:`~ftlab.adapters.base.AdaptedModel` still owns them, so its
parameter groups, regularisation, proximal step and accounting work unchanged. :func:`install`
puts one :class:`~ftlab.fused.layer.FusedLowRankLinear` per targeted linear into the base, whose
slots hold (not copy) the trials' tensors; :func:`lend_back` puts one trial's own layers back for
its export (``save_adapter`` / ``merged_model`` of its family).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ftlab.adapters.base import AdaptedModel
from ftlab.adapters.registry import AdapterSpec, all_adapters, get_adapter
from ftlab.core.errors import ConfigError
from ftlab.fused.layer import FusedLowRankLinear, FusedState, LowRankSlot


def fusable(spec: AdapterSpec) -> bool:
    """A frozen base plus a (gated) low-rank update B A: what the fused layer computes. A DoRA
    magnitude rescales the whole adapted weight and a masked update multiplies B A by the base's
    mask; neither is an addition to the shared frozen product, so those run solo."""
    return spec.trains and spec.low_rank and not (spec.full_weights or spec.magnitude or spec.masked)


def check_fusable(adapter_name: str) -> AdapterSpec:
    spec = get_adapter(adapter_name)
    if not fusable(spec):
        allowed = [s.name for s in all_adapters() if fusable(s)]
        raise ConfigError("adapter", adapter_name, f"one of {allowed} for fused trials (a frozen base plus a "
                                                   "low-rank update; DoRA magnitudes and masked updates run solo)")
    return spec


@dataclass
class TrialAdapter:
    """One trial's adapter over the shared base: its family's model object, whose ``model`` is the
    trial's view (:func:`module_view`: the solo run's module tree, sharing the frozen tensors),
    and its own adapted layers by name in the shared base."""

    adapted: AdaptedModel
    layers: dict[str, nn.Module] = field(default_factory=dict)

    def slot(self, name: str) -> LowRankSlot:
        return slot_of(self.layers[name])


def adapted_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Modules of ``model`` that wrap a ``base_layer`` with LoRA factors (peft's and ftlab's)."""
    return {name: m for name, m in model.named_modules()
            if hasattr(m, "base_layer") and hasattr(m, "lora_A") and hasattr(m, "lora_B")}


def slot_of(layer: nn.Module) -> LowRankSlot:
    """The trial's A, B, scaling, dropout (and gate) of one adapted layer."""
    if isinstance(layer.lora_A, nn.ModuleDict):  # peft's LoraLayer: one entry per adapter name
        (name,) = layer.active_adapters
        return LowRankSlot(layer.lora_A[name], layer.lora_B[name], layer.scaling[name], layer.lora_dropout[name],
                           add_then_cast=True)
    return LowRankSlot(layer.lora_A, layer.lora_B, layer.scaling, layer.lora_dropout, getattr(layer, "lora_gate", None))


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def module_view(root: nn.Module, replace: dict[str, nn.Module]) -> nn.Module:
    """``root`` with the modules named in ``replace`` swapped, without touching ``root``: the
    modules on the way to a swapped one are shallow copies (own child dicts, the same tensors),
    every other module is shared. A trial's view is its solo model: same names, same forward,
    its own trainable tensors only, the frozen ones shared with the group."""
    clone = copy.copy(root)
    clone._modules = dict(root._modules)
    clone._parameters, clone._buffers = dict(root._parameters), dict(root._buffers)
    below: dict[str, dict[str, nn.Module]] = {}
    for name, module in replace.items():
        head, _, rest = name.partition(".")
        if rest:
            below.setdefault(head, {})[rest] = module
        else:
            clone._modules[head] = module
    for head, sub in below.items():
        clone._modules[head] = module_view(root._modules[head], sub)
    return clone


def _path_to(root: nn.Module, target: nn.Module) -> str:
    return next(name for name, m in root.named_modules() if m is target)


def adapt_trial(model: nn.Module, adapter_cfg: Any, run_cfg: Any) -> TrialAdapter:
    """Build one trial's adapter over ``model`` with its family, then give ``model`` its frozen
    layers back; the trial keeps its adapted layers, and its ``adapted.model`` becomes its view.
    Draws from the process RNG as the family's build does in a solo run: seed it as the solo run
    is seeded before calling."""
    spec = check_fusable(adapter_cfg.name)
    adapted = spec.build(model, adapter_cfg, run_cfg)
    layers = adapted_layers(model)
    prefix = _path_to(adapted.model, model)
    for name, layer in layers.items():
        set_module(model, name, layer.base_layer)
    if hasattr(model, "peft_config"):  # peft marks the model it wrapped; the next trial wraps it afresh
        del model.peft_config
    adapted.model = module_view(adapted.model, {f"{prefix}.{n}" if prefix else n: m for n, m in layers.items()})
    return TrialAdapter(adapted, layers)


def install(model: nn.Module, trials: list[TrialAdapter]) -> FusedState:
    """Replace every linear that some trial adapts by a fused layer holding those trials' slots."""
    state = FusedState(len(trials))
    names = sorted({name for t in trials for name in t.layers})
    for name in names:
        holders = {k: t for k, t in enumerate(trials) if name in t.layers}
        base = model.get_submodule(name)
        for t in holders.values():
            if t.layers[name].base_layer is not base:
                raise RuntimeError(f"trial layer {name} does not stand on the shared base's linear")
        set_module(model, name, FusedLowRankLinear(base, {k: t.slot(name) for k, t in holders.items()}, state))
    return state


def fused_layers(model: nn.Module) -> dict[str, FusedLowRankLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, FusedLowRankLinear)}


def lend_back(model: nn.Module, trial: TrialAdapter) -> dict[str, FusedLowRankLinear]:
    """Put ``trial``'s own adapted layers where the fused layers are (for its family's export);
    returns the fused layers so that :func:`restore` can put them back."""
    fused = fused_layers(model)
    for name, layer in fused.items():
        set_module(model, name, trial.layers.get(name, layer.base_layer))
    return fused


def restore(model: nn.Module, fused: dict[str, FusedLowRankLinear]) -> None:
    for name, layer in fused.items():
        set_module(model, name, layer)
