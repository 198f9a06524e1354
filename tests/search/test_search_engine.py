"""The search loop (:func:`ftlab.search.engine.run_search`) with real config composition and a
launcher that writes what a job writes (``reuse_record.json``, ``metrics.json``) from a
synthetic metric instead of training: decisions, job batches, and a crash in the middle of a
rung followed by the same command."""

from __future__ import annotations

import functools
import itertools
import json
import math
from pathlib import Path

import pytest

from conftest import compose
from ftlab.callbacks.history import write_json
from ftlab.reuse.steps import as_plain, run_steps
from ftlab.search.engine import run_search
from ftlab.search.options import SearchOptions
from ftlab.search.state import STATE_FILE

BASE = ["schedule=stages", "schedule.stages=[{iters:4,lr:1e-3},{iters:3,lr:1e-3},{iters:3,lr:1e-3}]"]
LRS = ("1e-4", "1e-3", "1e-2")
BEST = (-3.0, -2.0, -4.0)  # log10 lr each stage "wants"
GRID = [[*BASE, *(f"schedule.stages.{i}.lr={v}" for i, v in enumerate(combo))]
        for combo in itertools.product(LRS[:2], LRS, LRS[1:])]  # 2 x 3 x 2 = 12 trials


@functools.cache
def plain(overrides: tuple[str, ...]) -> dict:
    """Composed once per override list (composition dominates this module's time)."""
    return as_plain(compose(*overrides))


def loss(stages: list[dict]) -> float:
    """Separable in the stages, so pruning at every boundary finds the global optimum."""
    return sum((math.log10(s["lr"]) - BEST[i]) ** 2 for i, s in enumerate(stages))


class FakeLauncher:
    def __init__(self, sweep_dir: Path, crash_after: int | None = None):
        self.sweep_dir, self.crash_after = sweep_dir, crash_after
        self.batches: list[list[int]] = []
        self.published: set[str] = set()

    def __call__(self, batch: list[list[str]], first: int) -> list[int]:
        self.batches.append(list(range(first, first + len(batch))))
        for n, overrides in enumerate(batch):
            if self.crash_after is not None and n == self.crash_after:
                raise KeyboardInterrupt("killed mid-rung")
            c = plain(tuple(overrides))
            keys = [s.key for s in run_steps(c).stages]
            stages = c["schedule"]["stages"]
            job_dir = self.sweep_dir / str(first + n)
            job_dir.mkdir(parents=True)
            write_json(job_dir / "reuse_record.json", {
                "job_num": first + n, "overrides": overrides,
                "stages": [{"iters": s["iters"], "key": k, "cache_hit": k in self.published, "runtime_s": 0.5}
                           for s, k in zip(stages, keys)]})
            self.published.update(keys)
            write_json(job_dir / "metrics.json", {"val_loss": loss(stages)})
        return list(range(first, first + len(batch)))


def search(sweep_dir: Path, launcher: FakeLauncher):
    return run_search(GRID, SearchOptions(eta=2), sweep_dir, lambda o: plain(tuple(o)), launcher)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    sweep = tmp_path_factory.mktemp("ref")
    launcher = FakeLauncher(sweep)
    return search(sweep, launcher), launcher


def test_rungs_batches_and_the_best_trial(reference):
    result, launcher = reference
    best = min(range(len(GRID)), key=lambda t: loss(plain(tuple(GRID[t]))["schedule"]["stages"]))
    assert result.state.best == best
    # 12 trials -> rung 1: 2 prefixes, keep 6 (one prefix) -> rung 2: 3 prefixes of 2 trials, keep 3
    # (the best prefix and the lower-index trial of the runner-up) -> rung 3: 3 prefixes
    assert [len(r.evals) for r in result.state.rungs] == [2, 3, 3]
    assert [len(r.alive) for r in result.state.rungs] == [12, 6, 3]
    assert launcher.batches == [[0, 1], [2, 3, 4], [5, 6, 7]]  # one launcher batch per rung
    assert result.summary["executed_iters"] == result.prediction.halving == 2 * 4 + 3 * 3 + 3 * 3
    # rung-k jobs train k stages: the truncated ones carry the composed stage list only
    job = result.state.rungs[0].evals[0].overrides
    assert job[-1].startswith("schedule.stages=[{iters:4,") and job[-1].count("{iters") == 1
    assert not any(o.startswith("schedule.stages.") for o in job)


def test_a_crash_mid_rung_then_the_same_command_reaches_the_same_decisions(tmp_path, reference):
    ref, _ = reference
    sweep = tmp_path / "sweep"
    crashing = FakeLauncher(sweep, crash_after=1)
    first = crashing
    with pytest.raises(KeyboardInterrupt):
        search(sweep, first)  # rung 1: job 0 finished, job 1 never ran
    state = json.loads((sweep / STATE_FILE).read_text())
    assert state["next_job"] == 2 and state["rungs"][0]["evals"][0]["run_dir"] is None
    again = FakeLauncher(sweep)
    again.published = crashing.published
    result = search(sweep, again)
    assert again.batches[0] == [2]  # job 0 read back from its run dir, job 1 relaunched as job 2
    assert [r.promoted for r in result.state.rungs] == [r.promoted for r in ref.state.rungs]
    assert result.state.best == ref.state.best
    assert [[e.metric for e in r.evals] for r in result.state.rungs] == \
        [[e.metric for e in r.evals] for r in ref.state.rungs]
    # and once more: nothing left to launch
    idle = FakeLauncher(sweep)
    assert search(sweep, idle).state.best == ref.state.best and idle.batches == []
