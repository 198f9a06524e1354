"""A fused group's trial as a LightningModule: the solo run's module, except that the forward
and backward of its micro-batch happen in the group's fused step.

Everything else is :class:`~ftlab.training.module.FtlabModule`'s: parameter groups (of the
trial's own view, so only its tensors), AdamW with the adapter's post-step hook (SoRA's prox),
LambdaLR schedule, stage hooks, checkpoint contents, validation. Optimisation is manual because
the backward has already run when ``training_step`` returns: the step clips (by norm, as Lightning
does in a solo run), steps the optimiser and the scheduler in the same order as Lightning's
automatic loop. Trainers of fused trials are built without ``gradient_clip_val`` (Lightning
refuses automatic clipping with manual optimisation); the module clips with the run's value.
"""

from __future__ import annotations

from typing import Any

import torch

from ftlab.adapters.base import AdaptedModel
from ftlab.core.errors import FtlabError
from ftlab.fused.coordinator import FusedStep
from ftlab.training.module import FtlabModule
from ftlab.training.state import RNG_KEY


class TrialDiverged(FtlabError):
    """A fused trial's loss is NaN/inf: the trial stops (failed), the group goes on."""


class FusedTrialModule(FtlabModule):
    def __init__(self, adapted: AdaptedModel, cfg: Any, fused: FusedStep, trial: int, *,
                 train_items: int | None = None):
        super().__init__(adapted, cfg, train_items=train_items)
        self.automatic_optimization = False
        self.fused, self.trial = fused, trial
        self.clip_val = cfg.train.gradient_clip_val
        self._restored_fused_rng: torch.Tensor | None = None

    def on_train_batch_start(self, batch, batch_idx) -> None:
        # the trial's dropout stream lives in the group's state, not in the process RNG
        self._restored_rng = None
        if self._restored_fused_rng is not None:
            self.fused.set_rng(self.trial, self._restored_fused_rng)
            self._restored_fused_rng = None
        self._enter_stage()

    def training_step(self, batch, batch_idx):
        loss = self.fused.step(self.trial, batch)
        if not torch.isfinite(loss):
            raise TrialDiverged(f"fused trial {self.trial}: train loss {float(loss)} at step {self.global_step + 1}; "
                                "the trial stops, the rest of its group goes on")
        self.pending_losses.append(loss)
        self._epoch_losses.append(loss)
        opt = self.optimizers()
        if self.clip_val:
            self.clip_gradients(opt, gradient_clip_val=self.clip_val, gradient_clip_algorithm="norm")
        opt.step()
        opt.zero_grad(set_to_none=True)
        self.lr_schedulers().step()
        return None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the state of a solo run's checkpoint: the torch stream is this trial's dropout stream,
        # so a fused checkpoint resumes solo and a solo one resumes fused
        super().on_save_checkpoint(checkpoint)
        own = self.fused.rng(self.trial)
        if own is not None:
            checkpoint[RNG_KEY]["torch"] = own

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self._restored_fused_rng = (checkpoint.get(RNG_KEY) or {}).get("torch")
