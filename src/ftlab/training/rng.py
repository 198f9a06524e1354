"""Capture and restore every RNG a training step draws from (dropout, Python, NumPy).

Lightning's checkpoint holds weights, optimiser, scheduler and loop state but not the global
RNGs; without them a resumed run draws different dropout masks than an uninterrupted one.

Cached steps must not move the caller's random streams either: base pre-training, mask
computation and lm-eval scoring draw from the global generators (and Lightning's
``seed_everything`` sets environment variables). On a cache hit they do not run at all, so
whatever follows them (adapter initialisation, dropout) would see a different stream on a hit
than on a build. :func:`preserved_rng` runs them without moving anything.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    """Plain tensors, ints and lists only, so checkpoints load with ``weights_only=True``."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


_ENV = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore python, numpy and torch (CPU and CUDA) generators and Lightning's seed variables."""
    state = rng_state()
    env = {k: os.environ.get(k) for k in _ENV}
    try:
        yield
    finally:
        set_rng_state(state)
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def every_rank(state: dict[str, Any]) -> list[dict[str, Any]] | None:
    """``state`` of every rank (collective: all ranks call it), ``None`` in a single process.
    Only rank 0 writes a checkpoint, and the ranks' dropout streams differ, so each rank's state
    travels in rank 0's file."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    states: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states


def own_rank(checkpoint_states: list[dict[str, Any]] | None, fallback: dict[str, Any] | None) -> dict[str, Any] | None:
    """This rank's state from :func:`every_rank`'s list when the world size is the same, else ``fallback``."""
    import torch.distributed as dist

    if checkpoint_states and dist.is_available() and dist.is_initialized() \
            and len(checkpoint_states) == dist.get_world_size():
        return checkpoint_states[dist.get_rank()]
    return fallback
