"""Training stages from the cache: a trial resumed from a cached prefix equals the same trial
trained from scratch, bit for bit on CPU; a finished trial re-runs without a training step; a
crashed trial keeps its finished stages and leaves no lock behind; bad input stops up front."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

from ftlab.artifacts.store import ArtifactStore
from ftlab.core.errors import ConfigError
from ftlab.preflight.compose import compose_run
from ftlab.recipe.run import run

TINY = ["schedule=stages", "task.num_examples=120", "train.batch_size=8", "train.eval_batch_size=32",
        "train.log_every_n_steps=2", "train.log_measurements=false", "eval.generate=false",
        "train.save_merged_model=false", "adapter.dropout=0.1"]  # 96 train examples = 12 batches per epoch


def stages(first: int, second: int, lr2: float) -> str:
    return f"schedule.stages=[{{iters:{first},lr:2e-3}},{{iters:{second},lr:{lr2}}}]"


def trial(path: Path, cache: Path, *overrides: str) -> dict:
    cfg = compose_run([*TINY, f"paths.cache_dir={cache}", *overrides])
    run(cfg, run_dir=path)
    return {"adapter": load_file(str(path / "adapter" / "adapter_model.safetensors")),
            "metrics": json.loads((path / "metrics.json").read_text()),
            "record": json.loads((path / "reuse_record.json").read_text()),
            "loss_log": (path / "loss_log.csv").read_text(),
            "history": {k: v for k, v in json.loads((path / "training_history.json").read_text()).items()
                        if k != "epoch_time"}}


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("first", [6, 12], ids=["mid-epoch", "epoch-end"])
def test_cached_prefix_trial_equals_uncached_trial_bitwise(tmp_path, first):
    cache = tmp_path / "cache"
    a = trial(tmp_path / "A", cache, stages(first, 4, 5e-4))
    b = trial(tmp_path / "B", cache, stages(first, 4, 3e-4))
    b_naive = trial(tmp_path / "B_naive", tmp_path / "unused", stages(first, 4, 3e-4), "reuse.enabled=false")

    assert [s["cache_hit"] for s in a["record"]["stages"]] == [False, False]
    assert [s["cache_hit"] for s in b["record"]["stages"]] == [True, False]
    assert b["record"]["stages"][0]["key"] == a["record"]["stages"][0]["key"]
    assert b["metrics"]["resumed_from_step"] == first  # only stage 2 was trained
    assert same_weights(b["adapter"], b_naive["adapter"])
    assert b["metrics"]["val_loss"] == b_naive["metrics"]["val_loss"]
    assert b["loss_log"] == b_naive["loss_log"]  # the prefix's rows come with the cached state
    assert b["history"] == b_naive["history"] and len(b["history"]["epoch"]) == (2 if first == 12 else 1)
    assert not same_weights(a["adapter"], b["adapter"])  # the branches did differ
    assert not (tmp_path / "unused").exists()  # reuse disabled: the cache is not touched


@pytest.mark.slow
def test_rerun_of_a_finished_trial_executes_no_training_step(tmp_path):
    cache = tmp_path / "cache"
    first = trial(tmp_path / "first", cache, stages(4, 4, 5e-4))
    again = trial(tmp_path / "again", cache, stages(4, 4, 5e-4))
    assert [s["cache_hit"] for s in again["record"]["stages"]] == [True, True]
    assert again["metrics"]["resumed_from_step"] == again["metrics"]["train_steps"] == 8
    assert same_weights(first["adapter"], again["adapter"])
    assert again["metrics"]["val_loss"] == first["metrics"]["val_loss"]
    assert again["loss_log"] == first["loss_log"]
    assert again["history"] == first["history"] and len(again["history"]["epoch"]) == 1


class Crash(L.Callback):
    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at_step:
            raise RuntimeError("node lost")


@pytest.mark.slow
def test_crashed_trial_keeps_finished_stages_and_releases_its_locks(tmp_path):
    cache = tmp_path / "cache"
    cfg = compose_run([*TINY, f"paths.cache_dir={cache}", stages(4, 4, 5e-4)])
    with pytest.raises(RuntimeError, match="node lost"):
        run(cfg, run_dir=tmp_path / "crashed", extra_callbacks=[Crash(6)])
    store = ArtifactStore(cache)
    entries = list(store.entries())
    assert len(entries) == 1 and entries[0].info()["meta"]["runtime_s"] > 0  # stage 1 only
    assert not list((cache / "locks").glob("*.lock"))
    assert not list((cache / "tmp").iterdir())
    retry = trial(tmp_path / "retry", cache, stages(4, 4, 5e-4))
    assert [s["cache_hit"] for s in retry["record"]["stages"]] == [True, False]
    naive = trial(tmp_path / "naive", tmp_path / "unused", stages(4, 4, 5e-4), "reuse.enabled=false")
    assert same_weights(retry["adapter"], naive["adapter"])


def test_bad_stage_lists_and_unwritable_cache_dir_fail_at_composition(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    cases = {
        "schedule.stages=[]": "schedule.stages",
        "schedule.stages=[{iters:0,lr:1e-3}]": "schedule.stages[0].iters",
        "schedule.stages=[{iters:5,lr:1e-3},{iters:5,lr:0.0}]": "schedule.stages[1].lr",
        "schedule.stages=[{iters:5,lr:-1e-3}]": "schedule.stages[0].lr",
        f"paths.cache_dir={blocker}/cache": "paths.cache_dir",
    }
    for override, key in cases.items():
        with pytest.raises(ConfigError) as err:
            compose_run(["schedule=stages", override])
        assert err.value.key == key, override
    # the cache dir only matters when something is cached
    compose_run([f"paths.cache_dir={blocker}/cache"])
    compose_run(["schedule=stages", f"paths.cache_dir={blocker}/cache", "reuse.enabled=false"])


@pytest.mark.slow
def test_unwritable_cache_dir_stops_a_sweep_before_any_job(tmp_path, refused_in_process):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    sweep = tmp_path / "sweep"
    code, _, stderr = refused_in_process("--multirun", "+experiment=stage_reuse_demo", f"paths.cache_dir={blocker}/cache",
                                         f"hydra.sweep.dir={sweep}")
    assert code == 2
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith("ftlab: error: paths.cache_dir=") and "not a directory" in lines[-1]
    assert not sweep.exists()
