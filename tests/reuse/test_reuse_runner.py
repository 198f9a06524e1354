"""The plan of steps and its one runner (issue 10, deliverable 2): the caching policy in one place,
the flags every consumer reads, lookup-or-build with records, node-local copies for any kind."""

from __future__ import annotations

import json
from pathlib import Path

from ftlab.artifacts.store import ArtifactStore
from ftlab.plan.stages import trial_chain
from ftlab.preflight.compose import compose_run
from ftlab.preflight.reuse_checks import uses_cache
from ftlab.reuse.runner import StepRunner
from ftlab.reuse.stages import reuse_applies
from ftlab.reuse.steps import as_plain, cache_policy, run_steps

STAGES = ["schedule=stages", "schedule.stages=[{iters:2,lr:1e-3},{iters:2,lr:5e-4}]"]
SPARSE_BASE = ["base.enabled=true", "sparsity=unstructured"]


def test_policy_flags_every_cacheable_step_and_nothing_else():
    c = as_plain(compose_run([*STAGES, *SPARSE_BASE]))
    steps = run_steps(c)
    assert cache_policy(c) == "" and steps.why_not_cached == ""
    assert [s.kind for s in steps.all() if s.cached] == ["base", "mask", "stage", "stage"]
    assert not steps.model.cached and not steps.train.cached and steps.uses_cache
    ddp = as_plain(compose_run([*STAGES, *SPARSE_BASE, "hardware.devices=2"]))
    off = as_plain(compose_run([*STAGES, *SPARSE_BASE, "reuse.enabled=false"]))
    for cfg, why in ((ddp, "distributed training (devices x nodes > 1)"), (off, "reuse.enabled=false")):
        s = run_steps(cfg)
        assert cache_policy(cfg) == s.why_not_cached == why and not s.uses_cache
        assert reuse_applies(cfg, s) == (False, why)
        assert all("~trial" in node.key for node in trial_chain(cfg)[1:])  # the planner: nothing shared
    assert reuse_applies(c, steps) == (True, "")
    assert all("~trial" not in node.key for node in trial_chain(c))


def test_uses_cache_follows_the_policy():
    assert uses_cache(compose_run(STAGES)) and uses_cache(compose_run(SPARSE_BASE))
    assert not uses_cache(compose_run([]))  # nothing cacheable
    assert not uses_cache(compose_run([*STAGES, "hardware.devices=2"]))  # DDP: the store is not used


def _json_step(runner: StepRunner, kind: str, calls: list[str]) -> dict:
    step = getattr(runner.steps, kind)

    def compute() -> dict:
        calls.append("compute")
        return {"kind": kind, "value": 1}

    def read(artifact: Path) -> dict:
        calls.append("read")
        return {**json.loads((artifact / "x.json").read_text()), "read": True}

    return runner.run(step, compute, lambda out, artifact: (artifact / "x.json").write_text(json.dumps(out)), read)


def test_runner_builds_once_reads_back_and_records(tmp_path):
    cfg = compose_run([*SPARSE_BASE, f"paths.cache_dir={tmp_path / 'cache'}"])
    calls: list[str] = []
    first = StepRunner(cfg)
    assert _json_step(first, "mask", calls) == {"kind": "mask", "value": 1, "read": True}  # a build is read back
    second = StepRunner(cfg)
    assert _json_step(second, "mask", calls)["read"] is True
    assert calls == ["compute", "read", "read"]  # built once, then a hit
    a, b = first.records["mask"], second.records["mask"]
    assert (a["cache_hit"], b["cache_hit"]) == (False, True) and a["key"] == b["key"] == first.steps.mask.key
    assert a["digest"] == b["digest"] == ArtifactStore(tmp_path / "cache").lookup(a["key"]).digest()
    assert second.digests() == {"base": None, "mask": a["digest"], "init": None}
    assert second.record()["mask"] == b and second.record()["stages"] == []


def test_runner_computes_in_memory_when_not_cached(tmp_path):
    cfg = compose_run([*SPARSE_BASE, "reuse.enabled=false", f"paths.cache_dir={tmp_path / 'cache'}"])
    calls: list[str] = []
    runner = StepRunner(cfg)
    assert _json_step(runner, "base", calls) == {"kind": "base", "value": 1}
    assert calls == ["compute"] and not (tmp_path / "cache").exists()
    rec = runner.records["base"]
    assert rec["cached"] is False and rec["why_not_cached"] == "reuse.enabled=false" and rec["digest"] is None


def test_node_local_copy_for_any_kind(tmp_path):
    cfg = compose_run([*SPARSE_BASE, f"paths.cache_dir={tmp_path / 'shared'}",
                       f"paths.local_cache_dir={tmp_path / 'local'}"])
    runner = StepRunner(cfg)
    calls: list[str] = []
    for kind in ("base", "mask"):
        _json_step(runner, kind, calls)
        key = getattr(runner.steps, kind).key
        local = ArtifactStore(tmp_path / "local").lookup(key)
        assert local is not None and local.digest() == ArtifactStore(tmp_path / "shared").lookup(key).digest()
