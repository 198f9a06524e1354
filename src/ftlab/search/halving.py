"""Successive halving over prefixes, as pure functions (no Hydra, no files).

A trial is a chain of stages; at rung ``k`` (1-based) it is represented by its *prefix id*: the
identity of its first ``k`` stages (the stage-``k`` cache key). Trials that share a prefix share
one evaluation. Promotion ranks trials, not prefixes, so ``max(1, n // eta)`` survive each rung
as in successive halving; trials of one prefix tie and the tie is broken by trial index, which
makes every decision reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MODES = ("min", "max")


def survivors(n: int, eta: int) -> int:
    """Trials promoted out of a rung entered by ``n`` trials (at least one)."""
    return max(1, n // eta)


def rung_sizes(n_trials: int, n_rungs: int, eta: int) -> list[int]:
    """Trials alive when each rung starts: ``n, n//eta, n//eta^2, ...`` (never below one)."""
    sizes = [n_trials]
    for _ in range(n_rungs - 1):
        sizes.append(survivors(sizes[-1], eta))
    return sizes


def badness(value: float | None, mode: str) -> float:
    """Sort key: lower is better. A missing or NaN metric is worse than any number."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.inf
    return float(value) if mode == "min" else -float(value)


def promote(alive: Sequence[int], metric: Mapping[int, float | None], keep: int, mode: str) -> list[int]:
    """The ``keep`` best of ``alive`` by ``metric`` (ties: lower trial index first), in index order."""
    ranked = sorted(alive, key=lambda t: (badness(metric.get(t), mode), t))
    return sorted(ranked[:keep])


def group(alive: Sequence[int], prefix_of: Mapping[int, str]) -> dict[str, list[int]]:
    """Alive trials by prefix id, in order of the first trial of each prefix."""
    out: dict[str, list[int]] = {}
    for t in sorted(alive):
        out.setdefault(prefix_of[t], []).append(t)
    return out


@dataclass(frozen=True)
class Prediction:
    """Iterations of one search space three ways, and the prefixes halving evaluates per rung."""

    naive: int  # every trial trains every stage from scratch
    exhaustive_reuse: int  # every trial, each distinct prefix trained once
    halving: int  # successive halving at stage boundaries, each prefix once
    evaluated: list[list[str]]  # per rung, the prefix ids halving evaluates

    def as_dict(self) -> dict[str, object]:
        return {"naive_iters": self.naive, "exhaustive_reuse_iters": self.exhaustive_reuse,
                "halving_iters": self.halving,
                "halving_vs_naive": round(self.halving / self.naive, 4) if self.naive else None,
                "halving_vs_exhaustive_reuse":
                    round(self.halving / self.exhaustive_reuse, 4) if self.exhaustive_reuse else None,
                "evaluations_per_rung": [len(r) for r in self.evaluated]}


def predict(prefixes: Sequence[Sequence[str]], iters: Mapping[str, int], eta: int) -> Prediction:
    """Iterations before anything runs. ``prefixes[t][k]`` is trial ``t``'s prefix id at rung
    ``k+1`` and ``iters[id]`` the iterations of that prefix's last stage.

    Halving needs metrics to know *which* prefixes survive, but not *how many*: trials of one
    prefix tie, so promotion keeps whole prefixes; ranking the prefixes in order of appearance
    stands in for the metric. On a full grid (every prefix has as many descendants) the count is
    exact whichever prefixes win."""
    n_rungs = len(prefixes[0]) if prefixes else 0
    naive = sum(iters[p] for chain in prefixes for p in chain)
    exhaustive = sum(iters[p] for p in {p for chain in prefixes for p in chain})
    alive = list(range(len(prefixes)))
    evaluated: list[list[str]] = []
    for k in range(n_rungs):
        groups = group(alive, {t: prefixes[t][k] for t in alive})
        evaluated.append(list(groups))
        if k < n_rungs - 1:
            order = {p: i for i, p in enumerate(groups)}
            alive = promote(alive, {t: float(order[prefixes[t][k]]) for t in alive}, survivors(len(alive), eta), "min")
    halving = sum(iters[p] for rung in evaluated for p in rung)
    return Prediction(naive, exhaustive, halving, evaluated)
