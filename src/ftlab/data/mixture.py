"""Seeded, weighted mixtures of several sources (``task.sources``, ``task=instruct``).

``task.sources=[{path, format, columns, weight, name}, ...]``; ``format`` and ``columns`` default
to ``task.format``/``task.columns``, ``weight`` to 1, ``name`` to the file's stem.

Splits (``task.mixture_shared_split``):

- ``false`` (default), per source: each source is split into train/val/test with the task's
  fractions (seeded), so every source, however small, is in val and test in its own share; val
  and test are the union of the sources' val/test.
- ``true``, shared: the sources' rows are pooled (in source order) and the pool is split once with
  the task's fractions (seeded), as LLaMA-Factory's ``val_size`` and axolotl's ``val_set_size``
  split the merged data; a source's share of val/test is then random, and a source needs only to
  contribute rows (the pool, not each source, needs 3).

Either way val and test are unweighted and an example never sits in two splits: weights apply to
the train part only. ``weight`` w takes ``round(w x n)`` of a source's n train examples
(``task.mixture_replacement``):

- ``false`` (default), without replacement: every example ``floor(w)`` times, then a seeded
  sample without replacement of the remainder (w=0.5: a random half; w=2: each example twice;
  w=1.5: all once, a random half twice). No example is seen twice more often than another.
- ``true``, with replacement: ``round(w x n)`` independent seeded draws from the n examples, as
  a sampler that picks sources by probability does (some examples repeat, some are missed, even
  for w <= 1). Use it when a weight asks for more examples than a source has and you want them
  drawn rather than copied whole.

The train examples of all sources are then shuffled together (seeded). The realised counts per
source go to ``metrics.json`` as ``data_source_counts``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftlab.core.errors import ConfigError
from ftlab.data.formats import check_columns, get_format
from ftlab.data.task_base import Example, Splits, split_examples

SOURCE_KEYS = ("path", "format", "columns", "weight", "name")
#: ``task`` keys that shape a mixture (they enter the data step's key with ``task.sources``)
MIXTURE_KEYS = ("mixture_replacement", "mixture_shared_split")


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
        weight = src.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
            raise ConfigError(f"{key}.weight", weight, "a number > 0")
        out.append({"path": str(path), "format": fmt, "columns": columns, "weight": float(weight),
                     "name": str(src.get("name") or Path(str(path)).stem)})
    names = [s["name"] for s in out]
    if len(set(names)) != len(names):
        raise ConfigError("task.sources", names, "sources with distinct names (set name: for two files of one stem)")
    return out


def weighted(examples: list[Example], weight: float, rng: random.Random, *, replacement: bool = False
             ) -> list[Example]:
    """``round(weight x n)`` examples: with ``replacement``, that many independent draws; else
    ``floor(weight)`` whole copies, then a sample without replacement of the remainder."""
    if replacement:
        return rng.choices(examples, k=round(weight * len(examples)))
    whole = int(weight)
    rest = round(weight * len(examples)) - whole * len(examples)
    return examples * whole + rng.sample(examples, rest)


def mixture_splits(task_cfg: Any, seed: int, read: Callable[[dict[str, Any]], list[Example]]
                   ) -> tuple[Splits, dict[str, int]]:
    """The mixture's splits and the realised train count per source name."""
    specs = source_specs(task_cfg)
    fractions = float(task_cfg.val_fraction), float(task_cfg.test_fraction)
    rows = [read(spec) for spec in specs]
    if task_cfg.get("mixture_shared_split"):
        parts = shared_split(rows, *fractions, seed)
    else:
        parts = [split_examples(r, *fractions, seed + i) for i, r in enumerate(rows)]
    train: list[Example] = []
    counts: dict[str, int] = {}
    for i, (spec, part) in enumerate(zip(specs, parts)):
        taken = weighted(part.train, spec["weight"], random.Random(seed * 1_000_003 + i),
                         replacement=bool(task_cfg.get("mixture_replacement")))
        counts[spec["name"]] = len(taken)
        train += taken
    random.Random(seed).shuffle(train)
    if task_cfg.get("mixture_shared_split"):  # the pool's val/test, in the pool's split order
        pooled = parts[0].pooled if parts else Splits([], [], [])
        return Splits(train, pooled.val, pooled.test), counts
    return Splits(train, [ex for p in parts for ex in p.val], [ex for p in parts for ex in p.test]), counts


@dataclass(frozen=True)
class SourceSplit:
    """One source's part of a shared split: its train rows, and the pool's splits (the same object
    for every source)."""

    train: list[Example]
    pooled: Splits


def shared_split(rows: list[list[Example]], val_fraction: float, test_fraction: float, seed: int
                 ) -> list[SourceSplit]:
    """Split the pooled rows of all sources once; each source keeps its own train rows (so its
    weight can apply), val and test are the pool's."""
    owner = [i for i, r in enumerate(rows) for _ in r]
    pool = [ex for r in rows for ex in r]
    index = split_examples(list(range(len(pool))), val_fraction, test_fraction, seed)
    pooled = Splits([], [pool[j] for j in index.val], [pool[j] for j in index.test])
    return [SourceSplit([pool[j] for j in index.train if owner[j] == i], pooled) for i in range(len(rows))]
