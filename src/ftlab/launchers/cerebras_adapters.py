"""Which adapters ModelZoo can train on a CS-X, decided from the adapter specs' general capability
flags (:class:`ftlab.adapters.registry.AdapterSpec`), so an adapter family registered later (a
plugin) is judged by what it trains, not by its name, and the adapter specs carry no Cerebras facts.

ModelZoo 2.10 trains every weight (full fine-tuning) or, with its ``Lora`` callback, the low-rank
factors A and B of ``nn.Linear`` modules; :data:`REFUSALS` lists, first match wins, the
capabilities that have no ModelZoo equivalent and why; :data:`SETTING_REFUSALS` the adapter
settings (rsLoRA scaling, LoRA+ learning rates, initialisations) it cannot honour.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ftlab.adapters.registry import AdapterSpec, all_adapters
from ftlab.core.errors import fail

_NO_PROX_HOOK = "rank gates need a proximal step after every optimiser step, which ModelZoo's trainer has no hook for"

#: (capability, why ModelZoo cannot train an adapter that has it), checked in order.
REFUSALS: tuple[tuple[Callable[[AdapterSpec], bool], Callable[[AdapterSpec], str]], ...] = (
    (lambda s: not s.trains, lambda s: "an eval-only control trains nothing to launch"),
    (lambda s: s.gated, lambda s: f"{s.label or s.name}'s {_NO_PROX_HOOK}"),
    (lambda s: s.magnitude, lambda s: "ModelZoo's Lora callback has no DoRA magnitude vector"),
    (lambda s: not (s.full_weights or s.low_rank),
     lambda s: "ModelZoo trains every weight or LoRA factors of linear layers, nothing else"),
)


#: Adapter settings ModelZoo's ``Lora`` callback has no equivalent for, keyed by the capability
#: they ask for: (key, is it asked for, what Cerebras allows (why)), checked in order.
SETTING_REFUSALS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("use_rslora", lambda a: bool(a.get("use_rslora")), "false on Cerebras (ModelZoo's LoRA scales by alpha/r)"),
    ("lora_plus_ratio", lambda a: a.get("lora_plus_ratio") is not None,
     "null on Cerebras (ModelZoo's LoRA trains A and B at one lr)"),
    ("init", lambda a: a.get("init", "default") != "default",
     "default on Cerebras (ModelZoo's LoRA initialises A and B itself)"),
)


def check_adapter_settings(adapter_cfg: Any) -> None:
    """One line on the first adapter setting ModelZoo cannot honour (:data:`SETTING_REFUSALS`)."""
    for key, asked, allowed in SETTING_REFUSALS:
        if asked(adapter_cfg):
            fail(f"adapter.{key}", adapter_cfg.get(key), allowed)


def cerebras_refusal(spec: AdapterSpec) -> str | None:
    """Why ModelZoo cannot train the adapter, or None when it can."""
    return next((why(spec) for has, why in REFUSALS if has(spec)), None)


def lora_on_cerebras(spec: AdapterSpec) -> bool:
    """A low-rank adapter ModelZoo trains with its ``Lora`` callback (LoRA, masked LoRA)."""
    return spec.low_rank and cerebras_refusal(spec) is None


def cerebras_adapters() -> list[str]:
    """Names of the registered adapters ModelZoo can train."""
    return [a.name for a in all_adapters() if cerebras_refusal(a) is None]
