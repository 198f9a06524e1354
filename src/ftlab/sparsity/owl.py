"""OWL (Yin et al., ICML 2024): outlier-weighted layerwise sparsity levels.

Per decoder layer, the outlier ratio D is the share of Wanda scores |W|·‖X‖ (all pruned linears
of the layer together, inputs through the unpruned model) above ``threshold_m`` × the layer's
mean score. D is scaled linearly to [0, 2λ], shifted so its mean is 1 − S, and layer l gets
sparsity 1 − D_l: layers with more outliers are pruned less and the mean over layers stays S
exactly (as in the public code, ``lib/prune_all.py``). Pure functions.
"""

from __future__ import annotations

import torch

from ftlab.core.errors import ConfigError


def outlier_ratio(scores: list[torch.Tensor], threshold_m: float) -> float:
    """Share of entries above ``threshold_m`` × the mean over all of them."""
    flat = torch.cat([s.detach().float().reshape(-1).cpu() for s in scores])
    return float((flat > flat.mean() * threshold_m).sum()) / max(1, flat.numel())


def owl_levels(ratios: list[float], level: float, lam: float) -> list[float]:
    """Per-layer levels whose mean is ``level``; uniform when every layer has the same ratio."""
    r = torch.tensor(ratios, dtype=torch.float64)
    if r.numel() == 0 or float(r.max() - r.min()) == 0.0:
        return [float(level)] * r.numel()
    d = (r - r.min()) / (r.max() - r.min()) * 2 * lam
    d = d - d.mean() + (1 - level)
    levels = (1 - d).tolist()
    if min(levels) < 0 or max(levels) >= 1:
        raise ConfigError("sparsity.owl.lambda", lam, f"a spread that keeps every layer's level in [0, 1) around "
                          f"level={level} (allocated {min(levels):.3f}..{max(levels):.3f})")
    return levels
