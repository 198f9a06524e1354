"""ModelZoo 2.10 YAML for lora, full, masked + unstructured 0.7 (static and gmp), stages, float32 and
cbfloat16 on tiny_llama, llama3_8b, mistral_7b and mixtral_8x7b: the structural facts checked against
ModelZoo's source, and the gmp level schedule under cerebras.pytorch's update semantics."""

from __future__ import annotations

import pytest

from ftlab.core.errors import ConfigError
from ftlab.launchers.cerebras_options import CerebrasOptions
from ftlab.launchers.cerebras_params import (
    base_mask,
    check_supported,
    cszoo_params,
    gmp_levels,
    gmp_schedule,
)
from ftlab.preflight.compose import compose_run

OPTS = CerebrasOptions(train_data_dir="/d/train", checkpoint_path="/cb/base.mdl")
GMP = CerebrasOptions(train_data_dir="/d/train", checkpoint_path="/cb/base.mdl", sparsity_algorithm="gmp",
                      sparsity_update_freq=10)
CPU = CerebrasOptions(train_data_dir="/d/train", checkpoint_path="/cb/base.mdl", target_device="CPU")
PRESETS = {"tiny_llama": 1e-6, "llama3_8b": 1e-5, "mistral_7b": 1e-5, "mixtral_8x7b": 1e-5}
VARIANTS = {
    "lora": (["adapter=lora"], OPTS),
    "full": (["adapter=full"], OPTS),
    "masked_static": (["adapter=masked", "sparsity=unstructured", "sparsity.level=0.7"], OPTS),
    "full_gmp": (["adapter=full", "sparsity=unstructured", "sparsity.level=0.7"], GMP),
    "stages": (["adapter=lora", "schedule=stages", "schedule.stages=[{iters:30,lr:1e-3},{iters:70,lr:1e-4}]"], OPTS),
    "fp32": (["adapter=lora", "hardware.precision=float32"], CPU),  # a CS-X would run bfloat16: refused there
    "cbfloat16": (["adapter=lora", "hardware.precision=cbfloat16"], OPTS),
}
HF_LEAVES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MODEL_FIELDS_FORBIDDEN = ("mixed_precision", "fp16_type")  # trainer/utils.py prune list; extra="forbid"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_yaml_matrix(preset):
    for variant, (overrides, opts) in VARIANTS.items():
        # ModelZoo's LoRA reaches no fused expert: mixtral on a CS-X adapts attention (issue 21)
        narrow = ["model.target_modules=[q_proj,k_proj,v_proj,o_proj]"] if preset == "mixtral_8x7b" else []
        cfg = compose_run(["hardware=cerebras", f"model={preset}", "train.max_steps=100", *overrides, *narrow])
        init = cszoo_params(cfg, opts)["trainer"]["init"]
        model, why = init["model"], f"{preset}/{variant}"
        assert not set(MODEL_FIELDS_FORBIDDEN) & set(model), why
        assert model["layer_norm_epsilon"] == PRESETS[preset], why
        assert model["name"] == cfg.model.arch
        if cfg.model.arch == "mixtral":  # the fused-expert layout cszoo checkpoint convert writes
            assert model["moe"] == {"num_experts": 8, "top_k": 2, "load_balancing_loss_coef": 0.0,
                                    "moe_implementation": "optimized"}
        precision = init["precision"]
        if cfg.hardware.precision == "float32":
            assert precision["enabled"] is False and "fp16_type" not in precision, why
        else:
            assert precision["enabled"] is True and precision["fp16_type"] == str(cfg.hardware.precision), why
        if cfg.adapter.name in ("lora", "masked"):
            groups = [e["target_modules"] for e in init["callbacks"][0]["Lora"]["lora_params"]]
            expected = [["MultiQueryAttention", "Linear"]]  # every preset uses grouped-query attention
            if preset != "mixtral_8x7b":  # mixtral is narrowed to attention above
                expected.append(["FeedForwardNetwork", "Linear"])
            assert groups == expected, why
            assert init["checkpoint"]["disable_strict_checkpoint_loading"] is True, why
        else:
            assert "callbacks" not in init, why
        if variant in ("masked_static", "full_gmp"):
            # a frozen base is masked before the run (base_mask), a trained one by the YAML's block
            s = base_mask(cfg, opts) if variant == "masked_static" else init["sparsity"]
            assert ("sparsity" in init) == (variant == "full_gmp"), why
            assert s["param_filter"] and all(g.startswith("*transformer_decoder.layers.*.") for g in s["param_filter"])
            assert not any(leaf in g for g in s["param_filter"] for leaf in HF_LEAVES), why
            assert init["checkpoint"]["disable_strict_checkpoint_loading"] is True, why
            if variant == "masked_static":
                assert (s["algorithm"], s["sparsity"]) == ("static", 0.7)
            else:
                assert s["algorithm"] == "gmp" and gmp_levels(s, 100)[-1] == pytest.approx(0.7, abs=1e-12)
        if variant == "stages":
            (seq,) = init["schedulers"]
            assert [next(iter(p)) for p in seq["SequentialLR"]["schedulers"]] == ["ConstantLR", "ConstantLR"]
            assert init["loop"]["max_steps"] == 100


