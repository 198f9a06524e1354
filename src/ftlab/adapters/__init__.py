"""Adapter families behind one registry (see :mod:`ftlab.adapters.registry`).

Importing the package registers every built-in family (one import line each); the families keep
peft out of their module level, so this costs no peft import.
"""

from ftlab.adapters import full, masked, peft_lora, peft_tuner, sora  # noqa: F401  (register the built-in families)
from ftlab.adapters.base import AdaptedModel
from ftlab.adapters.registry import AdapterSpec, all_adapters, get_adapter, register_adapter

__all__ = ["AdaptedModel", "AdapterSpec", "all_adapters", "get_adapter", "register_adapter"]
