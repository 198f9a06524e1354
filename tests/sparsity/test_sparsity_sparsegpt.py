"""SparseGPT: the blocked, lazily updated Cholesky implementation against a slow dense OBS
re-derivation (one explicit inverse per column), its reconstruction error against selection-only
masks, and the pruned base (reconstructed weights + mask) through the cached mask step."""

from __future__ import annotations

import pytest
import torch

from ftlab.models import build_model, build_tokenizer
from ftlab.preflight.compose import compose_run
from ftlab.reuse.cached import WEIGHTS_FILE, cached_mask_fn
from ftlab.reuse.runner import StepRunner
from ftlab.sparsity import scores as S
from ftlab.sparsity.compute import compute_pruned
from ftlab.sparsity.masks import nm_pattern_ok, prune_count, unstructured_masks
from ftlab.sparsity.pipeline import prepare_masks
from ftlab.sparsity.selection import canonical_parameters
from ftlab.sparsity.sparsegpt import HessianAccumulator, reconstruction_error, sparsegpt_prune

CAL = ["sparsity.calibration.batches=2", "sparsity.calibration.batch_size=4", "task.num_examples=60"]


def _layer(rows=24, cols=32, tokens=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    scale = torch.ones(cols)
    scale[::5] = 6.0  # a few outlier input features, as in LLM activations
    x = torch.randn(tokens, cols, generator=g, dtype=torch.float64) @ torch.randn(cols, cols, generator=g,
                                                                                  dtype=torch.float64) * 0.3
    x = (x * scale.double()).float()
    w = torch.randn(rows, cols, generator=g)
    h = HessianAccumulator(cols)
    for chunk in x.split(97):
        h.update(chunk)
    return w, x, h.H


def _slow_obs(w, hessian, level, blocksize, percdamp, n=0, m=0):
    """Column by column, the remaining columns' inverse Hessian inverted explicitly."""
    W = w.double().clone()
    H = hessian.double().clone()
    H.diagonal().add_(percdamp * H.diagonal().mean())
    rows, cols = W.shape
    inv_rows, d = [], []
    for i in range(cols):
        hinv = torch.linalg.inv(H[i:, i:])
        inv_rows.append(hinv[0] / hinv[0, 0])
        d.append(hinv[0, 0].sqrt())
    d = torch.stack(d)
    pruned = torch.zeros_like(W, dtype=torch.bool)
    done = 0
    for i1 in range(0, cols, blocksize):
        i2 = min(cols, i1 + blocksize)
        if not n:
            k = prune_count(level, rows * i2) - done
            done += k
            sal = (W[:, i1:i2] ** 2 / d[i1:i2] ** 2).flatten()
            block = torch.zeros(sal.numel(), dtype=torch.bool)
            block[sal.argsort()[:k]] = True
            pruned[:, i1:i2] = block.reshape(rows, i2 - i1)
        for i in range(i1, i2):
            if n and (i - i1) % m == 0:
                sal = W[:, i:i + m] ** 2 / d[i:i + m] ** 2
                pruned[:, i:i + m] = torch.zeros_like(sal, dtype=torch.bool).scatter_(1, sal.argsort(1)[:, :n], True)
            err = torch.where(pruned[:, i], W[:, i], torch.zeros_like(W[:, i]))
            W[:, i:] -= err[:, None] * inv_rows[i][None, :]
            W[:, i] = torch.where(pruned[:, i], 0.0, W[:, i])
    return W.float(), ~pruned


@pytest.mark.parametrize(("blocksize", "n", "m"), [(8, 0, 0), (32, 0, 0), (8, 2, 4)])
def test_blocked_cholesky_matches_slow_dense_obs(blocksize, n, m):
    w, _, H = _layer()
    fast_w, fast_keep = sparsegpt_prune(w, H, 0.5, n=n, m=m, blocksize=blocksize, percdamp=0.01)
    slow_w, slow_keep = _slow_obs(w, H, 0.5, blocksize, 0.01, n, m)
    assert torch.equal(fast_keep, slow_keep)
    assert (fast_w - slow_w).abs().max() <= 1e-4 * w.abs().max()
    assert torch.all(fast_w[~fast_keep] == 0)
    if n:
        assert nm_pattern_ok(fast_keep, n, m)
    else:
        assert int((~fast_keep).sum()) == prune_count(0.5, w.numel())


def test_reconstruction_error_below_wanda_and_magnitude():
    w, x, H = _layer(rows=64, cols=64, tokens=600)
    err = {}
    new, keep = sparsegpt_prune(w, H, 0.5, blocksize=16)
    err["sparsegpt"] = ((x @ w.t() - x @ new.t()) ** 2).sum(1).mean().item()
    assert abs(reconstruction_error(w, new, H) - err["sparsegpt"]) <= 1e-3 * err["sparsegpt"]
    norms = (x ** 2).mean(0)
    for name, score in (("wanda", S.wanda(w, norms)), ("magnitude", S.magnitude(w))):
        group = "row" if name == "wanda" else "layer"
        mask = unstructured_masks({"w": score}, 0.5, group)["w"]
        err[name] = ((x @ w.t() - x @ (w * mask).t()) ** 2).sum(1).mean().item()
    assert err["sparsegpt"] < err["wanda"] < err["magnitude"], err


def test_pruned_base_holds_reconstructed_weights_and_mask(tmp_path):
    cfg = compose_run(["sparsity=unstructured", "sparsity.importance=sparsegpt", "sparsity.sparsegpt.blocksize=32",
                       *CAL, f"paths.cache_dir={tmp_path}/cache"])
    tok = build_tokenizer(cfg.model)
    model = build_model(cfg.model, tok, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    pruned = compute_pruned(cfg, model, tok)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # the model is untouched
    assert set(pruned.weights) == set(pruned.masks)
    for name, keep in pruned.masks.items():
        w = pruned.weights[name]
        assert int((~keep).sum()) == prune_count(0.5, keep.numel()), name
        assert torch.all(w[~keep] == 0), name
        assert not torch.allclose(w[keep], before[name][keep]), name  # kept weights were reconstructed
    # through the cached mask step (build, then hit): same masks and weights, written into the base
    for _ in range(2):
        base = build_model(cfg.model, tok, seed=0)
        runner = StepRunner(cfg)  # one per run: the second run's mask step is a hit
        got = prepare_masks(cfg, base, tok, compute=cached_mask_fn(compute_pruned, runner))
        params = canonical_parameters(base)
        for name in pruned.masks:
            assert torch.equal(got.masks[name], pruned.masks[name])
            assert torch.equal(params[name].detach(), pruned.weights[name]), name
    assert runner.records["mask"]["cache_hit"]
    assert list((tmp_path / "cache").rglob(WEIGHTS_FILE))


def test_nm_sparsegpt_end_to_end():
    cfg = compose_run(["sparsity=nm", "sparsity.importance=sparsegpt", "sparsity.sparsegpt.blocksize=16", *CAL])
    tok = build_tokenizer(cfg.model)
    pruned = compute_pruned(cfg, build_model(cfg.model, tok, seed=0), tok)
    assert all(nm_pattern_ok(m, 2, 4) for m in pruned.masks.values())
    assert all(torch.all(pruned.weights[n][~m] == 0) for n, m in pruned.masks.items())
