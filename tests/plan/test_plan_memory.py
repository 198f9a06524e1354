"""The planner's memory estimate follows checkpointing, the base dtype and k-bit quantisation."""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest
import torch

from conftest import compose
from ftlab.adapters.params import (
    KBIT_BYTES,
    activation_mb_per_sample,
    memory_mode,
    model_facts,
    static_memory_mb,
    trainable_params,
    weight_bytes,
)
from ftlab.core.errors import ConfigError
from ftlab.plan.estimate import RunFacts, memory_match
from ftlab.plan.priors import Prior


def test_checkpointing_keeps_block_inputs_only() -> None:
    facts = model_facts(compose("model=llama3_8b").model)
    full = activation_mb_per_sample(facts, 2048, "bfloat16")
    ckpt = activation_mb_per_sample(facts, 2048, "bfloat16", checkpointing=True)
    s, h, i, L = 2048, 4096, 14336, 32
    block = s * (7 * h + 4 * i) * 2  # bf16 values a block keeps per token (ftlab.adapters.params)
    logits = 3 * s * facts.vocab * 4
    assert facts.intermediate == i
    assert full == pytest.approx((L * block + logits) / 2**20)
    assert ckpt == pytest.approx((L * s * h * 2 + 3 * block + logits) / 2**20)
    assert ckpt < 0.35 * full  # 32 block inputs + 3 blocks recomputed against 32 full blocks


def test_kbit_base_weights() -> None:
    facts = model_facts(compose("model=llama3_8b").model)
    linear = sum(i * o for _, i, o in facts.linears)
    assert 0.85 < linear / facts.total < 0.9  # 7B of 8B sit in the decoder linears
    nf4 = weight_bytes(facts, "bfloat16", "nf4")
    assert nf4 == pytest.approx(linear * KBIT_BYTES["nf4"] + (facts.total - linear) * 4)
    assert weight_bytes(facts, "bfloat16", "int8") > nf4
    # 7B linears at ~0.52 B + 1B of embedding/LM head upcast to fp32 by the k-bit preparation
    assert nf4 / weight_bytes(facts, "bfloat16") == pytest.approx(0.49, abs=0.02)


def test_full_fine_tuning_counts_the_weights_once() -> None:
    cfg = compose("model=tiny_llama", "adapter=full")
    facts = model_facts(cfg.model)
    trainable = trainable_params(facts, cfg)
    assert trainable == facts.total
    assert static_memory_mb(facts, trainable, "bfloat16", full=True) == pytest.approx(facts.total * 16 / 2**20)


def test_default_targets_count_the_decoder_linears_of_any_architecture() -> None:
    cfg = compose("model=tiny_gpt_neox", "adapter=lora", "adapter.r=4")
    facts = model_facts(cfg.model)
    h = 128
    per_layer = 4 * ((h + 3 * h) + (h + h) + (h + 2 * h) + (2 * h + h))  # qkv, dense, h->4h (256), 4h->h
    assert trainable_params(facts, cfg) == 2 * per_layer
    moe = compose("model=tiny_qwen2_moe", "adapter=lora", "adapter.r=4")
    mf = model_facts(moe.model)
    assert not any(n.endswith(("mlp.gate", "shared_expert_gate")) for n in mf.default_targets)


def test_plan_shows_the_memory_features() -> None:
    from ftlab.plan.options import PlanOptions
    from ftlab.plan.planner import make_plan

    def peak(*overrides: str) -> float:
        plan = make_plan(["model=llama3_8b", "task.max_length=2048", "train.batch_size=4", *overrides],
                         PlanOptions(controls=False), priors=[])
        return plan.runs[0].memory.peak_mb

    dense = peak()
    assert peak("train.gradient_checkpointing=true") < 0.5 * dense
    if importlib.util.find_spec("bitsandbytes") is not None:  # composing nf4 checks bitsandbytes is usable
        assert peak("model.quantization=nf4") < dense - 7000  # 16 GB of bf16 weights -> 7.8 GB


def test_priors_calibrate_only_the_same_memory_mode() -> None:
    run = RunFacts("m", "cpu", "cpu", 1, "32-true", 8, 1, "lora", "t", 64, 100,
                   memory_mode=memory_mode("float32", None, True))
    prior = Prior("m", "cpu", "cpu", 1, "32-true", 8, 1, "lora", "t", 64, 10, 1.0, 50.0, 100, 900.0, path="p",
                  memory_mode=memory_mode("float32", None, False))
    assert not memory_match(run, prior)
    assert memory_match(run, dataclasses.replace(prior, memory_mode=run.memory_mode))
    assert memory_mode(None, None, None) == memory_mode("float32", None, False)  # runs older than the keys


def test_fsdp_plan_shards_per_device_and_says_whether_it_fits() -> None:
    from ftlab.plan.options import PlanOptions
    from ftlab.plan.planner import make_plan
    from ftlab.plan.report import to_markdown

    def plan(*overrides: str):
        return make_plan(["model=mixtral_8x7b", *overrides], PlanOptions(controls=False), priors=[])

    sharded, replicated = plan("hardware=fsdp", "hardware.devices=8"), plan("hardware=multi_gpu", "hardware.devices=8")
    facts = model_facts(sharded.runs[0].cfg.model)
    assert 1.4e9 < facts.block_params < 1.5e9  # 8 experts x 3 x 4096 x 14336 + attention
    s, r = sharded.runs[0].memory, replicated.runs[0].memory
    assert s.fits is True and r.fits is False
    assert s.fixed_mb == pytest.approx(r.fixed_mb / 8 + 2 * facts.block_params * 2 / 2**20)
    text = to_markdown(sharded)
    assert "FSDP" in text and "it fits in" in text
    assert "does NOT fit" in to_markdown(replicated)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_fsdp_without_cuda_is_refused_in_one_line(tmp_path) -> None:
    from ftlab.recipe.run import run

    cfg = compose("hardware=fsdp")  # accelerator=gpu: FSDP trains here only with hardware.accelerator=cpu
    with pytest.raises(ConfigError) as err:
        run(cfg, run_dir=tmp_path / "run")
    assert err.value.key == "hardware" and "needs a CUDA device" in str(err.value)
    assert not (tmp_path / "run").exists()
