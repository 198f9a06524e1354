"""``training_history.json`` (TrainingHistory): one row per epoch end whose ``train_loss`` is the mean
of the epoch's losses the module computed and whose ``val_loss`` is the token-weighted answer loss
of the val split (:func:`ftlab.data.inference.loss_on`, computed here independently)."""

from __future__ import annotations

import json

import lightning as L
import pytest

from ftlab.callbacks.history import FIELDS, TrainingHistory, empty_history, fill_final_val_loss
from ftlab.data.inference import loss_on
from tiny_training import tiny_fit, tiny_parts

EPOCH = 8  # batches per epoch of tiny_parts' data


class ValLossProbe(L.Callback):
    """The val split's answer loss at each validation, by ftlab's evaluation code (not the module's)."""

    def __init__(self, dm, cfg):
        self.dm, self.cfg, self.values = dm, cfg, []

    def on_validation_start(self, trainer, pl_module) -> None:
        self.values.append(loss_on(pl_module.model, self.dm.tokenizer, self.dm.splits.val,
                                   self.cfg.task.max_length, self.cfg.train.eval_batch_size))


def test_one_row_per_epoch_with_the_module_losses_and_the_val_loss(tmp_path):
    cfg, dm, module = tiny_parts()
    probe = ValLossProbe(dm, cfg)
    tiny_fit(cfg, dm, module, [probe, TrainingHistory(tmp_path)], max_steps=EPOCH + 3)
    h = json.loads((tmp_path / "training_history.json").read_text())
    assert set(h) == set(FIELDS)  # lora: no sparsity column
    assert h["epoch"] == [0, 1] and h["step"] == [EPOCH, EPOCH + 3]  # the max_steps stop ends epoch 1
    losses = module.seen_losses
    assert h["train_loss"][0] == pytest.approx(sum(losses[:EPOCH]) / EPOCH, abs=1e-6)
    assert h["train_loss"][1] == pytest.approx(sum(losses[EPOCH:]) / 3, abs=1e-6)
    assert len(probe.values) == 1  # validation ran at the one full epoch end
    assert h["val_loss"] == [pytest.approx(probe.values[0], abs=1e-5), None]  # none mid-epoch
    adapted = module.adapted
    assert h["trainable_params"] == [adapted.trainable_params()] * 2
    assert h["effective_params"] == [adapted.effective_params()] * 2
    assert all(t >= 0 for t in h["epoch_time"]) and len(h["gpu_memory_mb"]) == 2


def test_gated_adapter_adds_the_sparsity_column(tmp_path):
    cfg, dm, module = tiny_parts("adapter=sora")
    tiny_fit(cfg, dm, module, [TrainingHistory(tmp_path)], max_steps=EPOCH)
    h = json.loads((tmp_path / "training_history.json").read_text())
    assert h["sparsity"] == [pytest.approx(module.adapted.sparsity())] and h["step"] == [EPOCH]


def test_fill_final_val_loss_fills_only_a_missing_last_value(tmp_path):
    path = tmp_path / "training_history.json"
    fill_final_val_loss(path, 1.0)  # no file: nothing written
    assert not path.exists()
    path.write_text(json.dumps({**empty_history(False), "val_loss": [2.5, None]}))
    fill_final_val_loss(path, 1.25)
    assert json.loads(path.read_text())["val_loss"] == [2.5, 1.25]
    fill_final_val_loss(path, 9.0)  # the last epoch has its own value now: kept
    assert json.loads(path.read_text())["val_loss"] == [2.5, 1.25]
    assert set(empty_history(True)) == set(FIELDS) | {"sparsity"}
