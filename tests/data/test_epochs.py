"""train.max_epochs: exactly one of max_steps/max_epochs; an epoch is one pass over the examples
(packed rows hold each example once), whatever a step holds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import compose, run_tiny
from ftlab.core.errors import FtlabError
from ftlab.data.checks import data_facts
from ftlab.data.epochs import epoch_items, planned_steps, steps_per_epoch, train_steps
from ftlab.data.packing import pack_rows
from ftlab.preflight.launch import preflight

EPOCHS = ("train.max_epochs=2", "train.max_steps=null")


def test_steps_per_epoch_counts_batches_and_accumulation() -> None:
    cfg = compose("task.num_examples=100", *EPOCHS, "train.batch_size=8", "train.accumulate_grad_batches=3")
    assert steps_per_epoch(cfg, 80) == math.ceil((80 // 8) / 3) == 4
    assert train_steps(cfg, 80) == 8
    assert train_steps(compose("train.max_steps=7"), 80) == 7


def test_packed_epoch_is_one_pass_over_the_rows() -> None:
    cfg = compose("task.num_examples=200", *EPOCHS, "train.packing=true", "train.batch_size=2")
    lengths = data_facts(cfg).lengths
    assert len(lengths) == 160
    rows = pack_rows(list(lengths), 4 * int(cfg.task.max_length))
    assert sorted(i for row in rows for i in row) == list(range(160))  # every example once
    assert epoch_items(cfg, lengths) == len(rows) < 160
    assert planned_steps(cfg) == 2 * (len(rows) // 2)


@pytest.mark.parametrize(("overrides", "expect"), [
    (("train.max_epochs=2",), ("train.max_steps=100", "exactly one", "train.max_steps=null")),
    (("train.max_steps=null",), ("train.max_steps=None", "train.max_epochs")),
    (("train.max_epochs=0", "train.max_steps=null"), ("train.max_epochs=0", ">= 1")),
    ((*EPOCHS, "schedule=stages", "schedule.stages=[{iters: 3, lr: 1e-3}]"), ("train.max_epochs=2", "stages")),
    ((*EPOCHS, "hardware.accelerator=cerebras"), ("train.max_epochs=2", "cerebras")),
])
def test_exactly_one_of_max_steps_and_max_epochs(overrides, expect) -> None:
    with pytest.raises(FtlabError) as err:
        preflight(list(overrides), multirun=False)
    assert all(part in str(err.value) for part in expect), str(err.value)


@pytest.mark.slow
def test_a_two_epoch_run_makes_two_passes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_tiny(run_dir, "task.num_examples=50", *EPOCHS, "train.batch_size=8", "eval.enabled=false")
    # 40 train examples, batch 8: 5 steps per epoch, 10 in all; one checkpoint per epoch end
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["checkpoint-epoch0", "checkpoint-epoch1"]
    history = json.loads((run_dir / "training_history.json").read_text())
    assert history["epoch"] == [0, 1] and history["step"][-1] == 10
