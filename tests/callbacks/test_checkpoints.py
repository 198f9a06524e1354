"""PeriodicCheckpoint: dirs at the right steps and epoch ends, trainable-only content equal to the
module's tensors, ``meta.json`` describing the state, pruning, and the newest-first lookup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ftlab.callbacks.checkpoints import PeriodicCheckpoint
from ftlab.callbacks.loss_log import LossLog
from ftlab.training.state import (
    META_FILE,
    STATE_FILE,
    STATE_FORMAT,
    STATE_KEY,
    checkpoint_step,
    checkpoints_newest_first,
    find_latest_checkpoint,
    safe_load,
    trainable_shapes,
)
from tiny_training import tiny_fit, tiny_parts

# 80 examples -> 64 train -> 8 batches of 8 per epoch
EPOCH = 8


def names(run_dir: Path) -> list[str]:
    return sorted(d.name for d in (run_dir / "checkpoints").iterdir())


def test_saved_every_n_steps_at_epoch_end_and_at_a_mid_epoch_stop(tmp_path):
    cfg, dm, module = tiny_parts()
    tiny_fit(cfg, dm, module, [PeriodicCheckpoint(tmp_path, every_n_steps=3)], max_steps=EPOCH + 2)
    assert names(tmp_path) == sorted(["checkpoint-epoch0", "checkpoint-epoch0-step3", "checkpoint-epoch0-step6",
                                      "checkpoint-epoch1-step9", "checkpoint-epoch1-step10"])  # 10: the final state
    metas = {d: json.loads((tmp_path / "checkpoints" / d / META_FILE).read_text()) for d in names(tmp_path)}
    assert {d: (m["global_step"], m["epoch"], m["epoch_end"]) for d, m in metas.items()} == {
        "checkpoint-epoch0": (EPOCH, 0, True), "checkpoint-epoch0-step3": (3, 0, False),
        "checkpoint-epoch0-step6": (6, 0, False), "checkpoint-epoch1-step9": (9, 1, False),
        "checkpoint-epoch1-step10": (10, 1, False)}
    for d, m in metas.items():
        state = tmp_path / "checkpoints" / d / STATE_FILE
        assert m["state_bytes"] == state.stat().st_size
        assert checkpoint_step(state) == m["global_step"]
    assert find_latest_checkpoint(tmp_path).name == "checkpoint-epoch1-step10"
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))  # every dir was renamed into place


def test_no_epoch_checkpoints_when_disabled_and_no_step_checkpoints_without_every(tmp_path):
    cfg, dm, module = tiny_parts()
    tiny_fit(cfg, dm, module, [PeriodicCheckpoint(tmp_path / "a", every_n_steps=4, at_epoch_end=False)],
             max_steps=EPOCH)
    assert names(tmp_path / "a") == ["checkpoint-epoch0-step4", "checkpoint-epoch0-step8"]
    cfg, dm, module = tiny_parts()
    tiny_fit(cfg, dm, module, [PeriodicCheckpoint(tmp_path / "b", every_n_steps=None)], max_steps=EPOCH + 3)
    assert names(tmp_path / "b") == ["checkpoint-epoch0"]  # a mid-epoch stop without every_n_steps: none


@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_state_holds_exactly_the_trainable_tensors_with_their_values(tmp_path, adapter):
    cfg, dm, module = tiny_parts(f"adapter={adapter}")
    tiny_fit(cfg, dm, module, [PeriodicCheckpoint(tmp_path, every_n_steps=2, at_epoch_end=False)], max_steps=2)
    ckpt = tmp_path / "checkpoints" / "checkpoint-epoch0-step2"
    state = safe_load(ckpt / STATE_FILE)
    trainable = {k: p for k, p in module.named_parameters() if p.requires_grad}
    assert set(state["state_dict"]) == set(trainable)
    frozen = [k for k, p in module.named_parameters() if not p.requires_grad]
    assert bool(frozen) == (adapter == "lora")  # lora leaves the base out, full holds every weight
    for k, p in trainable.items():  # the checkpoint is the last step: values equal the module's
        assert torch.equal(state["state_dict"][k], p.detach())
    assert state["global_step"] == 2 and state["optimizer_states"] and state["lr_schedulers"]
    assert "ftlab_rng" in state and len(state["ftlab_epoch_losses"]) == 2
    assert state[STATE_KEY]["format"] == STATE_FORMAT
    meta = json.loads((ckpt / META_FILE).read_text())
    assert meta[STATE_KEY]["trainable"] == trainable_shapes(module)
    assert meta[STATE_KEY]["frozen_params"] == sum(p.numel() for p in module.parameters() if not p.requires_grad)


def test_keep_prunes_all_but_the_newest(tmp_path):
    cfg, dm, module = tiny_parts()
    tiny_fit(cfg, dm, module, [PeriodicCheckpoint(tmp_path, every_n_steps=1, at_epoch_end=False, keep=2)],
             max_steps=5)
    assert names(tmp_path) == ["checkpoint-epoch0-step4", "checkpoint-epoch0-step5"]


def test_resume_continues_the_logs_and_checkpoints_exactly(tmp_path):
    """Resume from the step-4 checkpoint: the loss rows after it are rewritten with the values of
    the uninterrupted run (rows up to the checkpoint kept, none duplicated)."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    straight.mkdir(), resumed.mkdir()  # the recipe creates the run dir before the fit
    cfg, dm, module = tiny_parts()
    tiny_fit(cfg, dm, module, [LossLog(straight, 2, measurements=False),
                               PeriodicCheckpoint(straight, every_n_steps=4, at_epoch_end=False)], max_steps=6)
    cfg, dm, module = tiny_parts()
    tiny_fit(cfg, dm, module, [LossLog(resumed, 2, measurements=False),
                               PeriodicCheckpoint(resumed, every_n_steps=4, at_epoch_end=False)], max_steps=4)
    ckpt = resumed / "checkpoints" / "checkpoint-epoch0-step4" / STATE_FILE
    (resumed / "loss_log.csv").open("a").write("0,99,1.0,1e-3,0.0,\n")  # a row written after the checkpoint
    cfg, dm, module = tiny_parts()
    tiny_fit(cfg, dm, module, [LossLog(resumed, 2, measurements=False),
                               PeriodicCheckpoint(resumed, every_n_steps=4, at_epoch_end=False)], max_steps=6,
             ckpt=ckpt)
    assert module.seen_losses and len(module.seen_losses) == 2  # steps 5 and 6 only
    assert (resumed / "loss_log.csv").read_text() == (straight / "loss_log.csv").read_text()
    assert names(resumed) == names(straight) == ["checkpoint-epoch0-step4", "checkpoint-epoch0-step6"]
    a = safe_load(straight / "checkpoints" / "checkpoint-epoch0-step6" / STATE_FILE)["state_dict"]
    b = safe_load(resumed / "checkpoints" / "checkpoint-epoch0-step6" / STATE_FILE)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bitwise on CPU


