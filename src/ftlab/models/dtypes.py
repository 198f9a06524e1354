"""``model.dtype`` names and their torch dtypes: a leaf that building, quantizing and checking a
model all read, so none of them has to import another for it."""

from __future__ import annotations

import torch

from ftlab.core.errors import ConfigError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ConfigError("model.dtype", name, f"one of {sorted(_DTYPES)}")
    return _DTYPES[name]
