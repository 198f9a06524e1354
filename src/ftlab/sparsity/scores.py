"""Importance scores: higher = keep. Pure tensor functions (the formula in each docstring; the
references in ``docs/methods.md``) and the built-in scores' specs in the importance registry
(:mod:`ftlab.sparsity.importance`; SparseGPT's is in :mod:`ftlab.sparsity.sparsegpt`).

Scores are computed in float32 whatever the weights' dtype, so rankings do not change with the
storage precision of the base model.
"""

from __future__ import annotations

import zlib

import torch

from ftlab.core.errors import fail
from ftlab.sparsity.importance import ImportanceSpec, register_importance


def magnitude(weight: torch.Tensor) -> torch.Tensor:
    """|W|."""
    return weight.detach().float().abs()


def gradient(grad: torch.Tensor) -> torch.Tensor:
    """|∇W| of the loss summed over calibration batches."""
    return grad.detach().float().abs()


def taylor(weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """|W · ∇W|: first-order estimate of the loss change when the weight is zeroed."""
    return (weight.detach().float() * grad.detach().float()).abs()


def wanda(weight: torch.Tensor, input_sq_mean: torch.Tensor) -> torch.Tensor:
    """|W_ij| · ||X_j||₂, with ||X_j||² the mean over calibration tokens of x_j² (one per column)."""
    return weight.detach().float().abs() * input_sq_mean.float().sqrt().unsqueeze(0)


def random_scores(shape: tuple[int, ...], seed: int, name: str) -> torch.Tensor:
    """Seeded uniform scores; the seed is mixed with the parameter name so each layer's draw is
    independent of which other layers are pruned and of their order."""
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + zlib.crc32(name.encode())) % 2**63)
    return torch.rand(shape, generator=g)


class InputSquares:
    """Running mean of squared input activations per input feature (Wanda's ||X_j||²).

    Only real tokens count: ``valid`` (a flattened attention mask) drops padding, which would
    otherwise pull the norms of short sequences toward the pad embedding's activations.
    """

    def __init__(self, features: int):
        self.sum = torch.zeros(features, dtype=torch.float64)
        self.count = 0

    def update(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        rows = x.detach().reshape(-1, x.shape[-1]).float()
        if valid is not None and valid.numel() == rows.shape[0]:
            rows = rows[valid.to(rows.device).bool()]
        self.sum += rows.pow(2).sum(0).to(self.sum)
        self.count += rows.shape[0]

    def mean(self) -> torch.Tensor:
        return (self.sum / max(1, self.count)).float()


def _refuse_global_group(sparsity) -> None:
    if sparsity.group == "global":
        fail("sparsity.group", sparsity.group, f"'row' or 'layer' with importance={sparsity.importance} (it prunes "
             "layer by layer, each pruned layer feeding the next)")


MAGNITUDE = register_importance(ImportanceSpec(
    "magnitude", lambda i: magnitude(i.weight),
    doc="|W| (Han et al., 2015, Learning both Weights and Connections for Efficient Neural Networks)"))
GRADIENT = register_importance(ImportanceSpec(
    "gradient", lambda i: gradient(i.grad), gradients=True,
    doc="|∇W L| summed over calibration batches"))
TAYLOR = register_importance(ImportanceSpec(
    "taylor", lambda i: taylor(i.weight, i.grad), gradients=True,
    doc="|W · ∇W L|, first-order Taylor estimate of the loss change (Molchanov et al., CVPR 2019)"))
WANDA = register_importance(ImportanceSpec(
    "wanda", lambda i: wanda(i.weight, i.input_sq_mean), activations=True, sequential=True, row_group=True,
    validate=_refuse_global_group,
    doc="|W_ij| · ||X_j||₂ (Sun et al., ICLR 2024, A Simple and Effective Pruning Approach for LLMs)"))
RANDOM = register_importance(ImportanceSpec(
    "random", lambda i: random_scores(tuple(i.weight.shape), i.seed, i.name), seeded=True,
    doc="seeded uniform scores, independent per weight name (control)"))
