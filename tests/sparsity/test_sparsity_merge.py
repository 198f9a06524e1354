"""What a merge over a sparse base discards, and the run's mask file: ``metrics.json`` reports
the share of the adapter's update that re-masking drops and the val loss before and after it;
``<run>/mask.safetensors`` holds every pruned layer, adapted or not."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from ftlab.evaluation.mask_validation import validate
from ftlab.preflight.compose import compose_run
from ftlab.recipe.run import run
from ftlab.sparsity.io import load_masks
from ftlab.sparsity.pipeline import dropped_update

FAST = ["task.num_examples=120", "train.max_steps=6", "train.batch_size=8", "train.log_every_n_steps=3",
        "train.log_measurements=false", "eval.generate=false", "schedule.lr=1e-2", "train.save_merged_model=true"]


def test_dropped_update_by_hand():
    merged = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        merged.weight.copy_(torch.tensor([[1.0, 3.0], [0.0, 2.0]]))
    base = {"weight": torch.tensor([[1.0, 0.0], [0.0, 1.0]])}
    mask = {"weight": torch.tensor([[True, False], [True, True]])}
    # ΔW = [[0, 3], [0, 1]]: 9 of 10 squared units sit where M = 0
    got = dropped_update(merged, base, mask)
    assert got["merge_dropped_update_fraction"] == pytest.approx(0.9)
    assert got["merge_update_sq_norm"] == pytest.approx(10.0)


@pytest.mark.parametrize(("adapter", "dropped"), [("lora", True), ("masked", False)])
def test_run_reports_merge_discards_and_saves_every_pruned_layer(tmp_path, adapter, dropped):
    cfg = compose_run([*FAST, f"adapter={adapter}", "adapter.target_modules=[q_proj,v_proj]",
                       "sparsity=unstructured", "sparsity.level=0.7", f"paths.cache_dir={tmp_path / 'cache'}"])
    run(cfg, run_dir=tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    frac = metrics["merge_dropped_update_fraction"]
    if dropped:  # LoRA's dense update: about the mask's share of it is dropped
        assert 0.5 < frac < 0.9
        assert metrics["val_loss_merged_unmasked"] != metrics["val_loss_merged_masked"]
    else:  # masked LoRA's update is already ⊙ M: the re-masking drops nothing
        assert frac == 0.0
        assert metrics["val_loss_merged_unmasked"] == pytest.approx(metrics["val_loss_merged_masked"], abs=1e-6)
    assert metrics["val_loss_merged_masked"] == pytest.approx(metrics["val_loss"], abs=1e-6)  # the evaluated model
    masks, meta = load_masks(tmp_path / "mask.safetensors")
    leaves = {n.rsplit(".", 2)[-2] for n in masks}
    assert leaves == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}  # not only q/v
    assert meta["level"] == 0.7 and (tmp_path / "layer_sparsity.csv").is_file()
    report = validate(str(tmp_path / "model"), str(tmp_path / "mask.safetensors"), tmp_path / "report.json")
    assert report["passed"] and set(report["layers"]) == set(masks)
