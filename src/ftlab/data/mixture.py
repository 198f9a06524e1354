"""Seeded, weighted mixtures of several sources (``task.sources``, ``task=instruct``).

``task.sources=[{path, format, columns, weight, name}, ...]``; ``format`` and ``columns`` default
to ``task.format``/``task.columns``, ``weight`` to 1, ``name`` to the file's stem. Splits are per
source: each source is split into train/val/test with the task's fractions (seeded), so an
example never sits in two splits; val and test are the union of the sources' val/test, unweighted.
The weight applies to the train part: ``weight`` w takes ``round(w x n)`` of a source's n train
examples — every example ``floor(w)`` times, then a seeded sample *without replacement* of the
remainder (w=0.5: a random half; w=2: each example twice; w=1.5: all once, half of them twice).
The train examples of all sources are then shuffled together (seeded). The realised counts per
source go to ``metrics.json`` as ``data_source_counts``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ftlab.data.formats import check_columns, check_prompt_template, get_format
from ftlab.data.task_base import Example, Splits, split_examples
from ftlab.errors import ConfigError

SOURCE_KEYS = ("path", "format", "columns", "weight", "name")


def source_specs(task_cfg: Any) -> list[dict[str, Any]]:
    """``task.sources`` with defaults filled, checked (one line naming ``task.sources[i].key``)."""
    sources = task_cfg.get("sources")
    if not isinstance(sources, (list, tuple)) and not hasattr(sources, "__len__") or not len(sources):
        raise ConfigError("task.sources", sources, "a non-empty list of {path, format, columns, weight, name}")
    out = []
    for i, src in enumerate(sources):
        key = f"task.sources[{i}]"
        if not isinstance(src, Mapping) and not hasattr(src, "items"):
            raise ConfigError(key, src, "a mapping {path, format, columns, weight, name}")
        src = dict(src)
        for k in src:
            if k not in SOURCE_KEYS:
                raise ConfigError(f"{key}.{k}", src[k], f"a key of a source: one of {list(SOURCE_KEYS)}")
        path = src.get("path")
        if not path or not Path(str(path)).exists():
            raise ConfigError(f"{key}.path", path, "an existing data file or save_to_disk directory")
        fmt = get_format(src.get("format") or task_cfg.get("format"), f"{key}.format")
        columns = dict(src.get("columns") or task_cfg.get("columns") or {})
        check_columns(fmt, columns, f"{key}.columns")
        check_prompt_template(fmt, task_cfg.get("prompt_template"))
        weight = src.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
            raise ConfigError(f"{key}.weight", weight, "a number > 0")
        out.append({"path": str(path), "format": fmt, "columns": columns, "weight": float(weight),
                     "name": str(src.get("name") or Path(str(path)).stem)})
    names = [s["name"] for s in out]
    if len(set(names)) != len(names):
        raise ConfigError("task.sources", names, "sources with distinct names (set name: for two files of one stem)")
    return out


def weighted(examples: list[Example], weight: float, rng: random.Random) -> list[Example]:
    """``round(weight x n)`` examples: ``floor(weight)`` whole copies, then a sample without
    replacement of the remainder."""
    whole = int(weight)
    rest = round(weight * len(examples)) - whole * len(examples)
    return examples * whole + rng.sample(examples, rest)


def mixture_splits(task_cfg: Any, seed: int, read: Callable[[dict[str, Any]], list[Example]]
                   ) -> tuple[Splits, dict[str, int]]:
    """The mixture's splits and the realised train count per source name."""
    train: list[Example] = []
    val: list[Example] = []
    test: list[Example] = []
    counts: dict[str, int] = {}
    for i, spec in enumerate(source_specs(task_cfg)):
        parts = split_examples(read(spec), float(task_cfg.val_fraction), float(task_cfg.test_fraction), seed + i)
        taken = weighted(parts.train, spec["weight"], random.Random(seed * 1_000_003 + i))
        counts[spec["name"]] = len(taken)
        train += taken
        val += parts.val
        test += parts.test
    random.Random(seed).shuffle(train)
    return Splits(train, val, test), counts
