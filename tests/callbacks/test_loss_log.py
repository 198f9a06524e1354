"""``loss_log.csv`` (LossLog): one row every ``log_every_n_steps`` optimiser steps whose
``train_loss`` is the mean of the losses the module computed in that window (micro-batches
averaged per optimiser step first) and whose ``learning_rate`` is the lr that step ran at."""

from __future__ import annotations

import pytest

from conftest import read_csv
from ftlab.callbacks.loss_log import COLUMNS, MEASUREMENT_COLUMNS, LossLog
from tiny_training import tiny_fit, tiny_parts

WARMUP = ["schedule=cosine", "schedule.warmup_steps=3"]  # the lr differs from step to step


def test_rows_hold_the_window_mean_of_the_module_losses_and_the_step_lr(tmp_path):
    cfg, dm, module = tiny_parts(*WARMUP)
    (tmp_path / "loss_log.csv").write_text("old,header\n1,2\n")  # a fresh run (step 0) starts the file over
    tiny_fit(cfg, dm, module, [LossLog(tmp_path, every_n_steps=2, measurements=False)], max_steps=6)
    header, got = read_csv(tmp_path / "loss_log.csv")
    assert header == COLUMNS  # no measurement columns when they are off
    assert [int(r["step"]) for r in got] == [2, 4, 6]
    losses, lrs = module.seen_losses, module.seen_lrs
    assert len(losses) == 6 and len(set(lrs)) > 1
    for r in got:
        s = int(r["step"])
        assert float(r["train_loss"]) == pytest.approx((losses[s - 2] + losses[s - 1]) / 2, abs=1e-6)
        assert float(r["learning_rate"]) == pytest.approx(lrs[s - 1], rel=1e-6)  # the lr of step s
        assert r["epoch"] == "0" and r["sparsity"] == ""  # lora has no gates


def test_accumulation_averages_micro_batches_per_optimiser_step(tmp_path):
    cfg, dm, module = tiny_parts("train.accumulate_grad_batches=2")
    tiny_fit(cfg, dm, module, [LossLog(tmp_path, every_n_steps=2, measurements=True)], max_steps=3)
    header, got = read_csv(tmp_path / "loss_log.csv")
    assert header == COLUMNS + MEASUREMENT_COLUMNS
    assert [int(r["step"]) for r in got] == [2]  # step 3 is not a multiple of 2
    m = module.seen_losses  # 2 micro-batches per step
    step_means = [(m[0] + m[1]) / 2, (m[2] + m[3]) / 2]
    assert float(got[0]["train_loss"]) == pytest.approx(sum(step_means) / 2, abs=1e-6)
    assert float(got[0]["tokens_per_sec"]) > 0 and float(got[0]["cpu_rss_mb"]) > 0
