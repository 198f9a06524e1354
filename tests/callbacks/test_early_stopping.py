"""train.early_stopping stops at the step computed by hand from a scripted metric sequence; a
resumed run stops at the same step; export.checkpoint=best exports the best evaluated step."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

from conftest import read_csv, run_tiny

#: val_loss at each evaluation (every 2 steps: 2, 4, 6, ...), replacing the measured one
SCRIPT = [1.0, 0.8, 0.85, 0.81, 0.9, 0.95, 0.99, 0.3]
# by hand (mode=min, min_delta=0.02, patience=3): best 1.0 @2; 0.8 < 1.0-0.02 @4 -> best, wait 0;
# 0.85 @6 wait 1; 0.81 (not < 0.78) @8 wait 2; 0.9 @10 wait 3 = patience -> stop at step 10.
STOP_STEP, BEST_STEP = 10, 4
STOPPING = ["eval.every_n_steps=2", "train.early_stopping.metric=val_loss", "train.early_stopping.patience=3",
            "train.early_stopping.min_delta=0.02", "train.max_steps=40", "export.checkpoint=best",
            "train.save_epoch_checkpoints=false", "adapter.r=2"]


class Scripted(L.Callback):
    """The module logs the script's value as the evaluation's val_loss (callbacks' epoch-end hooks run
    before the module's, which computes and logs its val_loss metric)."""

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        pl_module.val_loss.reset()
        pl_module.val_loss.update(torch.tensor(SCRIPT[trainer.global_step // 2 - 1]))


class Crash(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("crash")  # Lightning tears down and re-raises


def _metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_stops_at_the_hand_computed_step_and_resumes_to_it(tmp_path):
    run_tiny(tmp_path / "whole", *STOPPING, callbacks=[Scripted()])
    whole = _metrics(tmp_path / "whole")
    assert whole["train_steps"] == STOP_STEP and whole["exported_step"] == BEST_STEP
    _, rows = read_csv(tmp_path / "whole" / "eval_log.csv")
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8, 10]
    assert [float(r["val_loss"]) for r in rows] == pytest.approx(SCRIPT[:5])

    # interrupted after step 7 (checkpoint at step 5), resumed: the patience counters continue
    with pytest.raises(RuntimeError, match="crash"):
        run_tiny(tmp_path / "cut", *STOPPING, "train.save_every_n_steps=5", callbacks=[Scripted(), Crash(7)])
    run_tiny(tmp_path / "cut", *STOPPING, "train.save_every_n_steps=5", "resume=auto", callbacks=[Scripted()])
    resumed = _metrics(tmp_path / "cut")
    assert resumed["train_steps"] == STOP_STEP and resumed["exported_step"] == BEST_STEP
    _, rows = read_csv(tmp_path / "cut" / "eval_log.csv")
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8, 10]

    # the exported adapter is the one of step 4: a plain 4-step run trains the same tensors
    run_tiny(tmp_path / "four", "train.max_steps=4", "train.save_epoch_checkpoints=false", "adapter.r=2")
    best = load_file(str(tmp_path / "whole" / "adapter" / "adapter_model.safetensors"))
    four = load_file(str(tmp_path / "four" / "adapter" / "adapter_model.safetensors"))
    last = load_file(str(tmp_path / "cut" / "adapter" / "adapter_model.safetensors"))
    assert best.keys() == four.keys() and all(torch.allclose(best[k], four[k], atol=1e-6) for k in best)
    assert all(torch.equal(best[k], last[k]) for k in best)  # the resumed run exports the same tensors


@pytest.mark.slow
def test_resumed_from_a_checkpoint_at_an_evaluation_step(tmp_path):
    """Checkpoint at step 4 (an evaluation step, written before its evaluation): the resumed run
    runs that evaluation first, so patience and the best step are the uninterrupted run's."""
    with pytest.raises(RuntimeError, match="crash"):
        run_tiny(tmp_path / "cut", *STOPPING, "train.save_every_n_steps=4", callbacks=[Scripted(), Crash(7)])
    run_tiny(tmp_path / "cut", *STOPPING, "train.save_every_n_steps=4", "resume=auto", callbacks=[Scripted()])
    resumed = _metrics(tmp_path / "cut")
    assert resumed["resumed_from_step"] == 4
    assert resumed["train_steps"] == STOP_STEP and resumed["exported_step"] == BEST_STEP
    _, rows = read_csv(tmp_path / "cut" / "eval_log.csv")
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8, 10]
    assert [float(r["val_loss"]) for r in rows] == pytest.approx(SCRIPT[:5])
