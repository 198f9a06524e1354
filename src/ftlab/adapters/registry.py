"""Adapter registry: the ``adapter`` config choice -> its schema, validator and builder.

Adding an adapter family = one new module that calls :func:`register_adapter` plus one YAML file
in ``conf/adapter/``; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ftlab.errors import ConfigError


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    config_cls: type
    # build(base_model, adapter_cfg, run_cfg) -> AdaptedModel
    build: Callable[[nn.Module, Any, Any], Any]
    # validate(adapter_cfg, run_cfg) raises ConfigError; range checks a type cannot express
    validate: Callable[[Any, Any], None] | None = None
    trains: bool = True  # False: control run (evaluate only)


_REGISTRY: dict[str, AdapterSpec] = {}


def register_adapter(spec: AdapterSpec) -> AdapterSpec:
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"adapter {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def _load_builtin() -> None:
    # Import for the side effect of registration; one line per adapter family.
    import ftlab.adapters.full  # noqa: F401
    import ftlab.adapters.masked  # noqa: F401
    import ftlab.adapters.peft_lora  # noqa: F401
    import ftlab.adapters.sora  # noqa: F401


def all_adapters() -> list[AdapterSpec]:
    _load_builtin()
    return list(_REGISTRY.values())


def get_adapter(name: str) -> AdapterSpec:
    _load_builtin()
    if name not in _REGISTRY:
        raise ConfigError("adapter", name, f"one of {sorted(_REGISTRY)}")
    return _REGISTRY[name]
