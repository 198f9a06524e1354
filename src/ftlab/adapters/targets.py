"""Which linears a low-rank adapter wraps, resolved against the loaded model.

``adapter.target_modules`` wins over ``model.target_modules``; when both are null the targets are
every linear of the decoder blocks (:func:`ftlab.models.structure.decoder_linears`). A list is
matched with peft's rule (an entry is a full module name or its last components), and every
entry must match a linear: a typo, or a Llama name on a GPT-NeoX model, fails before training
with one line that lists the model's linear names instead of peft's traceback at
``get_peft_model``. Naming an MoE router is refused the same way.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf
from torch import nn

from ftlab.errors import ConfigError
from ftlab.models.structure import decoder_linears, leaf_names, linear_names, matches, router_names


def requested_targets(adapter_cfg: Any, run_cfg: Any) -> list[str] | None:
    """The configured list (adapter first, then the model preset); ``None`` = all decoder linears."""
    targets = adapter_cfg.target_modules
    if targets is None and run_cfg is not None:
        targets = run_cfg.model.target_modules
    return None if targets is None else [str(t) for t in targets]


def _key(adapter_cfg: Any) -> str:
    return "adapter.target_modules" if adapter_cfg.target_modules is not None else "model.target_modules"


def resolve_targets(model: nn.Module, requested: list[str] | None, key: str = "adapter.target_modules") -> list[str]:
    """Full module names of the linears to adapt, in model order (see the module docstring)."""
    if requested is None:
        found = decoder_linears(model)
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
    missing = [t for t in requested if not any(matches(n, t) for n in linears)]
    if missing:
        raise ConfigError(key, list(requested), f"{missing} match(es) no linear layer of this "
                          f"{type(model).__name__}; its linear layers: {leaf_names(linears)}")
    return [n for n in linears if any(matches(n, t) for t in requested)]


def adapter_targets(model: nn.Module, adapter_cfg: Any, run_cfg: Any) -> list[str]:
    """:func:`resolve_targets` for an adapter config inside a run config."""
    return resolve_targets(model, requested_targets(adapter_cfg, run_cfg), _key(adapter_cfg))


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
