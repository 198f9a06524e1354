"""The planner prints each run's plan of steps: the object the recipe executes (same keys, same
caching decisions), with the bytes its cache entries take."""

from __future__ import annotations

from ftlab.plan.options import PlanOptions
from ftlab.plan.planner import make_plan
from ftlab.plan.report import steps_table, to_json
from ftlab.preflight.compose import compose_run
from ftlab.reuse.runner import StepRunner

STAGES = ["+experiment=stage_reuse_demo", "sparsity=unstructured"]


def test_steps_table_is_the_runs_plan_of_steps():
    plan = make_plan(STAGES, PlanOptions(prior_dirs=[]))
    run = plan.runs[0]
    steps = StepRunner(compose_run(run.overrides)).steps  # what the recipe executes
    assert [s.key for s in run.step_plan.all()] == [s.key for s in steps.all()]
    rows = [line for line in steps_table(plan) if line.startswith(f"| {run.index} |")]
    assert [r.split(" | ")[1] for r in rows] == ["model", "mask", "train", "stage 1", "stage 2"]
    cached = {r.split(" | ")[1]: r.split(" | ")[3] for r in rows}
    assert cached == {"model": "no", "mask": "yes", "train": "no", "stage 1": "yes", "stage 2": "yes"}
    facts = {s["step"]: s for s in to_json(plan)["runs"][0]["step_plan"]}
    assert facts["model"]["artifact_bytes"] is None and facts["train"]["artifact_bytes"] is None
    assert facts["stage 1"]["artifact_bytes"] == run.state_bytes > 0
    assert facts["mask"]["artifact_bytes"] > 0 and facts["stage 2"]["key"] == steps.stages[1].key


def test_steps_table_says_why_a_step_is_not_cached():
    plan = make_plan([*STAGES, "reuse.enabled=false"], PlanOptions(prior_dirs=[]))
    rows = [line for line in steps_table(plan) if line.startswith("| 0 |")]
    assert all(" | no (reuse.enabled=false) | - |" in r for r in rows if " stage " in r or " mask " in r)
    assert not any(" | yes | " in r for r in rows)
