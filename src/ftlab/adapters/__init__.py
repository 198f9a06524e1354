"""Adapter families behind one registry (see :mod:`ftlab.adapters.registry`)."""

from ftlab.adapters.base import AdaptedModel
from ftlab.adapters.registry import AdapterSpec, all_adapters, get_adapter, register_adapter

__all__ = ["AdaptedModel", "AdapterSpec", "all_adapters", "get_adapter", "register_adapter"]
