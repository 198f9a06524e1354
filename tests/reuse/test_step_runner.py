"""The step runner (``ftlab.reuse.runner.StepRunner``) beyond tests/reuse/test_reuse_runner.py:
two processes contending for one key (the build runs once; the loser waits on the lock and hits,
shown by event files, not by timing), a failing build or write publishing nothing, a damaged entry
failing verification and being rebuilt, and the random streams it leaves untouched."""

from __future__ import annotations

import json
import multiprocessing as mp
import random
import time
from pathlib import Path

import pytest
import torch

from ftlab.artifacts.store import ArtifactStore
from ftlab.preflight.compose import compose_run
from ftlab.reuse.runner import StepRunner
from ftlab.reuse.steps import as_plain

SPARSE_BASE = ["base.enabled=true", "sparsity=unstructured"]
WAIT_S = 60  # an upper bound for events that take milliseconds; a broken lock fails, not hangs


def plain_cfg(tmp_path: Path, *extra: str) -> dict:
    return as_plain(compose_run([*SPARSE_BASE, f"paths.cache_dir={tmp_path / 'cache'}", *extra]))


def write_json(out: dict, artifact: Path) -> None:
    (artifact / "out.json").write_text(json.dumps(out))


def read_json(artifact: Path) -> dict:
    return json.loads((artifact / "out.json").read_text())


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name} did not appear within {WAIT_S}s")
        time.sleep(0.01)


