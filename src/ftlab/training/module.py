"""The LightningModule: loss on answer tokens, one AdamW, a step-indexed lr schedule.

The training step never reads a device value on the host: losses stay on the device
(:class:`ftlab.training.device_values.DeviceScalars`) until a callback writes a row, and token counts
are taken from the batch on the host before it moves to the device.

Adapter families plug in through :class:`ftlab.adapters.base.AdaptedModel`: their parameter
groups, an extra loss term, and a hook that runs after every *real* optimiser step (registered
with ``Optimizer.register_step_post_hook``, so a step skipped by AMP's scaler runs no prox).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics.aggregation import MeanMetric

from ftlab.adapters.base import AdaptedModel
from ftlab.data.epochs import train_steps
from ftlab.data.packing import examples_in, has_local_layers, model_inputs
from ftlab.training.device_values import DeviceScalars
from ftlab.training.rng import set_rng_state
from ftlab.training.schedules import lr_at, lr_multiplier, stage_at, stage_table, total_steps
from ftlab.training.state import assemble_state, load_state


def gpu_memory_mb() -> float:
    return torch.cuda.memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0


class FtlabModule(L.LightningModule):
    def __init__(self, adapted: AdaptedModel, cfg: Any, *, lr: float | None = None,
                 schedule: Any = None, max_steps: int | None = None, train_items: int | None = None):
        """``max_steps``: this fit's optimiser steps (a base pre-training's own count); else
        ``train_items`` (train items per epoch) sets them from the run's config
        (``train.max_steps``, or ``train.max_epochs`` x steps per epoch); else ``train.max_steps``.
        A stage schedule's stages set the total in every case. The module is the one place the
        step count of a fit is computed: the recipe builds its Trainer with :attr:`max_steps`."""
        super().__init__()
        self.adapted = adapted
        self.model = adapted.model
        self.cfg = cfg
        self.schedule = schedule if schedule is not None else cfg.schedule
        if max_steps is None:
            max_steps = train_steps(cfg, train_items) if train_items is not None else int(cfg.train.max_steps)
        self.max_steps = total_steps(self.schedule, max_steps)
        self.base_lr = float(lr if lr is not None else self.schedule.lr)
        self.stages = stage_table(self.schedule)
        self._stage_index: int | None = None
        self.val_loss = MeanMetric()
        # Per-micro-batch task losses (device tensors) and real-token counts (host ints) since the
        # last optimiser step, taken by ftlab.callbacks.loss_log.
        self.pending_losses: list[torch.Tensor] = []
        self.pending_tokens = 0
        # examples, real tokens and token slots (rows x width) of every training batch of this fit
        self.examples = 0
        self.real_tokens = 0
        self.token_slots = 0
        self._epoch_losses = DeviceScalars()  # task loss of every micro-batch of this epoch
        self._restored_rng: dict | None = None
        self._attn: tuple[str | None, torch.dtype, bool] | None = None
        # Checkpoints hold the trainable tensors only (ftlab.training.state): the frozen part is
        # rebuilt from its steps, whose keys (the foundation, set by the recipe) the state records.
        self.strict_loading = False
        self.foundation: dict | None = None

    @property
    def epoch_losses(self) -> list[float]:
        """This epoch's micro-batch losses as floats (reads the device: epoch ends and saves only)."""
        return self._epoch_losses.values()

    def lr_at(self, step: int) -> float:
        return lr_at(step, self.schedule, self.max_steps) * self.base_lr / float(self.schedule.lr)

    def current_stage(self):
        return stage_at(self.stages, self.global_step) if self.stages else None

    def _enter_stage(self) -> None:
        stage = self.current_stage()
        if stage is not None and stage.index != self._stage_index:
            self._stage_index = stage.index
            self.adapted.on_stage_start(stage)

    def on_train_batch_start(self, batch, batch_idx) -> None:
        if self._restored_rng is not None:
            # Applied right before the first step after a resume: nothing between the save and
            # this point may draw from the RNGs, so the sequence continues exactly.
            set_rng_state(self._restored_rng)
            self._restored_rng = None
        self._enter_stage()

    def on_train_epoch_start(self) -> None:
        # (Lightning skips this hook for an epoch it resumes mid-way: the restored losses stay)
        self._epoch_losses = DeviceScalars()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        assemble_state(checkpoint, self, self.epoch_losses)  # the checkpoint format's (training.state)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # before Lightning loads the (non-strict) state dict: migrate an older state, refuse what
        # would not restore this run's trainable part
        trainer = self._trainer
        rng, losses = load_state(checkpoint, self, self.foundation,
                                 str(getattr(trainer, "ckpt_path", None) or "checkpoint"))
        self._restored_rng = rng
        # a run resumed mid-epoch continues the epoch's loss average where the checkpoint left it
        self._epoch_losses = DeviceScalars(losses)

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        # still on the host: counting here costs no device sync
        if self.trainer.training:
            mask = batch["attention_mask"]
            real = int(mask.sum())
            self.pending_tokens += real
            self.real_tokens += real
            self.token_slots += mask.numel()
            self.examples += examples_in(batch)
        return batch

    def _attention(self) -> tuple[str | None, torch.dtype, bool]:
        """The model's attention implementation, weight dtype and whether it has windowed layers
        (how a packed batch's mask is built)."""
        if self._attn is None:
            config = getattr(self.model, "config", None)
            self._attn = (getattr(config, "_attn_implementation", None),
                          self.model.get_input_embeddings().weight.dtype,
                          config is not None and has_local_layers(config))
        return self._attn

    def forward(self, batch: dict[str, torch.Tensor]):
        impl, dtype, local = self._attention()
        return self.model(**model_inputs(batch, impl, dtype, local))

    def training_step(self, batch, batch_idx):
        loss = self(batch).loss
        self.pending_losses.append(loss.detach())
        self._epoch_losses.append(loss)
        reg = self.adapted.regularization()
        return loss if reg is None else loss + reg

    def validation_step(self, batch, batch_idx):
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), labels.flatten(), ignore_index=-100, reduction="none")
        valid = labels.flatten() != -100
        self.val_loss.update(nll[valid])
        return None

    def on_validation_epoch_end(self) -> None:
        value = self.val_loss.compute()
        # trackers get val_loss here, at the optimiser step it was measured after: Lightning's own
        # logging of a validation inside an epoch stamps it with the step before (it counts the
        # step only after the validation), so a tracker showed it at N-1 next to eval_log.csv's N
        self.log("val_loss", value, prog_bar=True, sync_dist=False, logger=False)
        if not self.trainer.sanity_checking:
            for tracker in self.trainer.loggers:
                tracker.log_metrics({"val_loss": float(value)}, step=self.trainer.global_step)
        self.val_loss.reset()

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        # Lightning's FSDP precision cannot clip by norm (a rank holds a shard of every gradient):
        # FSDP's own clip_grad_norm_ reduces the norm over the ranks, as Lightning's docs advise.
        if gradient_clip_val and isinstance(self.trainer.strategy, FSDPStrategy) and gradient_clip_algorithm != "value":
            self.trainer.model.clip_grad_norm_(gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self):
        t = self.cfg.train
        groups = self.adapted.param_groups(self.base_lr, t.weight_decay)
        opt = torch.optim.AdamW(groups, lr=self.base_lr, betas=tuple(t.betas), eps=t.eps,
                                weight_decay=t.weight_decay)
        opt.register_step_post_hook(lambda optimizer, args, kwargs: self.adapted.after_optimizer_step(optimizer))
        sched = LambdaLR(opt, lr_multiplier(self.schedule, self.max_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}
