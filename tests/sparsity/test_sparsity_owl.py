"""OWL: per-layer levels from outlier ratios keep the global level exactly, for magnitude, Wanda
and SparseGPT, and the masks CLI's layer table shows the allocated levels."""

from __future__ import annotations

import csv

import pytest
import torch

from ftlab.core.errors import ConfigError, FtlabError
from ftlab.masks import main
from ftlab.models import build_model, build_tokenizer
from ftlab.preflight.compose import compose_run
from ftlab.sparsity.compute import compute_pruned, decoder_layers
from ftlab.sparsity.io import load_masks
from ftlab.sparsity.owl import outlier_ratio, owl_levels

CAL = ["sparsity.calibration.batches=2", "sparsity.calibration.batch_size=4", "task.num_examples=60"]
OWL = ["sparsity=unstructured", "sparsity.allocation=owl", "model.config.num_hidden_layers=4",
       "sparsity.owl.threshold_m=3", *CAL]


def test_levels_keep_the_mean_and_follow_outliers():
    ratios = [0.02, 0.10, 0.05, 0.01]
    levels = owl_levels(ratios, 0.6, 0.08)
    assert sum(levels) / len(levels) == pytest.approx(0.6, abs=1e-12)
    assert max(levels) - min(levels) == pytest.approx(0.16)
    assert levels.index(min(levels)) == 1 and levels.index(max(levels)) == 3  # more outliers, pruned less
    assert owl_levels([0.3, 0.3], 0.5, 0.08) == [0.5, 0.5]
    with pytest.raises(ConfigError, match="sparsity.owl.lambda"):
        owl_levels(ratios, 0.95, 0.08)


def test_outlier_ratio_by_hand():
    s = [torch.tensor([1.0, 1.0, 1.0, 9.0]), torch.tensor([[1.0, 7.0]])]  # mean 20/6; 3x mean = 10
    assert outlier_ratio(s, 3.0) == 0.0
    assert outlier_ratio(s, 2.0) == pytest.approx(2 / 6)  # 9 and 7 above 6.67


@pytest.mark.parametrize("importance", ["magnitude", "wanda", "sparsegpt"])
def test_global_level_within_one_weight_per_layer(importance):
    cfg = compose_run([*OWL, f"sparsity.importance={importance}", "sparsity.group=layer",
                       "sparsity.sparsegpt.blocksize=32"])
    tok = build_tokenizer(cfg.model)
    model = build_model(cfg.model, tok, seed=0)
    pruned = compute_pruned(cfg, model, tok)
    prefix, layers = decoder_layers(model)
    per_layer = {}
    for name, keep in pruned.masks.items():
        want = pruned.levels[name]
        assert abs(int((~keep).sum()) - want * keep.numel()) <= 0.5, name  # within one weight
        i = int(name[len(prefix) + 1:].split(".")[0])
        per_layer.setdefault(i, set()).add(round(want, 12))
    assert all(len(v) == 1 for v in per_layer.values())  # one level per decoder layer
    levels = [v.pop() for _, v in sorted(per_layer.items())]
    assert len(set(levels)) == len(layers)  # really allocated, not uniform
    assert sum(levels) / len(levels) == pytest.approx(0.5, abs=1e-12)
    total = sum(m.numel() for m in pruned.masks.values())
    pruned_count = sum(int((~m).sum()) for m in pruned.masks.values())
    assert abs(pruned_count - 0.5 * total) <= len(pruned.masks)  # same-size layers: the global level


def test_masks_cli_layer_table_shows_allocated_levels(tmp_path):
    out = tmp_path / "owl"
    main([*OWL[1:], "sparsity.importance=wanda", f"hydra.run.dir={out}"])
    masks, meta = load_masks(out / "level-0.50" / "mask.safetensors")
    with open(out / "level-0.50" / "layer_sparsity.csv") as fh:
        table = {r["layer"]: r for r in csv.DictReader(fh)}
    targets = {float(r["target"]) for r in table.values()}
    assert len(targets) == 4 and sum(targets) / 4 == pytest.approx(0.5, abs=1e-6)
    for name, row in table.items():
        assert float(row["target"]) == pytest.approx(meta["layers"][name]["target"], abs=1e-6)
        cols = masks[name].shape[1]
        assert ((~masks[name]).sum(1) == int(cols * meta["layers"][name]["target"])).all()  # Wanda's rows


@pytest.mark.parametrize(("overrides", "message"), [
    (["sparsity=nm", "sparsity.allocation=owl"], "sparsity.allocation='owl' is invalid: method=unstructured"),
    (["sparsity=unstructured", "sparsity.allocation=owl", "sparsity.group=global"], "sparsity.group='global'"),
    (["sparsity=unstructured", "sparsity.allocation=greedy"], "sparsity.allocation='greedy' is invalid"),
    (["sparsity=unstructured", "sparsity.allocation=owl", "sparsity.owl.lambda=1.5"], "sparsity.owl.lambda=1.5"),
    (["sparsity=unstructured", "+sparsity.owl.alpha=1"], "sparsity.owl.alpha=1.0 is invalid"),
    (["sparsity=structured", "sparsity.importance=sparsegpt"], "sparsity.importance='sparsegpt' is invalid"),
    (["sparsity=nm", "sparsity.importance=sparsegpt", "sparsity.sparsegpt.blocksize=6"],
     "sparsity.sparsegpt.blocksize=6 is invalid: a multiple of sparsity.m=4"),
    (["sparsity=unstructured", "sparsity.importance=sparsegpt", "sparsity.sparsegpt.percdamp=0"],
     "sparsity.sparsegpt.percdamp=0"),
    (["sparsity=structured", "sparsity.modules=[*.self_attn.*]"], "is not an MLP projection"),
])
def test_bad_owl_and_sparsegpt_input_is_one_line(overrides, message):
    with pytest.raises(FtlabError) as err:
        compose_run(overrides)
    assert message in str(err.value) and "\n" not in str(err.value)
