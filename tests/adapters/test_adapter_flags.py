"""Capability flags of the adapter specs: each flag says what the built adapter really does, and
the rules that span adapters (planner arithmetic, k-bit bases, per-stage thresholds; Cerebras:
tests/launchers/test_cerebras_adapters.py)
follow the flags rather than adapter names."""

from __future__ import annotations

import pytest

from conftest import compose
from ftlab.adapters import all_adapters, get_adapter
from ftlab.adapters.params import model_facts, param_bytes, trainable_params
from ftlab.adapters.registry import AdapterSpec
from ftlab.core.errors import ConfigError
from ftlab.models import build_model, build_tokenizer
from ftlab.preflight.validate import validate_model_memory, validate_stage_thresholds

NAMES = sorted(a.name for a in all_adapters())
#: overrides that make an adapter composable (masked LoRA needs a sparse base)
NEEDS = {"masked": ["sparsity=random", "sparsity.level=0.5"]}


def cfg_of(name: str, *overrides: str):
    return compose(f"adapter={name}", *NEEDS.get(name, []), "task.num_examples=50", *overrides)


def built(name: str):
    cfg = cfg_of(name)
    model = build_model(cfg.model, build_tokenizer(cfg.model), seed=0)
    total = sum(p.numel() for p in model.parameters())
    return cfg, get_adapter(name).build(model, cfg.adapter, cfg), total


def test_every_builtin_family_is_registered_with_its_flags() -> None:
    assert NAMES == ["dora", "full", "lora", "masked", "none", "peft", "sdora", "sora"]
    flags = {a.name: (a.trains, a.full_weights, a.low_rank, a.gated, a.magnitude, a.masked) for a in all_adapters()}
    assert flags == {
        "full": (True, True, False, False, False, False),
        "none": (False, False, False, False, False, False),
        "lora": (True, False, True, False, False, False),
        "dora": (True, False, True, False, True, False),
        "masked": (True, False, True, False, False, True),
        "sora": (True, False, True, True, False, False),
        "sdora": (True, False, True, True, True, False),
        "peft": (True, False, False, False, False, False),
    }
    assert all(isinstance(a, AdapterSpec) and a.label for a in all_adapters())


@pytest.mark.parametrize("name", NAMES)
def test_flags_describe_the_built_adapter(name: str) -> None:
    spec = get_adapter(name)
    cfg, adapted, total = built(name)
    trainable = {n: p for n, p in adapted.model.named_parameters() if p.requires_grad}
    assert adapted.trains == spec.trains and adapted.gated == spec.gated
    if not spec.trains:
        assert not trainable
    elif spec.full_weights:
        assert sum(p.numel() for p in trainable.values()) == total
    else:
        assert 0 < sum(p.numel() for p in trainable.values()) < total
    assert spec.low_rank == any("lora_A" in n for n in trainable)
    assert spec.gated == any("lora_gate" in n for n in trainable)
    assert spec.magnitude == any("magnitude" in n for n in trainable)
    assert spec.masked == hasattr(adapted, "set_masks")
    # the planner's arithmetic (from the flags, on the meta device) counts what the adapter trains
    assert trainable_params(model_facts(cfg.model), cfg) == adapted.trainable_params()


def test_param_bytes_read_full_weights() -> None:
    assert param_bytes("full", "bfloat16") == 2 and param_bytes("lora", "bfloat16") == 4
    assert param_bytes("sdora", "float16") == 4


def test_kbit_base_allows_the_flagged_adapters_only() -> None:
    allowed = sorted(a.name for a in all_adapters() if a.supports_quantized_base)
    assert allowed == ["dora", "lora", "none", "sora"]
    for name in NAMES:
        cfg = cfg_of(name)
        cfg.model.quantization = "nf4"
        try:
            validate_model_memory(cfg)
        except ConfigError as err:
            # without usable bitsandbytes the scheme is refused first; else only the adapter is
            assert err.key == "model.quantization" or (err.key == "adapter" and name not in allowed)
        else:
            assert name in allowed


@pytest.mark.parametrize("name", NAMES)
def test_stage_thresholds_only_for_gated_adapters(name: str) -> None:
    cfg = cfg_of(name, "schedule=stages", "schedule.stages=[{iters: 2, lr: 1e-3}]")
    validate_stage_thresholds(cfg)  # no per-stage threshold: fine for every adapter
    cfg.schedule.stages[0].sparse_lambda_2 = 0.01
    if get_adapter(name).gated:
        validate_stage_thresholds(cfg)
        return
    with pytest.raises(ConfigError) as err:
        validate_stage_thresholds(cfg)
    assert err.value.key == "schedule.stages[0].sparse_lambda_2" and "only sora/sdora" in str(err.value)
