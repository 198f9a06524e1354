"""Sparse bases through training and merge: no adapter family leaks a mask's zeros.

The masks a run used are recomputed here from the same config (they are a pure function of it),
so the saved merged model is checked against M independently of the run's own validation.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

from ftlab.adapters.registry import all_adapters
from ftlab.models import build_model, build_tokenizer
from ftlab.preflight.compose import compose_run
from ftlab.recipe.run import run
from ftlab.sparsity.compute import compute_masks
from ftlab.sparsity.io import save_masks
from ftlab.sparsity.masks import nm_pattern_ok
from ftlab.sparsity.selection import canonical_parameters
from ftlab.sparsity.stats import describe

FAST = ["task.num_examples=120", "train.max_steps=8", "train.batch_size=8", "train.log_every_n_steps=4",
        "train.log_measurements=false", "eval.generate=false", "schedule.lr=1e-2"]
#: Adapter families whose merge must keep M's zeros (SoRA/SDoRA once they are registered).
FAMILIES = [n for n in ("lora", "dora", "masked", "full", "sora", "sdora") if n in {a.name for a in all_adapters()}]



class LeakProbe(L.Callback):
    """After every optimiser step: the largest |W| at pruned positions of the training model."""

    def __init__(self):
        self.max_leak: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        masks = pl_module.adapted.masks
        params = canonical_parameters(pl_module.model)
        leaks = [params[n].detach()[~m.to(params[n].device)].abs() for n, m in masks.items()]
        self.max_leak.append(max(float(x.max()) if x.numel() else 0.0 for x in leaks))


def base_masks(cfg) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(the run's masks, its base weights after pruning), recomputed from the config."""
    tok = build_tokenizer(cfg.model)
    model = build_model(cfg.model, tok, seed=cfg.seed)
    masks = compute_masks(cfg, model, tok)
    base = {n: p.detach().masked_fill(~masks[n], 0) for n, p in model.named_parameters() if n in masks}
    return masks, base


def merged_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model" / "model.safetensors"))


def run_sparse(run_dir: Path, *overrides: str, callbacks=None):
    """One run, with its own reuse cache: every step (mask, training) is computed here."""
    cfg = compose_run([*FAST, *overrides, f"paths.cache_dir={run_dir / 'cache'}"])
    run(cfg, run_dir=run_dir, extra_callbacks=callbacks)
    return cfg, json.loads((run_dir / "metrics.json").read_text())


def assert_keeps_zeros(cfg, run_dir: Path, metrics: dict) -> None:
    masks, base = base_masks(cfg)
    weights = merged_weights(run_dir)
    changed = 0
    for name, m in masks.items():
        w = weights[name]
        assert int(torch.count_nonzero(w[~m])) == 0, name
        changed += int((w[m] != base[name][m]).sum())
    assert changed > 0  # the adapter did change the kept weights: the check is not vacuous
    assert metrics["validation_passed"] is True and metrics["validation_leaks"] == 0
    assert metrics["weight_sparsity"] >= metrics["mask_sparsity"] == pytest.approx(0.5)
    report = json.loads((run_dir / "validation_report.json").read_text())
    assert report["passed"] and set(report["layers"]) == set(masks)


@pytest.mark.slow
@pytest.mark.parametrize("adapter", FAMILIES)
def test_sparse_to_sparse_merge_keeps_zeros(tmp_path, adapter):
    probe = LeakProbe()
    cfg, metrics = run_sparse(tmp_path, f"adapter={adapter}", "sparsity=unstructured", "sparsity.level=0.5",
                              "sparsity.mode=sparse_to_sparse", callbacks=[probe])
    assert_keeps_zeros(cfg, tmp_path, metrics)
    # Stored weights never leak during training: frozen sparse bases, masked deltas, or enforcement.
    assert len(probe.max_leak) == 8 and max(probe.max_leak) == 0.0
    assert metrics["sparsity_mode"] == "sparse_to_sparse" and "val_loss" in metrics


@pytest.mark.slow
@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_sparse_to_dense_zero_leaks_after_merge(tmp_path, adapter):
    probe = LeakProbe()
    cfg, metrics = run_sparse(tmp_path, f"adapter={adapter}", "sparsity=unstructured", "sparsity.level=0.5",
                              "sparsity.mode=sparse_to_dense", callbacks=[probe])
    assert_keeps_zeros(cfg, tmp_path, metrics)
    if adapter == "full":  # trained densely: zeros fill up during training, the merge removes them
        assert max(probe.max_leak) > 0.0


@pytest.mark.slow
def test_masked_keeps_exact_nm_pattern_and_uses_saved_mask(tmp_path):
    """A 2:4 mask saved to a file, used by a run through ``sparsity.mask_path``: the merged model
    has exactly the 2:4 pattern (every kept weight non-zero, every pruned one zero)."""
    cfg = compose_run([*FAST, "sparsity=nm"])
    masks, _ = base_masks(cfg)
    path = save_masks(masks, tmp_path / "nm.safetensors",
                      describe(masks, model="tiny_llama", method="nm", importance="magnitude", target=0.5,
                               spec=type("S", (), {"group": "layer", "n": 2, "m": 4, "structure": "channel"})))
    run_dir = tmp_path / "run"
    _, metrics = run_sparse(run_dir, "adapter=masked", "sparsity.mask_path=" + str(path),
                            "sparsity.mode=sparse_to_sparse")
    weights = merged_weights(run_dir)
    for name, m in masks.items():
        assert torch.equal(weights[name] != 0, m), name
        assert nm_pattern_ok(weights[name] != 0, 2, 4), name
    assert metrics["validation_passed"] and metrics["mask_sparsity"] == 0.5
    assert (run_dir / "adapter" / "sparsity_mask.safetensors").is_file()
