"""The planner's AdamW groups: LoRA+ (``adapter.lora_plus_ratio``) puts the B matrices (and DoRA's
magnitudes) in their own group at ratio x lr; the planner's groups and their sizes equal the groups
the run forms on the real model, and the report and plan.json print them."""

from __future__ import annotations

import pytest

from ftlab.adapters.params import ADAM_MOMENT_BYTES, model_facts, optimizer_groups
from ftlab.adapters.registry import get_adapter
from ftlab.models import build_model, build_tokenizer
from ftlab.plan.options import PlanOptions
from ftlab.plan.planner import make_plan
from ftlab.plan.report import to_json, to_markdown
from ftlab.preflight.compose import compose_run

TINY = ["task.num_examples=100", "schedule.lr=1e-3"]


@pytest.mark.parametrize(("adapter", "ratio"), [("lora", 16), ("dora", 4), ("lora", None), ("sora", None)])
def test_planned_groups_equal_the_groups_the_run_forms(adapter, ratio):
    extra = [f"adapter.lora_plus_ratio={ratio}"] if ratio is not None else []
    cfg = compose_run([*TINY, f"adapter={adapter}", *extra])
    planned = {g.name: (g.lr, g.params, g.state_bytes) for g in optimizer_groups(model_facts(cfg.model), cfg)}
    model = build_model(cfg.model, build_tokenizer(cfg.model), seed=0)
    adapted = get_adapter(adapter).build(model, cfg.adapter, cfg)
    real = {}
    for g in adapted.param_groups(1e-3, 0.0):
        n = sum(p.numel() for p in g["params"])
        real[g["name"]] = (g["lr"], n, ADAM_MOMENT_BYTES * n)
    if adapter == "sora":  # its gate group is its own business: the planner counts every value in one group
        assert set(planned) == {"main"} and planned["main"][1] == sum(v[1] for v in real.values())
        return
    assert planned == real  # lr x ratio computed the same way on both sides
    if ratio is not None:
        assert planned["lora_plus_B"][0] == pytest.approx(ratio * 1e-3)


def test_report_and_plan_json_print_the_lora_plus_group():
    plan = make_plan([*TINY, "adapter=lora", "adapter.lora_plus_ratio=16"], PlanOptions(prior_dirs=[]))
    text = to_markdown(plan)
    assert "## Optimiser groups" in text and "| 0 | lora_plus_B | 0.016 |" in text
    groups = to_json(plan)["runs"][0]["optimizer_groups"]
    assert [(g["name"], g["lr"]) for g in groups] == [("main", 1e-3), ("lora_plus_B", pytest.approx(0.016))]
    assert all(g["state_bytes"] == ADAM_MOMENT_BYTES * g["params"] > 0 for g in groups)
