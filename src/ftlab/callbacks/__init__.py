"""Thin Lightning callbacks that write a run's files (listed in docs/architecture.md, "What a run writes").

The names below load on first use (PEP 562): tools that only need :mod:`ftlab.core.io`
(``python -m ftlab.masks`` and friends) must not pay for importing Lightning and transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LossLog": "ftlab.callbacks.loss_log",
    "PeriodicCheckpoint": "ftlab.callbacks.checkpoints",
    "TrainingHistory": "ftlab.callbacks.history",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
