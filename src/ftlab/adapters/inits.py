"""LoRA initialisations (``adapter.init``) as specs, and the tensors an init leaves behind.

Each entry names peft's own ``init_lora_weights`` value and calls peft's own functions (EVA's
``get_eva_state_dict``/``initialize_lora_eva_weights``, CorDA's ``preprocess_corda``); ftlab never
re-implements an init, and the rest of the code reads the spec's flags. An init that rewrites the
frozen base (PiSSA, OLoRA, CorDA: ``W_res = W - s B0 A0``) or reads data (EVA, CorDA) is a step
of the plan (``ftlab.reuse.steps``: kind ``init``): its product — :func:`initial_state` (the
rewritten base linears with the initial A and B), or EVA's state dict (A per layer, ranks
redistributed) — is stored once per key and applied to a freshly wrapped model on a hit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ftlab.core.errors import fail


@dataclass(frozen=True)
class InitSpec:
    name: str
    #: peft's ``LoraConfig.init_lora_weights`` value
    peft_value: bool | str
    #: writes ``W - s B0 A0`` into the frozen base (the export converts the adapter back to the
    #: original base with peft's ``path_initial_model_for_weight_conversion``)
    rewrites_base: bool = False
    #: peft converts the trained adapter back to a plain LoRA on the original base at export
    #: (``save_pretrained(path_initial_model_for_weight_conversion=...)``: PiSSA, OLoRA, CorDA)
    converts_back: bool = False
    #: reads batches of the task's train split (``adapter.calibration``); the step key covers them
    data: bool = False
    #: its own settings (dotted config keys), in the step key and in peft's config (:attr:`peft_options`)
    config_keys: tuple[str, ...] = ()
    #: peft's quantiser runs on a CUDA device only (LoftQ)
    needs_cuda: bool = False
    #: the paper, for messages and docs
    reference: str = ""
    #: adapter config -> extra ``LoraConfig`` kwargs (``eva_config``, ``corda_config``, ``loftq_config``)
    peft_options: Callable[[Any], dict[str, Any]] = field(default=lambda a: {}, compare=False)
    #: before peft wraps the model: ``prepare(model, peft_config, batches)`` (CorDA's covariance)
    prepare: Callable[[nn.Module, Any, list], None] | None = field(default=None, compare=False)
    #: the product of the step from the wrapped model: ``capture(wrapped, batches)``
    capture: Callable[[nn.Module, list | None], dict[str, torch.Tensor]] | None = field(default=None, compare=False)
    #: put a product into a wrapped model: ``apply(wrapped, state)``
    apply: Callable[[nn.Module, dict[str, torch.Tensor]], None] | None = field(default=None, compare=False)
    #: on a hit the model is wrapped with no init at all (the product replaces what the init sets);
    #: False: wrapped with the init itself (EVA's: B = 0), then the product applied
    bare_on_hit: bool = True

    @property
    def step(self) -> bool:
        """The init is a cached step of the plan (its product is worth storing, or depends on data)."""
        return self.rewrites_base or self.data


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


def _capture_initial(wrapped: nn.Module, batches: list | None) -> dict[str, torch.Tensor]:
    return initial_state(wrapped)


def _eva_options(a: Any) -> dict[str, Any]:
    from peft import EvaConfig  # peft is heavy (~4 s of imports): only when a peft adapter is built

    return {"eva_config": EvaConfig(rho=float(a.eva_rho), tau=float(a.eva_tau))}


def _eva_capture(wrapped: nn.Module, batches: list | None) -> dict[str, torch.Tensor]:
    """peft's EVA: incremental SVD of each target layer's inputs over the batches (cycled until
    the components converge); the state holds each layer's A, ranks redistributed by ``rho``."""
    from peft.tuners.lora.eva import get_eva_state_dict  # heavy: see _eva_options

    state = get_eva_state_dict(wrapped, dataloader=batches, show_progress_bar=False)
    return {name: t.detach().clone().contiguous() for name, t in state.items()}


def _eva_apply(wrapped: nn.Module, state: dict[str, torch.Tensor]) -> None:
    from peft import initialize_lora_eva_weights  # heavy: see _eva_options

    initialize_lora_eva_weights(wrapped, eva_state_dict=dict(state), show_progress_bar=False)


def _corda_options(a: Any) -> dict[str, Any]:
    from peft.tuners.lora.config import CordaConfig  # heavy: see _eva_options

    return {"corda_config": CordaConfig(corda_method=a.corda_method)}


def _corda_prepare(model: nn.Module, config: Any, batches: list) -> None:
    """peft's ``preprocess_corda``: the covariance of each target's inputs over the batches, then
    the decomposition ``get_peft_model`` reads (``eigens``)."""
    from peft.tuners.lora.corda import preprocess_corda  # heavy: see _eva_options

    def run_model() -> None:  # one unpadded example per forward: peft's hooks read (1, length, dim) inputs
        for batch in batches:
            for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
                model(input_ids=ids[mask.bool()].unsqueeze(0))

    preprocess_corda(model, config, run_model=run_model)


def _loftq_options(a: Any) -> dict[str, Any]:
    from peft import LoftQConfig  # heavy: see _eva_options

    return {"loftq_config": LoftQConfig(loftq_bits=int(a.loftq_bits), loftq_iter=int(a.loftq_iter))}


register_init(InitSpec("default", True, reference="Hu et al., LoRA, ICLR 2022 (A Kaiming-uniform, B = 0)"))
register_init(InitSpec("gaussian", "gaussian", reference="A ~ N(0, 1/r), B = 0 (peft)"))
register_init(InitSpec("pissa", "pissa", rewrites_base=True, converts_back=True, capture=_capture_initial,
                       apply=load_initial_state, reference="Meng et al., PiSSA, NeurIPS 2024"))
register_init(InitSpec("olora", "olora", rewrites_base=True, converts_back=True, capture=_capture_initial,
                       apply=load_initial_state, reference="Büyükakyüz, OLoRA, 2024"))
register_init(InitSpec("corda", "corda", rewrites_base=True, converts_back=True, data=True,
                       config_keys=("adapter.corda_method",), peft_options=_corda_options, prepare=_corda_prepare,
                       capture=_capture_initial, apply=load_initial_state,
                       reference="Yang et al., CorDA, NeurIPS 2024"))
register_init(InitSpec("eva", "eva", data=True, config_keys=("adapter.eva_rho", "adapter.eva_tau"),
                       peft_options=_eva_options, capture=_eva_capture, apply=_eva_apply, bare_on_hit=False,
                       reference="Paischer et al., EVA (Explained Variance Adaptation), 2024"))
register_init(InitSpec("loftq", "loftq", rewrites_base=True, needs_cuda=True,
                       config_keys=("adapter.loftq_bits", "adapter.loftq_iter"), peft_options=_loftq_options,
                       capture=_capture_initial, apply=load_initial_state,
                       reference="Li et al., LoftQ, ICLR 2024"))
