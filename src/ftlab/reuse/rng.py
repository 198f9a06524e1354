"""Cached steps must not move the caller's random streams.

Base pre-training and mask computation draw from the global generators (and Lightning's
``seed_everything`` sets environment variables). On a cache hit they do not run at all, so
whatever follows them (adapter initialisation, dropout) would see a different stream on a hit
than on a build. :func:`preserved_rng` runs them without moving anything.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from ftlab.training.rng import rng_state, set_rng_state

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
