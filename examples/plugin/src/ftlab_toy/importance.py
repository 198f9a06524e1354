"""``power``: |W|^p, with its own setting ``sparsity.options.power`` (p > 0).

For p > 0 it ranks like magnitude; it exists to show how a score declares what it reads: the
spec's ``config_keys`` put ``sparsity.options.power`` into the mask step's cache key."""

from __future__ import annotations

import torch

from ftlab.core.errors import fail
from ftlab.sparsity.importance import ImportanceSpec, ScoreInputs


def power_score(inputs: ScoreInputs) -> torch.Tensor:
    return inputs.weight.detach().float().abs() ** float(inputs.sparsity.options.get("power", 1.0))


def validate(sparsity) -> None:
    p = sparsity.options.get("power", 1.0)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or p <= 0:
        fail("sparsity.options.power", p, "a number > 0")


POWER = ImportanceSpec("power", power_score, config_keys=("sparsity.options.power",), validate=validate,
                       doc="|W|^p (toy plugin score)")