@pytest.mark.parametrize(("level", "steps", "freq"), [(0.7, 100, 10), (0.5, 100, 100), (0.7, 97, 10),
                                                      (0.9, 1000, 7), (0.3, 5, 1)])
def test_gmp_reaches_the_level_at_the_last_update_and_never_overshoots(level, steps, freq):
    block = gmp_schedule(level, steps, freq)
    levels = gmp_levels(block, steps)
    last_update = steps - steps % freq
    assert levels[last_update - 1] == pytest.approx(level, abs=1e-12)
    assert levels[-1] == pytest.approx(level, abs=1e-12)
    assert all(a <= b for a, b in zip(levels, levels[1:])) and max(levels) <= level + 1e-12
    assert levels[last_update - 2] < level  # the step before the last update is still below it


def test_the_old_gmp_emission_under_prunes_as_reported():
    """Issue 12 row 4: slope level/max_steps with stop=max_steps reached 0.000 (freq 100) and 0.450
    (freq 10) of 0.5 at 100 steps: the same semantics give those numbers."""
    def old(freq):
        return {"sparsity": {"type": "linear", "init": 0.0, "slope": 0.5 / 100}, "update": {"freq": freq, "stop": 100}}
    assert gmp_levels(old(100), 100)[-1] == 0.0
    assert gmp_levels(old(10), 100)[-1] == pytest.approx(0.45)


def test_gmp_that_cannot_work_is_refused():
    cfg = compose_run(["hardware=cerebras", "adapter=masked", "sparsity=unstructured", "sparsity.level=0.7"])
    with pytest.raises(ConfigError) as err:  # LoRA freezes the base: GMP skips weights without gradients
        check_supported(cfg, GMP)
    assert err.value.key == "hydra.launcher.sparsity_algorithm" and "gradients" in str(err.value)
    with pytest.raises(ConfigError) as err:
        gmp_schedule(0.5, 5, 10)
    assert err.value.key == "hydra.launcher.sparsity_update_freq"


def test_per_projection_lora_targets_are_refused_before_launch():
    cfg = compose_run(["hardware=cerebras", "adapter=lora", "adapter.target_modules=[q_proj,v_proj]"])
    with pytest.raises(ConfigError) as err:
        cszoo_params(cfg, OPTS)
    assert err.value.key == "adapter.target_modules" and "MultiQueryAttention" in str(err.value)
    # Mixtral's experts are fused tensors, not linears: the MLP names are refused at composition already
    with pytest.raises(ConfigError) as err:
        cfg = compose_run(["hardware=cerebras", "adapter=lora", "model=mixtral_8x7b",
                           "model.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]"])
        cszoo_params(cfg, OPTS)
    assert err.value.key == "model.target_modules"
