"""A checkpoint due at an evaluation step is written before that evaluation runs: a crash inside
the evaluation (a benchmark's bad row, an OOM in generation) loses no training, and the resumed run
runs the evaluation it missed."""

from __future__ import annotations

import json

import lightning as L
import pytest

from conftest import read_csv, run_tiny

EVERY = ["eval.every_n_steps=2", "train.save_every_n_steps=2", "train.max_steps=6",
         "train.save_epoch_checkpoints=false", "adapter.r=2"]


class CrashInEval(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and trainer.global_step == self.step:
            raise RuntimeError("crash in eval")


@pytest.mark.slow
def test_checkpoint_before_the_eval_and_the_resumed_run_evaluates_it(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="crash in eval"):
        run_tiny(run_dir, *EVERY, callbacks=[CrashInEval(4)])
    meta = json.loads((run_dir / "checkpoints" / "checkpoint-epoch0-step4" / "meta.json").read_text())
    assert meta["global_step"] == 4  # the 4 steps trained before the crash are kept
    _, rows = read_csv(run_dir / "eval_log.csv")
    assert [int(r["step"]) for r in rows] == [2]
    run_tiny(run_dir, *EVERY, "resume=auto")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == 4 and metrics["train_steps"] == 6
    _, rows = read_csv(run_dir / "eval_log.csv")
    assert [int(r["step"]) for r in rows] == [2, 4, 6]
    # the missed evaluation measured the state an uninterrupted run evaluates at step 4
    run_tiny(tmp_path / "whole", *EVERY)
    assert (run_dir / "eval_log.csv").read_text() == (tmp_path / "whole" / "eval_log.csv").read_text()
