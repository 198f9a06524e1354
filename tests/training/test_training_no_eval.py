"""``eval.enabled=false`` runs no evaluation at all: no epoch-end validation passes either
(issue 11: the end-to-end benchmark's ftlab side validated at every epoch end, its baseline never)."""

from __future__ import annotations

import json

import lightning as L
import pytest

from conftest import run_tiny


class CountValidation(L.Callback):
    def __init__(self) -> None:
        self.batches = 0

    def on_validation_batch_end(self, *args) -> None:
        self.batches += 1


@pytest.mark.parametrize("enabled", [True, False])
def test_epoch_end_validation_follows_eval_enabled(tmp_path, enabled: bool) -> None:
    counter = CountValidation()
    # 240 examples: 192 train / batch 8 = 24 steps per epoch, so 30 steps cross one epoch end
    run_tiny(tmp_path / "run", "train.max_steps=30", f"eval.enabled={str(enabled).lower()}",
             "train.save_epoch_checkpoints=false", callbacks=[counter])
    history = json.loads((tmp_path / "run" / "training_history.json").read_text())
    assert history["step"][0] == 24
    if enabled:
        assert counter.batches > 0 and history["val_loss"][0] is not None
    else:
        assert counter.batches == 0 and history["val_loss"][0] is None
        assert "val_loss" not in json.loads((tmp_path / "run" / "metrics.json").read_text())
