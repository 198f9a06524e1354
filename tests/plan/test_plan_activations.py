"""The planner's activation estimate against measured activation memory on tiny models.

Measured: peak CPU tensor memory of one forward + backward above what was live before it
(``ftlab.plan.measure.cpu_peak_bytes``: torch.profiler's allocation records), the same quantity
``benchmarks/gpu.py`` compares on CUDA (``max_memory_allocated``). Tolerance: the estimate is
within 25 % of the measurement on every shape, plain and with gradient checkpointing.
"""

from __future__ import annotations

import pytest
import torch

from conftest import compose
from ftlab.adapters.params import activation_mb_per_sample, model_facts
from ftlab.adapters.registry import get_adapter
from ftlab.models import build_model, build_tokenizer
from ftlab.models.memory import prepare_for_training, upcast_trainable_
from ftlab.plan.measure import cpu_peak_bytes

TOLERANCE = 0.25


def test_cpu_peak_bytes_counts_what_is_live_at_once() -> None:
    x = torch.randn(500, 1000, requires_grad=True)  # 2 MB
    # x*2 and its relu are live together (the relu's backward keeps its output), then both freed
    assert cpu_peak_bytes(lambda: (x * 2).relu().sum().backward()) == pytest.approx(2 * 2_000_000, rel=0.01)
    assert cpu_peak_bytes(lambda: None) == 0


def measured_mb(cfg, batch: int, seq: int) -> float:
    model = prepare_for_training(build_model(cfg.model, build_tokenizer(cfg.model), seed=0), cfg)
    adapted = get_adapter(cfg.adapter.name).build(model, cfg.adapter, cfg)
    upcast_trainable_(adapted.model)
    net = adapted.model.train()
    ids = torch.randint(3, 200, (batch, seq), generator=torch.Generator().manual_seed(0))

    def step() -> None:
        net(input_ids=ids, labels=ids).loss.backward()

    step()  # the LoRA gradients exist from here on, as in every step after the first
    return cpu_peak_bytes(step) / 2**20


@pytest.mark.parametrize("hidden,mlp,layers", [(128, 256, 2), (256, 256, 2), (128, 512, 3)])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_activation_estimate_matches_measured_peak(hidden: int, mlp: int, layers: int, checkpointing: bool) -> None:
    cfg = compose(f"model.config.hidden_size={hidden}", f"model.config.intermediate_size={mlp}",
                  f"model.config.num_hidden_layers={layers}", f"train.gradient_checkpointing={checkpointing}")
    batch, seq = 2, 128
    estimate = batch * activation_mb_per_sample(model_facts(cfg.model), seq, "float32", checkpointing=checkpointing)
    measured = measured_mb(cfg, batch, seq)
    assert estimate == pytest.approx(measured, rel=TOLERANCE), (estimate, measured)


def test_checkpointing_estimate_is_below_plain_where_blocks_dominate() -> None:
    cfg = compose("model.config.num_hidden_layers=16")
    facts = model_facts(cfg.model)
    plain = activation_mb_per_sample(facts, 512, "float32")
    ckpt = activation_mb_per_sample(facts, 512, "float32", checkpointing=True)
    assert ckpt < 0.4 * plain


def test_packed_runs_are_planned_per_row_of_pack_length() -> None:
    from ftlab.plan.options import PlanOptions
    from ftlab.plan.planner import make_plan

    def per_sample(*overrides: str) -> float:
        plan = make_plan(["train.batch_size=4", *overrides], PlanOptions(controls=False), priors=[])
        return plan.runs[0].memory.per_sample_mb

    cfg = compose("train.packing=true", "train.pack_length=256")
    facts = model_facts(cfg.model)
    assert per_sample() == pytest.approx(activation_mb_per_sample(facts, 64, "float32"))  # task.max_length
    packed = per_sample("train.packing=true", "train.pack_length=256")
    assert packed == pytest.approx(activation_mb_per_sample(facts, 256, "float32", packed=True))
    assert packed > 4 * per_sample()  # 4x the tokens per row, plus its 256 x 256 mask
    # default pack_length: 4 x task.max_length
    assert per_sample("train.packing=true") == pytest.approx(activation_mb_per_sample(facts, 256, "float32", packed=True))


def test_report_says_a_packed_run_is_planned_per_row() -> None:
    from ftlab.plan.options import PlanOptions
    from ftlab.plan.planner import make_plan
    from ftlab.plan.report import to_markdown

    text = to_markdown(make_plan(["train.packing=true", "train.pack_length=128"], PlanOptions(controls=False), priors=[]))
    assert "MiB/row of 128 tokens" in text
