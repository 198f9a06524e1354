"""A fused group against solo runs of the same configs, end to end (``ftlab.recipe.run.run``): loss
curves, trained adapters, metrics; a diverging trial stops alone; trials with fewer steps leave
early; a killed group resumed with ``resume=auto`` ends as an uninterrupted one.

Tolerance: float32 on CPU, rtol 1e-4 / atol 1e-5 on losses and adapter tensors after up to 6 AdamW steps
(one step agrees to 1e-5: tests/fused/test_fused_step.py; the frozen product over the
concatenated rows may block its matmul differently than over one trial's rows)."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import compose
from ftlab.fused.module import TrialDiverged
from ftlab.fused.recipe import prepare_trial, run_group
from ftlab.recipe.run import prepare_model, run

SMALL = ["task.num_examples=80", "task.max_length=32", "train.batch_size=8", "train.eval_batch_size=16",
         "task.eval_examples=4", "task.max_new_tokens=4", "train.log_every_n_steps=1", "model.init_seed=0",
         "train.log_measurements=false", "train.save_merged_model=false"]
#: 2 lrs x 2 ranks, different seeds, one with dropout, one shorter; then one that diverges
GRID = [["adapter=lora", "adapter.r=4", "schedule.lr=1e-3", "seed=1", "train.max_steps=6"],
        ["adapter=lora", "adapter.r=8", "schedule.lr=1e-3", "seed=2", "train.max_steps=6", "adapter.dropout=0.1"],
        ["adapter=sora", "adapter.r=4", "schedule.lr=3e-3", "seed=3", "train.max_steps=4"],
        ["adapter=lora", "adapter.r=8", "schedule.lr=3e-3", "seed=4", "train.max_steps=6"]]
DIVERGES = ["adapter=lora", "adapter.r=4", "schedule.lr=1e30", "train.gradient_clip_val=null", "seed=5",
            "train.max_steps=6"]
TOL = {"rtol": 1e-4, "atol": 1e-5}


def losses(run_dir):
    with open(run_dir / "loss_log.csv") as fh:
        return [(int(r["step"]), float(r["train_loss"])) for r in csv.DictReader(fh)]


def same_run(fused_dir, solo_dir):
    a, b = losses(fused_dir), losses(solo_dir)
    assert [s for s, _ in a] == [s for s, _ in b] and a
    torch.testing.assert_close(torch.tensor([v for _, v in a]), torch.tensor([v for _, v in b]), **TOL)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (fused_dir, solo_dir))
    for key in ("val_loss", "eval_exact_match", "train_steps", "trainable_params", "effective_params"):
        assert ma[key] == pytest.approx(mb[key], rel=1e-4), key
    ta, tb = (load_file(str(d / "adapter" / "adapter_model.safetensors")) for d in (fused_dir, solo_dir))
    assert ta.keys() == tb.keys() and ta
    for key in ta:
        torch.testing.assert_close(ta[key], tb[key], **TOL)


@pytest.mark.slow
def test_fused_group_equals_solo_runs_and_a_diverging_trial_stops_alone(tmp_path):
    cfgs = [compose(*SMALL, *o) for o in [*GRID, DIVERGES]]
    results = run_group(cfgs, [tmp_path / f"fused{k}" for k in range(len(cfgs))])
    assert isinstance(results[-1], TrialDiverged)
    assert not (tmp_path / f"fused{len(GRID)}" / "metrics.json").exists()
    for k, cfg in enumerate(cfgs[:len(GRID)]):
        assert not isinstance(results[k], BaseException), results[k]
        run(cfg, tmp_path / f"solo{k}")
        same_run(tmp_path / f"fused{k}", tmp_path / f"solo{k}")
    assert losses(tmp_path / "fused2")[-1][0] == 4  # the shorter trial left at its own last step


@pytest.mark.slow
def test_killed_fused_group_resumes_to_the_uninterrupted_result(tmp_path):
    cfgs = [compose(*SMALL, *o, "train.save_every_n_steps=3", "train.keep_checkpoints=null")
            for o in (GRID[1], GRID[2])]
    whole = [tmp_path / f"whole{k}" for k in range(2)]
    run_group(cfgs, whole)
    killed = [tmp_path / f"killed{k}" for k in range(2)]
    for src, dst in zip(whole, killed):  # as killed after step 3: its files up to there
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("adapter", "model", "metrics.json"))
        for ckpt in (dst / "checkpoints").iterdir():
            if ckpt.name != "checkpoint-epoch0-step3":
                shutil.rmtree(ckpt)
    resumed = [compose(*SMALL, *o, "train.save_every_n_steps=3", "train.keep_checkpoints=null", "resume=auto")
               for o in (GRID[1], GRID[2])]
    results = run_group(resumed, killed)
    assert not any(isinstance(r, BaseException) for r in results), results
    for k in range(2):
        assert json.loads((killed[k] / "metrics.json").read_text())["resumed_from_step"] == 3
        same_run(killed[k], whole[k])


def test_trials_of_one_seed_read_the_cached_tokenized_data_once(tmp_path):
    """task=instruct: the group's trials take their data from their runners as solo runs do; the
    first builds the tokenized-data step, the next of the same seed reads it (memory-mapped)."""
    rows = [{"instruction": f"Upper-case w{i}", "input": "", "output": f"W{i}"} for i in range(40)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfgs = [compose("task=instruct", f"task.path={tmp_path / 'a.jsonl'}", "train.batch_size=4", "model.init_seed=0",
                    f"paths.cache_dir={tmp_path / 'cache'}", f"adapter.r={r}") for r in (4, 8)]
    tokenizer, shared = prepare_model(cfgs[0])
    trials = [prepare_trial(cfg, tmp_path / str(k), shared, tokenizer) for k, cfg in enumerate(cfgs)]
    assert [t.runner.records["data"]["cache_hit"] for t in trials] == [False, True]
    assert isinstance(trials[1].dm.train_data.ids, np.memmap)
