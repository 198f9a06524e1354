"""2:4 semi-structured sparsity that runs faster: merged linears converted with
``torch.sparse.to_sparse_semi_structured`` (cuSPARSELt / CUTLASS kernels) and timed against the
dense model on the same inputs.

The kernels exist only on CUDA GPUs of compute capability 8.0+ with fp16/bf16 weights whose
shapes fit the kernels' tiles; :func:`unsupported_reason` says in one line why not elsewhere.
Speed-ups show at larger batch × sequence sizes (the matmuls must be big enough), not at batch 1.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

#: Minimum rows / columns multiples of the semi-structured kernels (fp16/bf16).
MIN_ROWS, MIN_COLS = 64, 64


def unsupported_reason() -> str | None:
    """Why 2:4 kernels cannot run on this machine, or ``None`` when they can."""
    if not torch.cuda.is_available():
        return ("2:4 semi-structured kernels need a CUDA GPU of compute capability >= 8.0 "
                "(torch.sparse.to_sparse_semi_structured); this machine has no CUDA device")
    major, minor = torch.cuda.get_device_capability()
    if major < 8:
        return f"2:4 semi-structured kernels need compute capability >= 8.0; this GPU has {major}.{minor}"
    return None


def is_two_four(weight: torch.Tensor) -> bool:
    """At most 2 non-zeros in every 4 consecutive input columns of every row."""
    rows, cols = weight.shape
    if cols % 4:
        return False
    return bool(((weight != 0).reshape(rows, cols // 4, 4).sum(-1) <= 2).all())


def convertible(linear: nn.Linear) -> bool:
    w = linear.weight
    return (w.dtype in (torch.float16, torch.bfloat16) and w.shape[0] % MIN_ROWS == 0
            and w.shape[1] % MIN_COLS == 0 and is_two_four(w))


@torch.no_grad()
def to_semi_structured_(model: nn.Module) -> dict[str, list[str]]:
    """Replace the weight of every linear holding a 2:4 pattern (fp16/bf16, kernel-sized) by its
    compressed semi-structured form, in place; returns the converted and skipped module names."""
    from torch.sparse import to_sparse_semi_structured  # CUDA-only kernels; imported where used

    reason = unsupported_reason()
    if reason:
        raise RuntimeError(reason)
    done, skipped = [], []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if convertible(module):
            module.weight = nn.Parameter(to_sparse_semi_structured(module.weight.detach()), requires_grad=False)
            done.append(name)
        else:
            skipped.append(name)
    return {"converted": done, "skipped": skipped}


@torch.no_grad()
def latency(model: nn.Module, input_ids: torch.Tensor, iters: int = 20, warmup: int = 5) -> float:
    """Median seconds of one forward pass (CUDA-synchronised)."""
    times = []
    for i in range(warmup + iters):
        if input_ids.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(input_ids=input_ids, use_cache=False)
        if input_ids.is_cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def compare_speed(dense: nn.Module, sparse: nn.Module, batch: int, seq: int, vocab: int,
                  iters: int = 20) -> dict[str, Any]:
    """Forward latency and tokens/s of the dense and the converted model on the same inputs."""
    device = next(dense.parameters()).device
    ids = torch.randint(0, vocab, (batch, seq), device=device, generator=None)
    t_dense = latency(dense, ids, iters)
    t_sparse = latency(sparse, ids, iters)
    tokens = batch * seq
    return {"batch": batch, "seq": seq, "dense_latency_ms": 1e3 * t_dense, "sparse_latency_ms": 1e3 * t_sparse,
            "dense_tokens_per_s": tokens / t_dense, "sparse_tokens_per_s": tokens / t_sparse,
            "speedup": t_dense / t_sparse}
