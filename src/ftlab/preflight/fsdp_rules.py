"""What ``hardware.strategy=fsdp`` trains, decided from the config alone: the CLI's preflight and
the recipe both ask here, before anything is built, and neither has to import Lightning or torch's
FSDP for it (the preflight of a bad value stays within a composition's time)."""

from __future__ import annotations

from typing import Any

from ftlab.adapters.registry import all_adapters, get_adapter
from ftlab.core.errors import ConfigError
from ftlab.hardware import shards_parameters
from ftlab.preflight.environment import check_hardware


def fsdp_problem(cfg: Any) -> tuple[str, Any, str] | None:
    """``(key, value, allowed)`` when a run cannot train with ``hardware.strategy=fsdp`` (a strategy
    the target's spec lists as sharding its parameters)."""
    if not shards_parameters(cfg.hardware):
        return None
    spec = get_adapter(cfg.adapter.name)
    if spec.gated:  # its proximal step and logs read whole gate tensors, which a sharded gate does not hold
        allowed = sorted(a.name for a in all_adapters() if not a.gated)
        return ("adapter", cfg.adapter.name, f"one of {allowed} with hardware.strategy=fsdp "
                "(gated adapters read whole gate tensors on every log step; use hardware=multi_gpu)")
    if cfg.model.quantization:
        return ("model.quantization", cfg.model.quantization, "null with hardware.strategy=fsdp (FSDP cannot "
                "shard bitsandbytes' packed k-bit weights; QLoRA runs with hardware=gpu or multi_gpu)")
    if cfg.base.enabled:
        return ("base.enabled", True, "false with hardware.strategy=fsdp (pre-train the base with hardware=gpu "
                "or multi_gpu; it is cached and reused by the sharded run)")
    if (spec.magnitude or spec.masked) and cfg.model.dtype != "float32":
        return ("model.dtype", cfg.model.dtype, f"float32 with adapter={cfg.adapter.name} and hardware.strategy=fsdp "
                "(its fp32 weights and a half-precision base cannot share an FSDP unit, and it reads them outside a "
                "unit of their own; hardware.precision still computes in bf16)")
    if spec.full_weights and cfg.sparsity.name != "none" and cfg.sparsity.mode == "sparse_to_sparse":
        return ("sparsity.mode", "sparse_to_sparse", "sparse_to_dense with adapter=full and hardware.strategy=fsdp "
                "(re-applying the mask after each step needs whole weights; each rank holds a shard)")
    return None


def check_fsdp_config(cfg: Any) -> None:
    """Refuse (one line) what the sharded path does not train; nothing to do for other strategies."""
    problem = fsdp_problem(cfg)
    if problem is not None:
        raise ConfigError(*problem)


def check_fsdp(cfg: Any) -> None:
    """The recipe's check of an FSDP run before anything is built or written: the settings, and the
    hardware (a CUDA device for ``accelerator=gpu``), as the CLI's preflight also checks."""
    if not shards_parameters(cfg.hardware):
        return
    check_fsdp_config(cfg)
    check_hardware(cfg)
