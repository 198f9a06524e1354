"""Pure tensor math of gated low-rank adapters (SoRA / SDoRA): no modules, no Lightning.

* :func:`soft_threshold` is the proximal operator of ``xi * |g|``: ``sign(g) * max(|g| - xi, 0)``.
  It is what ftlab runs by default (``adapter.proximal=exact``).
* :func:`released_threshold` reproduces the released SoRA code's three masks applied in sequence
  (``g[g > xi] -= xi; g[g < -xi] += xi; g[|g| < xi] = 0``). Because the last mask sees the already
  shrunk values it also zeroes every ``|g|`` in ``(xi, 2 xi)``, and it keeps ``|g| == xi`` unchanged.
  It exists only so published numbers can be reproduced (``adapter.proximal=released``).
* :func:`fold_gates` drops the ranks whose gate is exactly zero and multiplies the gate into B, which
  turns ``s * B diag(g) A`` into a plain ``s * B' A'`` of smaller rank with the same product.
* :func:`threshold_values` is the released "sparsifying scheduler"'s list of thresholds.
"""

from __future__ import annotations

import math

import torch

PROXIMAL_OPERATORS = ("exact", "released")
XI_SCHEDULES = ("constant", "linear", "log_linear", "exp_linear")


def soft_threshold(g: torch.Tensor, xi: float) -> torch.Tensor:
    """``sign(g) * max(|g| - xi, 0)``: entries with ``|g| <= xi`` become exactly 0."""
    if xi < 0:
        raise ValueError(f"threshold must be >= 0, got {xi}")
    return torch.sign(g) * torch.clamp(g.abs() - xi, min=0.0)


def released_threshold(g: torch.Tensor, xi: float) -> torch.Tensor:
    """The released SoRA optimiser's three sequential masks (a quirk, see the module docstring)."""
    if xi < 0:
        raise ValueError(f"threshold must be >= 0, got {xi}")
    out = g.clone()
    out[out > xi] -= xi
    out[out < -xi] += xi
    out[out.abs() < xi] = 0.0
    return out


def proximal(g: torch.Tensor, xi: float, operator: str = "exact") -> torch.Tensor:
    if operator == "exact":
        return soft_threshold(g, xi)
    if operator == "released":
        return released_threshold(g, xi)
    raise ValueError(f"unknown proximal operator {operator!r}; one of {list(PROXIMAL_OPERATORS)}")


def zero_fraction(g: torch.Tensor) -> float:
    """Fraction of entries exactly 0 (the prox writes exact zeros, so no tolerance is needed)."""
    return float((g == 0).sum()) / max(1, g.numel())


def kept_ranks(g: torch.Tensor) -> torch.Tensor:
    """Indices of the non-zero gates, in order."""
    return torch.nonzero(g.reshape(-1) != 0, as_tuple=False).reshape(-1)


def fold_gates(lora_A: torch.Tensor, lora_B: torch.Tensor, gate: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A', B')`` with ``B' A' == B diag(g) A`` and rank = number of non-zero gates.

    ``lora_A`` is (r, in), ``lora_B`` is (out, r), ``gate`` has r entries. The scaling ``s`` is not
    touched: the caller keeps it (peft stores it as alpha / r).
    """
    keep = kept_ranks(gate)
    g = gate.reshape(-1)[keep].to(lora_B.dtype)
    return lora_A[keep].clone(), lora_B[:, keep] * g


def gated_delta(lora_A: torch.Tensor, lora_B: torch.Tensor, gate: torch.Tensor, scaling: float) -> torch.Tensor:
    """``s * B diag(g) A`` as an (out, in) matrix."""
    return scaling * ((lora_B * gate.reshape(1, -1).to(lora_B.dtype)) @ lora_A)


def row_norm(weight: torch.Tensor) -> torch.Tensor:
    """L2 norm of each output row of an (out, in) weight: DoRA's per-row magnitude reference."""
    return torch.linalg.norm(weight, dim=1)


def dora_merge(weight: torch.Tensor, delta: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """``m * (W + dW) / ||W + dW||_row``: DoRA's merged weight (the norm is a constant here)."""
    v = weight + delta
    return (magnitude / row_norm(v)).reshape(-1, 1) * v


def effective_rank_params(kept: int, in_features: int, out_features: int) -> int:
    """Adapter parameters of a layer with ``kept`` live ranks: k x (in + out)."""
    return kept * (in_features + out_features)


def threshold_values(kind: str, xi0: float, xi_max: float, num: int) -> list[float]:
    """The sparsifying scheduler's thresholds, ``num`` values from ``xi0`` to ``xi_max``.

    ``linear``: evenly spaced. ``log_linear``: ``log`` of evenly spaced ``exp`` values (the released
    definition; nearly linear for small xi). ``exp_linear``: geometric (needs ``xi0 > 0``).
    ``constant``: ``xi0`` everywhere.
    """
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    if kind == "constant":
        return [float(xi0)] * num
    if num == 1:
        return [float(xi0)]

    def lin(a: float, b: float) -> list[float]:
        return [a + (b - a) * i / (num - 1) for i in range(num)]

    if kind == "linear":
        values = lin(xi0, xi_max)
    elif kind == "log_linear":
        values = [math.log(v) for v in lin(math.exp(xi0), math.exp(xi_max))]
    elif kind == "exp_linear":
        if xi0 <= 0:
            raise ValueError(f"exp_linear needs xi0 > 0, got {xi0}")
        values = [math.exp(v) for v in lin(math.log(xi0), math.log(xi_max))]
    else:
        raise ValueError(f"unknown threshold schedule {kind!r}; one of {list(XI_SCHEDULES)}")
    return [float(xi0), *values[1:-1], float(xi_max)]  # exact end points (no exp/log round trip)
