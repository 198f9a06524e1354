"""The planner's disk figures (issue 10): bytes of one trainable-only state, checkpoints per run,
cache bytes per run and for the sweep (each shared entry once)."""

from __future__ import annotations

from ftlab.adapters.params import (
    STATE_OVERHEAD_BYTES,
    model_facts,
    state_bytes,
    trainable_params,
    weights_bytes,
)
from ftlab.plan.options import PlanOptions
from ftlab.plan.planner import checkpoint_count, epoch_steps, make_plan
from ftlab.plan.report import to_json, to_markdown
from ftlab.preflight.compose import compose_run

TINY = ["task.num_examples=100", "train.batch_size=8", "train.save_adapter=false", "eval.generate=false"]


def test_checkpoint_count_follows_periodic_checkpoint():
    assert checkpoint_count(30, 10, 24, True, None) == 4  # steps 10, 20, 30 + the end of epoch 0 (24)
    assert checkpoint_count(30, 10, 24, True, 2) == 2
    assert checkpoint_count(30, None, 24, True, None) == 1  # epoch ends only
    assert checkpoint_count(25, 10, None, False, None) == 3  # 10, 20 + the final step 25
    assert checkpoint_count(20, 10, 10, True, None) == 4  # a step that is also an epoch end: two dirs
    assert checkpoint_count(0, 10, 10, True, None) == 0


def test_state_bytes_and_epoch_steps():
    assert state_bytes(1000, "lora", "bfloat16") == 12_000 + STATE_OVERHEAD_BYTES  # fp32 adapter over 16-bit base
    assert state_bytes(1000, "full", "bfloat16") == 6_000 + STATE_OVERHEAD_BYTES  # full: the model's dtype
    assert state_bytes(0, "none", "float32") == 0
    assert epoch_steps(compose_run(TINY)) == 80 // 8


def test_sweep_disk_counts_each_shared_entry_once():
    stages = ["schedule=stages", "schedule.stages=[{iters:4,lr:1e-3},{iters:4,lr:1e-3}]", "base.enabled=true",
              "base.steps=5", "train.save_every_n_steps=4", "train.save_epoch_checkpoints=false"]
    plan = make_plan([*TINY, *stages, "schedule.stages.1.lr=1e-4,2e-4"], PlanOptions(prior_dirs=[]))
    a, b = plan.runs
    cfg = compose_run([*TINY, *stages])
    mf = model_facts(cfg.model)
    one = state_bytes(trainable_params(mf, cfg), "lora", "float32")
    base = weights_bytes(mf, "float32")
    assert a.state_bytes == b.state_bytes == one and a.checkpoints == 2 and a.checkpoint_bytes == 2 * one
    assert a.cache_bytes == base + 2 * one  # its base + its two stages
    t = plan.totals
    assert t["checkpoint_bytes"] == 4 * one
    assert t["cache_bytes"] == base + 3 * one  # base and stage 1 shared, two stage-2 branches
    assert t["cache_bytes_unshared"] == 2 * (base + 2 * one)
    md = to_markdown(plan)
    assert "## Disk" in md and "| checkpoints | cache |" in md.splitlines()[5]
    assert to_json(plan)["runs"][0]["disk"] == {"state_bytes": one, "checkpoints": 2, "checkpoint_bytes": 2 * one,
                                                "cache_bytes": base + 2 * one}


def test_runs_without_stages_cache_nothing_of_their_own():
    plan = make_plan([*TINY, "train.max_steps=10", "adapter=full"], PlanOptions(prior_dirs=[]))
    (r,) = plan.runs
    assert r.cache_bytes == 0 and plan.totals["cache_bytes"] == 0  # a loaded base, a private train step
    assert r.state_bytes == 3 * 4 * r.trainable + STATE_OVERHEAD_BYTES
    assert r.checkpoints == 1  # the epoch end at step 10
