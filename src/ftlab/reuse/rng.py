"""Randomness that does not depend on where a run started.

Lightning's checkpoint holds no RNG state, and the global torch generator is also advanced by
things outside the training step (every DataLoader iterator draws a seed from it, including the
validation loader at epoch ends). A run resumed from a cached stage would therefore draw
different dropout masks than the same run trained in one go. :class:`StepSeed` removes the
carried state instead of saving it: before every micro-batch the generator is reseeded from
(run seed, epoch, batch index, rank), which Lightning's loop counters restore exactly.

:func:`preserved_rng` runs a cached step (base pre-training, mask computation) without moving
the caller's generators, so what follows it sees the same random stream on a hit and on a build.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
from collections.abc import Iterator

import lightning as L
import numpy as np
import torch

_ENV = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")


def step_seed(seed: int, epoch: int, batch_idx: int, rank: int = 0) -> int:
    """A 63-bit seed that is a pure function of the position in training."""
    digest = hashlib.sha256(f"ftlab-step:{seed}:{epoch}:{batch_idx}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class StepSeed(L.Callback):
    def __init__(self, seed: int):
        self.seed = int(seed)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        torch.manual_seed(step_seed(self.seed, trainer.current_epoch, batch_idx, trainer.global_rank))


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore python, numpy and torch (CPU and CUDA) generators and Lightning's seed variables."""
    py, npy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    env = {k: os.environ.get(k) for k in _ENV}
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
