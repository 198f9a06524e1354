"""The trials of a stage search and how a trial is truncated to its first ``k`` stages.

A rung-``k`` job must train exactly the first ``k`` stages of its trial *with the same cache
keys* as the full trial. A stage's key is built from its own entry of ``schedule.stages`` and its
parent's key (:func:`ftlab.reuse.steps.stage_steps`), so the job keeps every trial-level override
and replaces the per-stage ones (``schedule.stages.<i>.*`` and any ``schedule.stages=[...]``) by
one ``schedule.stages=[...]`` holding the trial's *composed* first ``k`` entries, every field
written out. Nothing else of the config changes, so the prefix keys are identical and the longer
trials resume from what the truncated job published. (A ``schedule.stop_after_stage`` key would
have needed a hook in training; the truncated list needs none.)
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

_STAGE_KEY = re.compile(r"^schedule\.stages\.(\d+)(?:\.|$)")


def override_key(override: str) -> str:
    """``+a.b=1`` -> ``a.b`` (Hydra's add/delete prefixes dropped)."""
    return override.partition("=")[0].lstrip("+~")


def stage_index(override: str) -> int | None:
    """0-based stage an override addresses (``schedule.stages.1.lr=...`` -> 1), else ``None``."""
    m = _STAGE_KEY.match(override_key(override))
    return int(m.group(1)) if m else None


def is_per_stage(override: str) -> bool:
    return stage_index(override) is not None or override_key(override) == "schedule.stages"


def hydra_literal(value: Any) -> str:
    """``value`` in Hydra's override grammar (round-trips ints, floats, bools, None, strings,
    lists and dicts)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # 1e-05, nan, inf: all in the grammar
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_literal(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as a Hydra override value")


def truncated_overrides(overrides: Sequence[str], stages: Sequence[dict[str, Any]], k: int) -> list[str]:
    """The overrides of a trial cut to its first ``k`` stages (``stages``: its composed entries)."""
    keep = [o for o in overrides if not is_per_stage(o)]
    return keep + [f"schedule.stages={hydra_literal([dict(s) for s in stages[:k]])}"]


def stage_label(overrides: Sequence[str], k: int) -> str:
    """What the swept overrides say about stage ``k`` (1-based): ``lr=1e-05``."""
    parts = []
    for o in overrides:
        if stage_index(o) == k - 1:
            key, _, value = o.partition("=")
            parts.append(f"{override_key(key).split('.', 3)[-1]}={value}")
    return " ".join(parts) or f"stage {k}"


def trial_level(overrides: Sequence[str]) -> list[str]:
    return [o for o in overrides if not is_per_stage(o)]


def select_trials(n: int, max_trials: int | None, seed: int) -> list[int]:
    """Indices of the trials searched: all, or a seeded sample of ``max_trials`` (kept in order)."""
    if max_trials is None or max_trials >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), max_trials))
