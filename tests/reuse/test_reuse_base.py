"""The base model and the pruning mask as cached steps: built once for every fine-tuning run that
shares them, and a run's result is the same on a build, on a hit and with reuse disabled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ftlab.artifacts.store import ArtifactStore
from ftlab.preflight.compose import compose_run
from ftlab.recipe.run import run

pytestmark = pytest.mark.slow

TINY = ["task.num_examples=120", "train.max_steps=6", "train.batch_size=8", "train.eval_batch_size=32",
        "train.log_every_n_steps=2", "train.log_measurements=false", "eval.generate=false",
        "train.save_merged_model=false", "adapter.dropout=0.1"]
BASE = ["base.enabled=true", "base.seed=7", "base.steps=8", "base.batch_size=8", "base.num_examples=64", "base.warmup_steps=2"]


def go(path: Path, cache: Path, *overrides: str) -> dict:
    run(compose_run([*TINY, f"paths.cache_dir={cache}", *overrides]), run_dir=path)
    return {"adapter": load_file(str(path / "adapter" / "adapter_model.safetensors")),
            "metrics": json.loads((path / "metrics.json").read_text()),
            "record": json.loads((path / "reuse_record.json").read_text())}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def kinds(cache: Path) -> list[str]:
    return sorted(e.info()["kind"] for e in ArtifactStore(cache).entries())


def test_base_model_is_trained_once_and_hit_build_and_no_reuse_agree(tmp_path):
    cache = tmp_path / "cache"
    built = go(tmp_path / "built", cache, *BASE)
    hit = go(tmp_path / "hit", cache, *BASE)
    other_ft = go(tmp_path / "other", cache, *BASE, "schedule.lr=3e-3", "adapter.r=4")
    naive = go(tmp_path / "naive", tmp_path / "unused", *BASE, "reuse.enabled=false")

    assert (built["record"]["base"]["cache_hit"], hit["record"]["base"]["cache_hit"]) == (False, True)
    assert other_ft["record"]["base"]["cache_hit"] is True  # fine-tuning keys are not in the base key
    assert len({r["record"]["base"]["key"] for r in (built, hit, other_ft)}) == 1
    assert kinds(cache) == ["base"]
    assert same(built["adapter"], hit["adapter"]) and same(built["adapter"], naive["adapter"])
    assert built["metrics"]["val_loss"] == hit["metrics"]["val_loss"] == naive["metrics"]["val_loss"]
    assert naive["record"]["base"]["cached"] is False and not (tmp_path / "unused").exists()
    # a base hyperparameter is part of the key: a new base is trained
    assert go(tmp_path / "b2", cache, *BASE, "base.lr=1e-3")["record"]["base"]["cache_hit"] is False
    assert kinds(cache) == ["base", "base"]


def test_mask_is_computed_once_per_base_and_shared_across_adapters(tmp_path):
    cache = tmp_path / "cache"
    mask = ["sparsity=unstructured", "sparsity.level=0.5", "sparsity.importance=wanda",
            "sparsity.calibration.batches=2", "sparsity.calibration.batch_size=4"]
    built = go(tmp_path / "built", cache, *BASE, *mask)
    hit = go(tmp_path / "hit", cache, *BASE, *mask)
    other = go(tmp_path / "other", cache, *BASE, *mask, "adapter.r=4", "sparsity.mode=sparse_to_sparse")
    naive = go(tmp_path / "naive", tmp_path / "unused", *BASE, *mask, "reuse.enabled=false")

    assert [r["record"]["mask"]["cache_hit"] for r in (built, hit, other)] == [False, True, True]
    assert built["record"]["mask"]["parent"] == built["record"]["base"]["key"]  # mask of the trained base
    assert kinds(cache) == ["base", "mask"]
    assert same(built["adapter"], hit["adapter"]) and same(built["adapter"], naive["adapter"])
    for r in (built, hit, other, naive):
        assert r["metrics"]["validation_passed"] is True
        assert r["metrics"]["mask_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert go(tmp_path / "l6", cache, *BASE, *mask, "sparsity.level=0.6")["record"]["mask"]["cache_hit"] is False


def test_node_local_copy_of_a_shared_base(tmp_path):
    shared, node = tmp_path / "shared", tmp_path / "node-local"
    first = go(tmp_path / "first", shared, *BASE, f"paths.local_cache_dir={node}")
    second = go(tmp_path / "second", shared, *BASE, f"paths.local_cache_dir={node}", "schedule.lr=2e-3")
    plain = go(tmp_path / "plain", tmp_path / "other", *BASE)
    assert (first["record"]["base"]["cache_hit"], second["record"]["base"]["cache_hit"]) == (False, True)
    local = list(ArtifactStore(node).entries())
    assert [e.key for e in local] == [first["record"]["base"]["key"]]
    assert local[0].info()["meta"]["copied_from"].startswith(str(shared))
    assert same(first["adapter"], plain["adapter"])
