"""SparseGPT (Frantar & Alistarh, ICML 2023): prune one linear and reconstruct its kept weights.

For a linear with weight W (rows × cols) and calibration inputs X (tokens × cols), minimise
‖WXᵀ − ŴXᵀ‖² over Ŵ with the pruned entries zero, approximately, column by column: with
H = 2·XᵀX/N (+ damp·mean(diag H)·I), pruning or keeping column i's entries leaves an error
(w − q)/[H⁻¹]ᵢᵢ that OBS spreads over the columns right of i through row i of H⁻¹ restricted to
those columns. The upper Cholesky factor of H⁻¹ holds exactly those rows (scaled), so one
factorisation serves every step; updates inside a block of ``blocksize`` columns are immediate
and the block's accumulated error reaches the later columns in one matmul (lazy batch update).

The mask is chosen per block by w²/[H⁻¹]ᵢᵢ² (the OBS saliency): unstructured prunes the block's
share of the layer count (the counts of the blocks add up to ``round(level · numel)``), N:M the
``n`` lowest of each ``m`` consecutive columns. Pure tensor code; the layer-by-layer pass over
the model is in :mod:`ftlab.sparsity.compute`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ftlab.core.errors import fail
from ftlab.sparsity.importance import ImportanceSpec, register_importance
from ftlab.sparsity.masks import prune_count
from ftlab.sparsity.methods import get_method


class HessianAccumulator:
    """H = 2/N · Σ x xᵀ over the real (non-padding) input tokens of one linear, in float32."""

    def __init__(self, features: int, device: torch.device | str = "cpu"):
        self.H = torch.zeros(features, features, dtype=torch.float32, device=device)
        self.count = 0

    def update(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        rows = x.detach().reshape(-1, x.shape[-1]).float()
        if valid is not None and valid.numel() == rows.shape[0]:
            rows = rows[valid.to(rows.device).bool()]
        n = rows.shape[0]
        if n == 0:
            return
        rows = rows.to(self.H.device)
        self.H.mul_(self.count / (self.count + n))
        self.count += n
        rows = rows * math.sqrt(2.0 / self.count)
        self.H.addmm_(rows.t(), rows)


def damped_inverse_cholesky(hessian: torch.Tensor, percdamp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(upper Cholesky factor of (H + damp·I)⁻¹, dead columns). Inputs that never fire (zero
    diagonal) get a unit diagonal so H stays invertible; their weights are zeroed by the caller."""
    H = hessian.clone().float()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    damp = percdamp * torch.mean(torch.diag(H))
    H.diagonal().add_(damp)
    L = torch.linalg.cholesky(H)
    Hinv = torch.cholesky_inverse(L)
    return torch.linalg.cholesky(Hinv, upper=True), dead


def _block_counts(level: float, rows: int, cols: int, blocksize: int) -> list[int]:
    """Pruned entries per column block, adding up to the layer's ``round(level · rows · cols)``."""
    edges = list(range(0, cols, blocksize)) + [cols]
    return [prune_count(level, rows * b) - prune_count(level, rows * a) for a, b in zip(edges, edges[1:])]


@torch.no_grad()
def sparsegpt_prune(weight: torch.Tensor, hessian: torch.Tensor, level: float, *, n: int = 0, m: int = 0,
                    blocksize: int = 128, percdamp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstructed weight in float32 with zeros at pruned entries, keep-mask). ``n``/``m`` > 0
    selects N:M (``level`` unused)."""
    W = weight.detach().clone().float()
    rows, cols = W.shape
    Hinv, dead = damped_inverse_cholesky(hessian.to(W.device), percdamp)
    W[:, dead] = 0
    pruned = torch.zeros_like(W, dtype=torch.bool)
    counts = _block_counts(level, rows, cols, blocksize) if not n else []
    for b, i1 in enumerate(range(0, cols, blocksize)):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        H1 = Hinv[i1:i2, i1:i2]
        d = torch.diag(H1)
        mask1 = torch.zeros_like(W1, dtype=torch.bool)
        if not n and counts[b]:
            saliency = (W1 ** 2 / d.reshape(1, -1) ** 2).flatten()
            mask1.view(-1)[torch.topk(saliency, counts[b], largest=False, sorted=False).indices] = True
        for i in range(i2 - i1):
            w = W1[:, i]
            if n and i % m == 0:
                saliency = W1[:, i:i + m] ** 2 / d[i:i + m].reshape(1, -1) ** 2
                mask1.scatter_(1, i + torch.topk(saliency, n, dim=1, largest=False).indices, True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err = (w - q) / d[i]
            W1[:, i:] -= err.unsqueeze(1) @ H1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        pruned[:, i1:i2] = mask1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return W, ~pruned


def reconstruction_error(weight: torch.Tensor, pruned_weight: torch.Tensor, hessian: torch.Tensor) -> float:
    """‖WXᵀ − ŴXᵀ‖² / N per token, from H = 2XᵀX/N: tr(ΔW H ΔWᵀ)/2."""
    delta = (weight.float() - pruned_weight.float()).to(hessian.device)
    return float(((delta @ hessian) * delta).sum() / 2)


def check_options(sp: Any) -> None:
    """SparseGPT's own settings (one line each; the spec's ``methods`` limit the masks)."""
    if sp.group not in (None, "layer"):
        fail("sparsity.group", sp.group, "null or 'layer' with importance=sparsegpt (its comparison group is each "
             "block of sparsity.sparsegpt.blocksize columns, block counts adding up to the layer's)")
    opts = sp.sparsegpt
    if not (isinstance(opts.blocksize, int) and opts.blocksize >= 1):
        fail("sparsity.sparsegpt.blocksize", opts.blocksize, "an integer >= 1")
    if get_method(sp.method).needs_n_m and opts.blocksize % sp.m:
        fail("sparsity.sparsegpt.blocksize", opts.blocksize, f"a multiple of sparsity.m={sp.m} (N:M groups may "
             "not straddle two blocks)")
    if not (isinstance(opts.percdamp, (int, float)) and opts.percdamp > 0):
        fail("sparsity.sparsegpt.percdamp", opts.percdamp, "a number > 0 (fraction of mean(diag H) added to H)")


SPARSEGPT = register_importance(ImportanceSpec(
    "sparsegpt", None, activations=True, sequential=True, reconstructs_weights=True,
    config_keys=("sparsity.sparsegpt",), methods=("unstructured", "nm"), validate=check_options,
    doc="OBS saliency w²/[H⁻¹]ᵢᵢ² per block, kept weights reconstructed (Frantar & Alistarh, ICML 2023)"))
