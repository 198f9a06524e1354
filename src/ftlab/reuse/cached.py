"""The base model and the pruning mask as cached steps, run by :class:`ftlab.reuse.runner.StepRunner`
(the one runner: lookup or build under the key's lock, publish, verify, node-local copy, record).
Here: how each is computed, written into its artifact and read back. With ``reuse.enabled=false``
(or under DDP) the same functions compute in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ftlab.base_model import frozen
from ftlab.models.build import torch_dtype
from ftlab.reuse.runner import StepRunner
from ftlab.sparsity.io import load_masks, save_masks

MODEL_DIR = "model"
MASK_FILE = "masks.safetensors"


def cached_base_model(cfg: Any, build: Callable[[], nn.Module], record: dict | None = None,
                      runner: StepRunner | None = None) -> nn.Module:
    """The pre-trained base model: ``build()`` trains it; the store keeps it as an HF model dir.
    ``record`` (legacy): a dict that receives the step's record."""
    runner = runner or StepRunner(cfg)
    model = runner.run(runner.steps.base, build,
                       lambda built, artifact: built.save_pretrained(str(artifact / MODEL_DIR), safe_serialization=True),
                       lambda artifact: load_base(artifact / MODEL_DIR, cfg.model.dtype), steps=int(cfg.base.steps))
    if record is not None:
        record["base"] = runner.records["base"]
    return model


def load_base(path, dtype: str) -> nn.Module:
    """Load a cached base the way ``pretrain_base`` leaves it: eval mode, frozen."""
    from transformers import AutoModelForCausalLM

    return frozen(AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype(dtype)))


MaskFn = Callable[[Any, nn.Module, Any], dict[str, torch.Tensor]]


def cached_mask_fn(compute: MaskFn, record: dict | None = None, runner: StepRunner | None = None) -> MaskFn:
    """``compute`` (``ftlab.sparsity.compute_masks``'s signature) behind the store."""

    def masks_for(cfg: Any, model: nn.Module, tokenizer) -> dict[str, torch.Tensor]:
        run = runner or StepRunner(cfg)
        step = run.steps.mask
        meta = {"model": cfg.model.name, "method": cfg.sparsity.method, "key": step.key}
        masks = run.run(step, lambda: compute(cfg, model, tokenizer),
                        lambda built, artifact: save_masks(built, artifact / MASK_FILE, meta),
                        lambda artifact: load_masks(artifact / MASK_FILE)[0])
        if record is not None:
            record["mask"] = run.records["mask"]
        return masks

    return masks_for
