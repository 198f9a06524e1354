"""Adapter registry: the ``adapter`` config choice -> its schema, validator, builder and flags.

A leaf: it imports no adapter family. Each family module registers its specs on import (as peft's
tuners register themselves), and :mod:`ftlab.adapters` imports every built-in family, so any
``ftlab.adapters.*`` import sees them all. Adding an adapter family = one new module that calls
:func:`register_adapter`, one import line in ``ftlab/adapters/__init__.py`` and one YAML file in
``conf/adapter/``. An installed package adds its own through the ``ftlab.adapters`` entry point
(an :class:`AdapterSpec`; its YAML option through ``ftlab.conf``, :mod:`ftlab.core.plugins`).

Rules that span adapters (planner arithmetic, quantisation, Cerebras, per-stage thresholds) read
the capability flags of :class:`AdapterSpec`, never adapter names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ftlab.core.plugins import Registry


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    config_cls: type
    # build(base_model, adapter_cfg, run_cfg) -> AdaptedModel
    build: Callable[[nn.Module, Any, Any], Any]
    # validate(adapter_cfg, run_cfg) raises ConfigError; range checks a type cannot express
    validate: Callable[[Any, Any], None] | None = None
    #: False: control run (evaluate only, nothing trains)
    trains: bool = True
    #: every weight of the model trains (full fine-tuning); else the base is frozen
    full_weights: bool = False
    #: low-rank factors A (r x in) and B (out x r) per target linear (``adapter.r``)
    low_rank: bool = False
    #: one gate per rank, sparsified by a proximal step after every optimiser step (SoRA)
    gated: bool = False
    #: one DoRA magnitude per output row of each target linear
    magnitude: bool = False
    #: the update keeps the sparse base's zeros (needs a mask)
    masked: bool = False
    #: low-rank update per expert of fused MoE expert parameters (peft's ``target_parameters``);
    #: ``experts_note`` says why not otherwise
    experts: bool = False
    experts_note: str = ""
    #: can train beside a frozen k-bit (bitsandbytes) base
    supports_quantized_base: bool = False
    #: count_trainable(run_cfg) -> parameters the adapter trains, for the planner when the flags above
    #: cannot tell (a pass-through to another library's tuner counts on the meta device)
    count_trainable: Callable[[Any], int] | None = None
    #: printed name (``SoRA``) for messages
    label: str = ""


_REGISTRY: Registry[AdapterSpec] = Registry("adapter", "adapter", AdapterSpec, "ftlab.adapters")


register_adapter = _REGISTRY.register


#: built-in families and those of installed packages (entry point group ``ftlab.adapters``)
all_adapters = _REGISTRY.all


get_adapter = _REGISTRY.get