def _fake(root: Path, name: str, step: int | None, epoch_end: bool = False, state: bool = True) -> Path:
    d = root / "checkpoints" / name
    d.mkdir(parents=True)
    if state:
        (d / STATE_FILE).write_bytes(b"x")
    if step is not None:
        (d / META_FILE).write_text(json.dumps({"global_step": step, "epoch_end": epoch_end}))
    return d


def test_newest_first_orders_by_step_epoch_end_wins_a_tie_and_skips_incomplete_dirs(tmp_path):
    _fake(tmp_path, "checkpoint-epoch0-step8", 8)
    _fake(tmp_path, "checkpoint-epoch0", 8, epoch_end=True)
    _fake(tmp_path, "checkpoint-epoch0-step4", 4)
    _fake(tmp_path, "checkpoint-epoch1-step12", None)  # no meta.json (crashed before writing it)
    _fake(tmp_path, "checkpoint-epoch1-step16", 16, state=False)  # no state file
    _fake(tmp_path, "not-a-checkpoint", 99)
    found = [d.name for d in checkpoints_newest_first(tmp_path)]
    assert found == ["checkpoint-epoch0", "checkpoint-epoch0-step8", "checkpoint-epoch0-step4"]
    assert find_latest_checkpoint(tmp_path).name == "checkpoint-epoch0"
    assert find_latest_checkpoint(tmp_path / "elsewhere") is None