def events(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def contender(cfg: dict, role: str, dirs: str, result: str) -> None:
    """One process of the contention test. Every lookup of the store is logged to
    ``lookups-<role>``; the builder's build logs itself, then holds the lock until the waiter's
    first lookup has missed (so the waiter is certain to meet the held lock)."""
    d = Path(dirs)
    # a forked child must not touch CUDA (preserved_rng would, where the parent initialised it)
    torch.cuda.is_available = lambda: False
    original = ArtifactStore.lookup

    def logged_lookup(self, key):
        entry = original(self, key)
        with open(d / f"lookups-{role}", "a") as fh:
            fh.write(("hit" if entry else "miss") + "\n")
        return entry

    ArtifactStore.lookup = logged_lookup

    def compute() -> dict:
        with open(d / "builds", "a") as fh:
            fh.write(role + "\n")
        wait_for(d / "lookups-waiter")  # the waiter has looked and missed: it now queues on the lock
        return {"built_by": role}

    if role == "waiter":
        wait_for(d / "builds")  # the builder holds the lock and is building
    runner = StepRunner(cfg)
    out = runner.run(runner.steps.mask, compute, write_json, read_json)
    Path(result).write_text(json.dumps({"out": out, "record": runner.records["mask"]}))


def test_two_processes_build_the_step_once_and_the_waiter_hits(tmp_path):
    cfg = plain_cfg(tmp_path)
    ctx = mp.get_context("fork")
    procs = {role: ctx.Process(target=contender, args=(cfg, role, str(tmp_path), str(tmp_path / f"{role}.json")))
             for role in ("builder", "waiter")}
    for p in procs.values():
        p.start()
    for p in procs.values():
        p.join(WAIT_S)
        assert p.exitcode == 0
    assert events(tmp_path / "builds") == ["builder"]  # compute ran once across both processes
    # the builder missed twice (before and under the lock) and built; the waiter missed before
    # the lock, queued behind the builder, and hit under the lock
    assert events(tmp_path / "lookups-builder")[:2] == ["miss", "miss"]
    assert events(tmp_path / "lookups-waiter") == ["miss", "hit"]
    b, w = (json.loads((tmp_path / f"{r}.json").read_text()) for r in ("builder", "waiter"))
    assert b["out"] == w["out"] == {"built_by": "builder"}  # both read the one published artifact
    assert (b["record"]["cache_hit"], w["record"]["cache_hit"]) == (False, True)
    assert b["record"]["digest"] == w["record"]["digest"] is not None
    store = ArtifactStore(tmp_path / "cache")
    assert [e.key for e in store.entries()] == [b["record"]["key"]]
    assert not list((tmp_path / "cache" / "tmp").iterdir()) and not list((tmp_path / "cache" / "locks").iterdir())


@pytest.mark.parametrize("fails", ["compute", "write"])
def test_a_failing_build_publishes_nothing_and_the_next_run_builds(tmp_path, fails):
    cfg = plain_cfg(tmp_path)
    runner = StepRunner(cfg)
    step = runner.steps.mask

    def compute() -> dict:
        if fails == "compute":
            raise RuntimeError("compute failed")
        return {"v": 1}

    def half_write(out: dict, artifact: Path) -> None:
        (artifact / "half.bin").write_bytes(b"x" * 1000)
        raise RuntimeError("write failed")

    with pytest.raises(RuntimeError, match=f"{fails} failed"):
        runner.run(step, compute, half_write, read_json)
    store = ArtifactStore(tmp_path / "cache")
    assert store.lookup(step.key) is None and not (tmp_path / "cache" / "entries" / step.key).exists()
    assert not list((tmp_path / "cache" / "tmp").iterdir())  # the staging dir is discarded
    assert "mask" not in runner.records  # nothing recorded for a step that produced nothing
    again = StepRunner(cfg)
    assert again.run(again.steps.mask, lambda: {"v": 2}, write_json, read_json) == {"v": 2}
    assert again.records["mask"]["cache_hit"] is False  # the key was not locked or poisoned


def test_an_entry_that_fails_verification_is_rebuilt_not_read(tmp_path):
    cfg = plain_cfg(tmp_path)
    calls: list[int] = []

    def compute() -> dict:
        calls.append(1)
        return {"v": [1, 2, 3]}

    first = StepRunner(cfg)
    first.run(first.steps.mask, compute, write_json, read_json)
    entry = ArtifactStore(tmp_path / "cache").lookup(first.steps.mask.key)
    good = first.records["mask"]["digest"]
    (entry.artifact / "out.json").write_text(json.dumps({"v": [9, 9, 9]}))  # same size, other bytes
    assert ArtifactStore(tmp_path / "cache").problems(first.steps.mask.key)  # verification fails
    second = StepRunner(cfg)
    out = second.run(second.steps.mask, compute, write_json, read_json)
    assert out == {"v": [1, 2, 3]} and len(calls) == 2  # the damaged content was never served
    assert second.records["mask"]["cache_hit"] is False and second.records["mask"]["digest"] == good
    third = StepRunner(cfg)
    third.run(third.steps.mask, compute, write_json, read_json)
    assert len(calls) == 2 and third.records["mask"]["cache_hit"] is True


def test_a_damaged_node_local_copy_is_replaced_from_the_shared_entry(tmp_path):
    cfg = plain_cfg(tmp_path, f"paths.local_cache_dir={tmp_path / 'local'}")
    calls: list[int] = []
    runner = StepRunner(cfg)
    runner.run(runner.steps.base, lambda: calls.append(1) or {"v": 1}, write_json, read_json)
    local = ArtifactStore(tmp_path / "local").lookup(runner.steps.base.key)
    (local.artifact / "out.json").write_text("{}")
    again = StepRunner(cfg)
    assert again.run(again.steps.base, lambda: calls.append(1) or {"v": 1}, write_json, read_json) == {"v": 1}
    assert calls == [1] and again.records["base"]["cache_hit"] is True  # shared hit, local copy redone
    assert not ArtifactStore(tmp_path / "local").problems(runner.steps.base.key)


@pytest.mark.parametrize("mode", ["build", "hit", "uncached"])
def test_what_follows_a_step_draws_the_same_random_numbers(tmp_path, mode):
    """A build, a hit and an in-memory compute leave the caller's generators where they were."""
    cfg = plain_cfg(tmp_path, *(["reuse.enabled=false"] if mode == "uncached" else []))
    if mode == "hit":
        warm = StepRunner(cfg)
        warm.run(warm.steps.mask, lambda: {"v": 0}, write_json, read_json)

    def compute() -> dict:  # draws from every generator, as a mask or base pre-training would
        return {"v": [float(torch.rand(1)), random.random()]}

    torch.manual_seed(7)
    random.seed(7)
    runner = StepRunner(cfg)
    runner.run(runner.steps.mask, compute, write_json, read_json)
    after = (float(torch.rand(1)), random.random())
    torch.manual_seed(7)
    random.seed(7)
    assert after == (float(torch.rand(1)), random.random())
    assert runner.records["mask"]["cached"] is (mode != "uncached")
