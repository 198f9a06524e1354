"""Numerical tolerances that follow from the dtype's rounding, not from one machine's kernels.

A float result computed through ``ops`` roundings of values of size ``magnitude`` can be off by up
to ``ops * eps(dtype) * magnitude`` (the classic worst-case bound; a reduction over ``n`` terms
counts ``n`` roundings). Kernels differ between CPUs (AVX-512, AVX2, torch's portable ``default``
kernels pick other reduction orders and lane widths), and each order lands somewhere inside that
bound: a tolerance below it passes on the machine it was tuned on and fails on another. CI runs
the files that use this module a second time under ``ATEN_CPU_CAPABILITY=default``.
"""

from __future__ import annotations

import torch


def rounding(dtype: torch.dtype, magnitude: float, ops: int = 1) -> float:
    """Worst-case error of ``ops`` roundings in ``dtype`` at values of size ``magnitude``."""
    return ops * torch.finfo(dtype).eps * abs(float(magnitude))


def nll_rounding(dtype: torch.dtype, vocab: int, logit: float) -> float:
    """A cross-entropy term's bound: the softmax sum adds ``vocab`` terms of size <= 1, then the
    log-sum-exp adds the largest logit back and the target logit is subtracted (two roundings at
    the logit's size)."""
    return rounding(dtype, 1.0, vocab) + rounding(dtype, logit, 2)


def assert_close(got: torch.Tensor, want: torch.Tensor, *, ops: int, magnitude: float | None = None) -> None:
    """``got`` equals ``want`` within ``ops`` roundings at ``magnitude`` (default: the largest
    ``|want|``) in ``want``'s dtype; no relative slack beyond that."""
    size = float(want.abs().max()) if magnitude is None else magnitude
    torch.testing.assert_close(got, want, atol=rounding(want.dtype, size, ops), rtol=0)
