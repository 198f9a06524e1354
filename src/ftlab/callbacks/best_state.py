"""``export.checkpoint=best``: the trainable tensors of the best evaluated step, kept in memory.

A checkpoint holds only what training changes (adapter tensors, gates, magnitudes), so keeping
the best one is a copy of those tensors at each improvement of the monitored metric (the one
``train.early_stopping.metric`` names, ``val_loss`` by default). The copy travels in the
training state (this callback's ``state_dict``), so a resumed run keeps the best of the steps
before its checkpoint.
"""

from __future__ import annotations

import lightning as L
import torch


class BestState(L.Callback):
    def __init__(self, monitor: str, mode: str):
        self.monitor, self.mode = monitor, mode
        self.best: float | None = None
        self.step: int | None = None
        self.tensors: dict[str, torch.Tensor] = {}

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value < self.best if self.mode == "min" else value > self.best

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or not self._better(float(value)):
            return
        self.best, self.step = float(value), trainer.global_step
        self.tensors = {n: p.detach().to("cpu", copy=True) for n, p in pl_module.model.named_parameters()
                        if p.requires_grad}

    def restore(self, model: torch.nn.Module) -> int | None:
        """Load the best tensors into ``model``; the step they come from (None: nothing evaluated)."""
        if not self.tensors:
            return None
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self.tensors.items():
                params[name].copy_(value.to(params[name].device))
        return self.step

    def state_dict(self) -> dict:
        return {"best": self.best, "step": self.step, "tensors": self.tensors}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best, self.step = state_dict.get("best"), state_dict.get("step")
        self.tensors = dict(state_dict.get("tensors") or {})


__all__ = ["BestState"]
