"""Which adapters ModelZoo can train on a CS-X, decided from the adapter specs' general capability
flags (:class:`ftlab.adapters.registry.AdapterSpec`), so an adapter family registered later (a
plugin) is judged by what it trains, not by its name, and the adapter specs carry no Cerebras facts.

ModelZoo 2.10 trains every weight (full fine-tuning) or, with its ``Lora`` callback, the low-rank
factors A and B of ``nn.Linear`` modules; :data:`REFUSALS` lists, first match wins, the
capabilities that have no ModelZoo equivalent and why.
"""

from __future__ import annotations

from collections.abc import Callable

from ftlab.adapters.registry import AdapterSpec, all_adapters

_NO_PROX_HOOK = "rank gates need a proximal step after every optimiser step, which ModelZoo's trainer has no hook for"

#: (capability, why ModelZoo cannot train an adapter that has it), checked in order.
REFUSALS: tuple[tuple[Callable[[AdapterSpec], bool], Callable[[AdapterSpec], str]], ...] = (
    (lambda s: not s.trains, lambda s: "an eval-only control trains nothing to launch"),
    (lambda s: s.gated, lambda s: f"{s.label or s.name}'s {_NO_PROX_HOOK}"),
    (lambda s: s.magnitude, lambda s: "ModelZoo's Lora callback has no DoRA magnitude vector"),
    (lambda s: not (s.full_weights or s.low_rank),
     lambda s: "ModelZoo trains every weight or LoRA factors of linear layers, nothing else"),
)


def cerebras_refusal(spec: AdapterSpec) -> str | None:
    """Why ModelZoo cannot train the adapter, or None when it can."""
    return next((why(spec) for has, why in REFUSALS if has(spec)), None)


def lora_on_cerebras(spec: AdapterSpec) -> bool:
    """A low-rank adapter ModelZoo trains with its ``Lora`` callback (LoRA, masked LoRA)."""
    return spec.low_rank and cerebras_refusal(spec) is None


def cerebras_adapters() -> list[str]:
    """Names of the registered adapters ModelZoo can train."""
    return [a.name for a in all_adapters() if cerebras_refusal(a) is None]
