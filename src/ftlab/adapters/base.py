"""What the training loop needs from an adapted model.

An :class:`AdaptedModel` wraps the trainable module and answers the questions the recipe asks:
which parameters train (and in which optimiser groups), what is added to the loss, what happens
after each optimiser step, how it is exported. Defaults describe a plain dense model; adapter
families override only what differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn


class AdaptedModel:
    #: False for eval-only controls: the recipe skips training.
    trains: bool = True
    #: True when the adapter gates ranks (the ``sparsity`` columns of the logs are filled).
    gated: bool = False

    def __init__(self, model: nn.Module, adapter_cfg: Any, run_cfg: Any):
        self.model = model
        self.adapter_cfg = adapter_cfg
        self.run_cfg = run_cfg

    # -- optimisation --------------------------------------------------------------------
    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """AdamW parameter groups. Gated adapters add a gate group with its own lr and no decay."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        return [{"params": params, "lr": lr, "weight_decay": weight_decay, "name": "main"}]

    def regularization(self) -> torch.Tensor | None:
        """Extra loss term (e.g. L1 on gates); ``None`` for none."""
        return None

    def after_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Runs only after a real optimiser step (proximal updates, mask enforcement)."""

    def on_stage_start(self, stage: Any) -> None:
        """Per-stage keys of ``schedule=stages`` (e.g. a new threshold)."""

    # -- accounting ----------------------------------------------------------------------
    def trainable_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def effective_params(self) -> int:
        """Parameters that actually contribute (gated adapters: only non-zero ranks)."""
        return self.trainable_params()

    def sparsity(self) -> float | None:
        """Overall fraction of zero gates; ``None`` for ungated adapters."""
        return None

    def layer_sparsity(self) -> dict[str, float] | None:
        return None

    # -- export --------------------------------------------------------------------------
    def save_adapter(self, directory: Path) -> bool:
        """Write the adapter in peft format; False if this adapter has no separate format."""
        return False

    def merged_model(self) -> nn.Module:
        """The base architecture with the adaptation folded into its weights."""
        return self.model

    def finish(self, run_dir: Path, tokenizer: Any, val: list | None) -> dict[str, Any]:
        """After training, before evaluation and export: whatever the final model needs first
        (a sparse base merges, re-masks and validates here); returns ``metrics.json`` entries."""
        return {}
