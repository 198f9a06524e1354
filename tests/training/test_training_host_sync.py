"""No host read of a training value between log steps.

On a GPU every ``.item()``/``float()``/``.tolist()`` of a device tensor waits for the queued
kernels. CPU tests cannot see a sync, so the loss is marked: a tensor subclass that propagates
through every op made from it (detach, stack, the optimiser's closure...) and records each host
read with the optimiser step it happened at. A run logging every 4 steps must read only at steps
4, 8 and 12, once per row (and the device buffers give the same numbers as per-step reads).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from conftest import run_tiny
from ftlab.training.device_values import DeviceScalars, group_means
from ftlab.training.module import FtlabModule

READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__float__, torch.Tensor.__int__,
         torch.Tensor.__bool__, torch.Tensor.__format__, torch.Tensor.numpy, torch.Tensor.__index__}


class Marked(torch.Tensor):
    reads: list[int] = []
    step = 0

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in READS:
            cls.reads.append(cls.step)
        return super().__torch_function__(func, types, args, kwargs or {})


class StepCounter(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        Marked.step = trainer.global_step + 1  # the optimiser step this batch belongs to


def test_training_reads_losses_only_at_log_steps(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    forward = FtlabModule.forward

    def marked_forward(self, batch):
        out = forward(self, batch)
        out.loss = out.loss.as_subclass(Marked)
        return out

    monkeypatch.setattr(FtlabModule, "forward", marked_forward)
    Marked.reads = []
    run_tiny(run_dir, "train.log_every_n_steps=4", "train.save_epoch_checkpoints=false", "eval.enabled=false",
             "train.save_adapter=false", "train.save_merged_model=false", callbacks=[StepCounter()])
    assert Marked.reads, "the loss was never read: the test marks nothing"
    assert set(Marked.reads) == {4, 8, 12}
    # one transfer per loss_log row; the last step also ends the fit (the epoch's history row)
    assert Marked.reads.count(4) == Marked.reads.count(8) == 1 and Marked.reads.count(12) == 2


def test_device_scalars_match_per_value_reads() -> None:
    values = torch.rand(2500, dtype=torch.float32)
    buf = DeviceScalars([0.5])
    for v in values:
        buf.append(v)
    assert len(buf) == 2501
    assert buf.values() == [0.5] + [v.item() for v in values]
    buf.append(torch.tensor(2.0, dtype=torch.bfloat16))
    assert buf.values()[-1] == 2.0 and len(buf) == 2502
    assert group_means([1.0, 2.0, 3.0, 5.0], [2, 0, 2]) == [1.5, 0.0, 4.0]
