"""LoRA initialisations (``adapter.init``) as specs, and the tensors an init leaves behind.

Each entry names peft's own ``init_lora_weights`` value; ftlab never re-implements an init, it
reads the spec's flags. An init that rewrites the frozen base (PiSSA, OLoRA: ``W_res = W - s B0 A0``)
costs an SVD/QR per target linear and changes the weights under the adapter, so it is a step of
the plan (``ftlab.reuse.steps``: kind ``init``) whose product is :func:`initial_state` — the
rewritten base linears with the initial A and B — stored once per key and loaded into a freshly
wrapped model by :func:`load_initial_state` on a hit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ftlab.errors import fail


@dataclass(frozen=True)
class InitSpec:
    name: str
    #: peft's ``LoraConfig.init_lora_weights`` value
    peft_value: bool | str
    #: writes ``W - s B0 A0`` into the frozen base (the export converts the adapter back to the
    #: original base with peft's ``path_initial_model_for_weight_conversion``)
    rewrites_base: bool = False
    #: the paper, for messages and docs
    reference: str = ""

    @property
    def step(self) -> bool:
        """The init is a cached step of the plan (its product is worth storing)."""
        return self.rewrites_base


_INITS: dict[str, InitSpec] = {}


def register_init(spec: InitSpec) -> InitSpec:
    _INITS[spec.name] = spec
    return spec


def init_names() -> list[str]:
    return list(_INITS)


def init_spec(name: str | None) -> InitSpec:
    """The spec of ``adapter.init`` (``None``: an adapter without the key, i.e. peft's default)."""
    if name is None:
        return _INITS["default"]
    if name not in _INITS:
        fail("adapter.init", name, f"one of {init_names()}")
    return _INITS[name]


register_init(InitSpec("default", True, reference="Hu et al., LoRA, ICLR 2022 (A Kaiming-uniform, B = 0)"))
register_init(InitSpec("gaussian", "gaussian", reference="A ~ N(0, 1/r), B = 0 (peft)"))
register_init(InitSpec("pissa", "pissa", rewrites_base=True, reference="Meng et al., PiSSA, NeurIPS 2024"))
register_init(InitSpec("olora", "olora", rewrites_base=True, reference="Büyükakyüz, OLoRA, 2024"))


def initial_state_names(peft_model: nn.Module) -> list[str]:
    """Names of what an init sets: each peft LoRA layer's (a module with ``lora_A``, ``lora_B``
    and ``base_layer``) base weight and its A and B matrices."""
    names = []
    for prefix, layer in peft_model.named_modules():
        if hasattr(layer, "lora_A") and hasattr(layer, "base_layer"):
            names.append(f"{prefix}.base_layer.weight")
            names += [f"{prefix}.{kind}.{a}.weight" for kind in ("lora_A", "lora_B") for a in getattr(layer, kind)]
    return names


def initial_state(peft_model: nn.Module) -> dict[str, torch.Tensor]:
    """What an init leaves behind: every adapted linear's base weight (rewritten by PiSSA/OLoRA)
    and its initial A and B, by their names in ``peft_model`` (contiguous copies, ready to store)."""
    params = dict(peft_model.named_parameters())
    return {n: params[n].detach().clone().contiguous() for n in initial_state_names(peft_model)}


def load_initial_state(peft_model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy a stored :func:`initial_state` into a model wrapped the same way. A name that is not in
    the model, or one of the model's that the state lacks, means another key produced the state:
    refused loudly rather than half-loaded."""
    want = set(initial_state_names(peft_model))
    if set(state) != want:
        missing, extra = sorted(want - set(state))[:3], sorted(set(state) - want)[:3]
        raise RuntimeError(f"the stored LoRA init does not fit this model (missing {missing}, unexpected {extra})")
    params = dict(peft_model.named_parameters())
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)
