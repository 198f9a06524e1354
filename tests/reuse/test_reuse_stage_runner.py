"""Training stages go through the run's one StepRunner: lookups, locks, staging, publishing, the
node-local copy of the resume entry and the record. No training here: entries are published
through the runner's own primitives, as StagePublisher does at a stage's last step."""

from __future__ import annotations

import json
from pathlib import Path

from ftlab.artifacts.store import ArtifactStore
from ftlab.preflight.compose import compose_run
from ftlab.reuse.runner import StepRunner
from ftlab.reuse.stages import StageRun

STAGES = ["+experiment=stage_reuse_demo"]


def _publish(runner: StepRunner, i: int) -> None:
    step = runner.steps.stages[i]
    staging = runner.staging(step)
    (staging.artifact / "meta.json").write_text(json.dumps({"stage_idx": i + 1}))
    runner.publish(step, staging, meta={"runtime_s": 0.0})


def test_stage_resume_entry_is_copied_node_locally_and_recorded(tmp_path):
    cfg = compose_run([*STAGES, f"paths.cache_dir={tmp_path / 'shared'}", f"paths.local_cache_dir={tmp_path / 'local'}"])
    _publish(StepRunner(cfg), 0)  # an earlier trial published stage 1
    runner = StepRunner(cfg)
    with StageRun(runner, tmp_path / "run", cfg.schedule) as stages:
        stages.plan()
        key = runner.steps.stages[0].key
        assert stages.enabled and stages.cached == 1 and stages.start_step == stages.stages[0].end
        assert Path(stages.resume_entry.root).is_relative_to(tmp_path / "local")  # read from node-local disk
        assert ArtifactStore(tmp_path / "local").lookup(key).digest() == ArtifactStore(tmp_path / "shared").lookup(key).digest()
        assert list(stages.locks) == [1]  # this trial builds stage 2 and holds its lock
        assert runner.stages == []  # recorded when the fit ends
    assert not stages.locks  # released on exit
    rec = runner.record()["stages"]
    assert [(s["stage_idx"], s["cache_hit"], s["key"]) for s in rec] == [
        (1, True, runner.steps.stages[0].key), (2, False, runner.steps.stages[1].key)]


def test_uncached_stages_use_no_store(tmp_path):
    cfg = compose_run([*STAGES, "reuse.enabled=false", f"paths.cache_dir={tmp_path / 'cache'}"])
    runner = StepRunner(cfg)
    assert runner.store is None
    with StageRun(runner, tmp_path / "run", cfg.schedule) as stages:
        stages.plan()
        assert not stages.enabled and stages.resume_entry is None and not stages.locks
    assert [s["cache_hit"] for s in runner.record()["stages"]] == [False, False]
    assert not (tmp_path / "cache").exists()


def test_a_run_without_stages_records_its_training_as_one_stage(tmp_path):
    runner = StepRunner(compose_run([f"paths.cache_dir={tmp_path / 'cache'}"]))
    assert runner.steps.stages == [] and runner.store is None  # nothing cached: no store, no stage machinery
    runner.record_training(40, 1e-3, 2.5)
    assert runner.record()["stages"] == [{"stage_idx": 1, "iters": 40, "lr": 1e-3, "key": "", "cache_hit": False,
                                          "runtime_s": 2.5, "name": None, "parent": None}]
