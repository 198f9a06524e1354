"""Which linears a low-rank adapter wraps, resolved against the loaded model.

``adapter.target_modules`` wins over ``model.target_modules``; when both are null the targets are
every linear of the decoder blocks (:func:`ftlab.models.structure.decoder_linears`) and every fused
MoE expert parameter (:func:`ftlab.models.structure.expert_parameters`, adapted through peft's
``target_parameters``). A list is matched with peft's rule (an entry is a full module name or its
last components; for experts the parameter's name, ``gate_up_proj`` / ``experts.down_proj``, or
the experts module's, ``experts``, which selects all its parameters), and every entry must match: a typo, or a Llama name on a GPT-NeoX model, fails before training
with one line that lists the model's linear names instead of peft's traceback at
``get_peft_model``. Naming an MoE router is refused the same way.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf
from torch import nn

from ftlab.adapters.registry import all_adapters, get_adapter
from ftlab.core.errors import ConfigError
from ftlab.models.structure import (
    decoder_linears,
    expert_parameters,
    leaf_names,
    linear_names,
    matches,
    router_names,
)


def requested_targets(adapter_cfg: Any, run_cfg: Any) -> list[str] | None:
    """The configured list (adapter first, then the model preset); ``None`` = all decoder linears."""
    targets = adapter_cfg.target_modules
    if targets is None and run_cfg is not None:
        targets = run_cfg.model.target_modules
    return None if targets is None else [str(t) for t in targets]


def _key(adapter_cfg: Any) -> str:
    return "adapter.target_modules" if adapter_cfg.target_modules is not None else "model.target_modules"


def _expert_hit(param: str, target: str) -> bool:
    return matches(param, target) or matches(param.rsplit(".", 1)[0], target)


def resolve_targets(model: nn.Module, requested: list[str] | None, key: str = "adapter.target_modules") -> list[str]:
    """Full module names of the linears to adapt, in model order, then the full parameter names of
    the expert weights to adapt (see the module docstring)."""
    experts = expert_parameters(model)
    if requested is None:
        found = decoder_linears(model) + experts
        if not found:
            raise ConfigError(key, None, "an explicit list: the model has no linear layer inside decoder blocks "
                              f"(its linear layers: {leaf_names(linear_names(model))})")
        return found
    routers = router_names(model)
    for target in requested:
        hit = [r for r in routers if matches(r, target)]
        if hit:
            raise ConfigError(key, list(requested), f"no MoE router ({target!r} names {hit[0]}): routers pick the "
                              f"experts and are not adapted; linear layers: {leaf_names(decoder_linears(model))}")
    linears = linear_names(model)
    missing = [t for t in requested if not any(matches(n, t) for n in linears)
               and not any(_expert_hit(p, t) for p in experts)]
    if missing:
        expert_hint = f"; its expert parameters: {leaf_names(experts)}" if experts else ""
        raise ConfigError(key, list(requested), f"{missing} match(es) no linear layer of this "
                          f"{type(model).__name__}; its linear layers: {leaf_names(linears)}{expert_hint}")
    return ([n for n in linears if any(matches(n, t) for t in requested)]
            + [p for p in experts if any(_expert_hit(p, t) for t in requested)])


def split_targets(model: nn.Module, names: list[str]) -> tuple[list[str], list[str]]:
    """``(linear module names, expert parameter names)`` of a :func:`resolve_targets` result."""
    experts = set(expert_parameters(model))
    return [n for n in names if n not in experts], [n for n in names if n in experts]


def peft_parameter_list(model: nn.Module, params: list[str]) -> list[str]:
    """The shortest list peft's ``target_parameters`` matches to exactly ``params``:
    ``experts.<leaf>`` entries when they select no other expert parameter, else the full names."""
    short = list(dict.fromkeys(".".join(p.rsplit(".", 2)[-2:]) for p in params))
    selected = [p for p in expert_parameters(model) if any(matches(p, s) for s in short)]
    return short if selected == list(params) else list(params)


def adapter_targets(model: nn.Module, adapter_cfg: Any, run_cfg: Any) -> list[str]:
    """:func:`resolve_targets` for an adapter config inside a run config, refused in one line
    where the adapter cannot train the expert parameters among them (:func:`check_expert_support`)."""
    names = resolve_targets(model, requested_targets(adapter_cfg, run_cfg), _key(adapter_cfg))
    check_expert_support(model, names, adapter_cfg)
    return names


def check_expert_support(model: nn.Module, names: list[str], adapter_cfg: Any) -> None:
    """An adapter whose spec cannot train fused expert parameters (``experts=False``: DoRA's
    magnitude, SoRA's gated layer) is refused in one line when ``names`` include experts, and so
    is dropout on experts (peft folds the update into the fused weight: there is no input to drop)."""
    _, params = split_targets(model, names)
    spec = get_adapter(str(adapter_cfg.name))
    if not params or not spec.low_rank:
        return
    hint = (f"set adapter.target_modules to linears only, e.g. {leaf_names(decoder_linears(model))} "
            f"(this {type(model).__name__} stores its experts as fused parameters {leaf_names(params)})")
    if not spec.experts:
        raise ConfigError("adapter", spec.name, "an adapter that trains MoE expert parameters "
                          f"({', '.join(s.name for s in all_adapters() if s.experts)}): "
                          f"{spec.experts_note or 'it has no form for fused experts'}; or {hint}")
    if float(adapter_cfg.dropout) > 0:
        raise ConfigError("adapter.dropout", float(adapter_cfg.dropout), "0 when MoE experts are adapted (peft "
                          f"folds the expert update into the fused weight, so no input is dropped out); or {hint}")


def peft_target_list(model: nn.Module, names: list[str]) -> list[str]:
    """The shortest list peft matches to exactly ``names``: their leaf names when those select no
    other linear (readable ``adapter_config.json``), else the full names."""
    leaves = leaf_names(names)
    selected = [n for n in linear_names(model) if any(matches(n, leaf) for leaf in leaves)]
    return leaves if selected == list(names) else list(names)


def check_configured_targets(model: nn.Module, cfg: Any) -> None:
    """The configured lists (``model.target_modules``, ``adapter.target_modules``) name linears of
    ``model`` (no router): the config checks call it with the architecture on the meta device, so a
    typo or a Llama name on a GPT-NeoX model fails at composition, before any weight loads. A
    string (peft's ``all-linear``) is peft's own keyword and passes."""
    for key in ("model.target_modules", "adapter.target_modules"):
        targets = OmegaConf.select(cfg, key, default=None)
        if targets and not isinstance(targets, str):
            resolve_targets(model, [str(t) for t in targets], key)
    if OmegaConf.select(cfg, "adapter.name", default=None) and expert_parameters(model):
        adapter_targets(model, cfg.adapter, cfg)
