"""The base model, the pruning mask and a LoRA init that rewrites the base as cached steps, run by :class:`ftlab.reuse.runner.StepRunner`
(the one runner: lookup or build under the key's lock, publish, verify, node-local copy, record).
Here: how each is computed, written into its artifact and read back. With ``reuse.enabled=false``
(or under DDP) the same functions compute in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM

from ftlab.models.dtypes import torch_dtype
from ftlab.reuse.runner import StepRunner
from ftlab.sparsity.compute import PrunedBase
from ftlab.sparsity.io import load_masks, save_masks
from ftlab.training.base_model import frozen

MODEL_DIR = "model"
MASK_FILE = "masks.safetensors"
#: SparseGPT's reconstructed weights of the pruned linears (other importances only select).
WEIGHTS_FILE = "weights.safetensors"
#: A LoRA init's state (:func:`ftlab.adapters.inits.initial_state`).
INIT_FILE = "init.safetensors"


def cached_base_model(cfg: Any, build: Callable[[], nn.Module], runner: StepRunner | None = None) -> nn.Module:
    """The pre-trained base model: ``build()`` trains it; the store keeps it as an HF model dir.
    ``runner``: the run's (it keeps the record); a fresh one for this config when not given."""
    runner = runner or StepRunner(cfg)
    model = runner.run(runner.steps.base, build,
                       lambda built, artifact: built.save_pretrained(str(artifact / MODEL_DIR), safe_serialization=True),
                       lambda artifact: load_base(artifact / MODEL_DIR, cfg.model.dtype), steps=int(cfg.base.steps))
    return model


def load_base(path, dtype: str) -> nn.Module:
    """Load a cached base the way ``pretrain_base`` leaves it: eval mode, frozen."""
    return frozen(AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype(dtype)))


InitFn = Callable[[Callable[[], dict[str, torch.Tensor]]], dict[str, torch.Tensor]]


def cached_init_fn(runner: StepRunner) -> InitFn:
    """The plan's ``init`` step behind the store, for the adapter's builder (``init_store``): the
    artifact is the init's state (rewritten base linears, initial A and B) in one safetensors file."""

    def store(compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return runner.run(runner.steps.init, compute, lambda state, artifact: save_file(state, str(artifact / INIT_FILE)),
                          lambda artifact: load_file(str(artifact / INIT_FILE)))

    return store


MaskFn = Callable[[Any, nn.Module, Any], Any]


def cached_mask_fn(compute: MaskFn, runner: StepRunner | None = None) -> MaskFn:
    """``compute`` (``ftlab.sparsity.compute_pruned``'s signature: masks, SparseGPT's weights,
    OWL's levels) behind the store; the artifact holds the masks and any reconstructed weights.
    ``runner``: the run's (it keeps the record); a fresh one per call when not given."""

    def masks_for(cfg: Any, model: nn.Module, tokenizer) -> PrunedBase:
        run = runner or StepRunner(cfg)
        step = run.steps.mask
        meta = {"model": cfg.model.name, "method": cfg.sparsity.method, "key": step.key}

        def write(built: PrunedBase, artifact: Path) -> None:
            save_masks(built.masks, artifact / MASK_FILE, {**meta, "levels": built.levels})
            if built.weights:
                save_file({n: w.contiguous() for n, w in built.weights.items()}, str(artifact / WEIGHTS_FILE))

        def read(artifact: Path) -> PrunedBase:
            found, saved = load_masks(artifact / MASK_FILE)
            weights = artifact / WEIGHTS_FILE
            return PrunedBase(found, load_file(str(weights)) if weights.is_file() else None, (saved or {}).get("levels"))

        return run.run(step, lambda: compute(cfg, model, tokenizer), write, read)

    return masks_for
