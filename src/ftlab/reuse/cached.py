"""The base model and the pruning mask as cached steps.

Both run inside :func:`preserved_rng`, and on a build the result is read back from the published
artifact exactly as a hit reads it, so what follows (adapter initialisation, training) cannot
tell a build from a hit. With ``reuse.enabled=false`` the same functions compute in memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ftlab.reuse.rng import preserved_rng
from ftlab.reuse.stages import world_size
from ftlab.reuse.steps import Step, as_plain, cache_dir, run_steps
from ftlab.reuse.store import ArtifactStore, BuildResult

MODEL_DIR = "model"
MASK_FILE = "masks.safetensors"


def _store_for(c: dict[str, Any]) -> tuple[ArtifactStore | None, str]:
    """The run's store, or ``None`` and why caching does not apply."""
    if not (c.get("reuse") or {}).get("enabled", True):
        return None, "reuse.enabled=false"
    if world_size(c) != 1:  # every rank would take the build lock of a step that needs all ranks
        return None, "distributed training (devices x nodes > 1)"
    return ArtifactStore(cache_dir(c)), ""


def _record(step: Step, res: BuildResult | None, runtime: float, why_not: str, **extra) -> dict[str, Any]:
    return {"key": step.key, "parent": step.parent, "cache_hit": bool(res and res.hit), "runtime_s": round(runtime, 4),
            "waited_s": round(res.waited_s, 4) if res else 0.0, "cached": res is not None,
            "digest": res.entry.digest() if res else None,
            **({"why_not_cached": why_not} if why_not else {}), **extra}


def cached_base_model(cfg: Any, build: Callable[[], nn.Module], record: dict | None = None) -> nn.Module:
    """The pre-trained base model: ``build()`` trains it; the store keeps it as an HF model dir."""
    c = as_plain(cfg)
    step = run_steps(c).base
    store, why = _store_for(c)
    t0 = time.perf_counter()
    if store is None:
        with preserved_rng():
            model = build()
        res = None
    else:
        def write(artifact):
            with preserved_rng():
                built = build()
            built.save_pretrained(str(artifact / MODEL_DIR), safe_serialization=True)

        res = store.get_or_build(step.key, write, kind=step.kind, parent=step.parent, config=step.config,
                                 version=step.version)
        entry = res.entry
        local = (c.get("paths") or {}).get("local_cache_dir")
        if local:  # shared cache -> node-local copy, read from local disk from then on
            entry = ArtifactStore(local).import_entry(entry)
        model = load_base(entry.artifact / MODEL_DIR, cfg.model.dtype)
    if record is not None:
        record["base"] = _record(step, res, time.perf_counter() - t0, why, steps=int(cfg.base.steps))
    return model


def load_base(path, dtype: str) -> nn.Module:
    """Load a cached base the way ``pretrain_base`` leaves it: eval mode, frozen."""
    from transformers import AutoModelForCausalLM

    from ftlab.base_model import frozen
    from ftlab.models.build import torch_dtype

    return frozen(AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype(dtype)))


MaskFn = Callable[[Any, nn.Module, Any], dict[str, torch.Tensor]]


def cached_mask_fn(compute: MaskFn, record: dict | None = None) -> MaskFn:
    """``compute`` (``ftlab.sparsity.compute_masks``'s signature) behind the store."""

    def masks_for(cfg: Any, model: nn.Module, tokenizer) -> dict[str, torch.Tensor]:
        from ftlab.sparsity.io import load_masks, save_masks

        c = as_plain(cfg)
        step = run_steps(c).mask
        store, why = _store_for(c)
        t0 = time.perf_counter()
        if store is None:
            with preserved_rng():
                masks = compute(cfg, model, tokenizer)
            res = None
        else:
            def write(artifact):
                with preserved_rng():
                    built = compute(cfg, model, tokenizer)
                save_masks(built, artifact / MASK_FILE, {"model": cfg.model.name, "method": cfg.sparsity.method,
                                                         "key": step.key})

            res = store.get_or_build(step.key, write, kind=step.kind, parent=step.parent, config=step.config,
                                     version=step.version)
            masks, _ = load_masks(res.entry.artifact / MASK_FILE)
        if record is not None:
            record["mask"] = _record(step, res, time.perf_counter() - t0, why)
        return masks

    return masks_for
