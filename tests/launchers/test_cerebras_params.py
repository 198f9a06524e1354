"""ftlab config -> Cerebras ModelZoo trainer YAML: structure and values, schedules, unsupported options."""

from __future__ import annotations

import math

import pytest

from ftlab.core.errors import ConfigError
from ftlab.launchers.cerebras_names import param_globs
from ftlab.launchers.cerebras_options import CerebrasOptions
from ftlab.launchers.cerebras_params import (
    _check_lora_coverage,
    base_mask,
    cerebras_lr,
    check_supported,
    cszoo_params,
    lora_target_names,
    schedulers,
)
from ftlab.preflight.compose import compose_run
from ftlab.training.schedules import lr_at

DATA = CerebrasOptions(train_data_dir="/data/train", val_data_dir="/data/val", checkpoint_path="/cb/base.mdl")
TINY_LLAMA_GLOBS = sorted(f"*transformer_decoder.layers.*.{m}.weight" for m in (
    "self_attn.proj_q_dense_layer", "self_attn.proj_k_dense_layer", "self_attn.proj_v_dense_layer",
    "self_attn.proj_output_dense_layer", "ffn.ffn.0.linear_layer_for_glu", "ffn.ffn.0.linear_layer",
    "ffn.ffn.1.linear_layer"))


def params(*overrides: str, opts: CerebrasOptions = DATA) -> dict:
    return cszoo_params(compose_run(["hardware=cerebras", *overrides]), opts)


def test_lora_yaml_structure_and_values():
    p = params("adapter=lora", "adapter.r=4", "adapter.alpha=8", "adapter.dropout=0.05",
               "schedule=cosine", "schedule.lr=2e-3", "schedule.warmup_steps=5", "schedule.min_lr_ratio=0.1",
               "train.max_steps=40", "train.batch_size=8", "train.accumulate_grad_batches=2",
               "train.save_every_n_steps=10", "train.log_every_n_steps=5", "train.weight_decay=0.01",
               "train.gradient_clip_val=0.5", "seed=7")
    assert list(p) == ["trainer"] and list(p["trainer"]) == ["init", "fit"]
    init, fit = p["trainer"]["init"], p["trainer"]["fit"]
    assert init["backend"] == {"backend_type": "CSX",
                               "cluster_config": {"num_csx": 1, "mount_dirs": [], "python_paths": []}}
    assert init["seed"] == 7
    m = init["model"]
    assert (m["name"], m["hidden_size"], m["num_hidden_layers"], m["num_heads"], m["filter_size"]) == \
        ("llama", 128, 2, 4, 256)
    assert m["vocab_size"] == 259  # ftlab's byte tokenizer
    assert m["attention_module"] == "multiquery_attention" and m["extra_attention_params"] == {"num_kv_groups": 2}
    assert (m["rotary_dim"], m["nonlinearity"], m["norm_type"]) == (32, "swiglu", "rmsnorm")
    assert "mixed_precision" not in m and "fp16_type" not in m  # ModelZoo 2.10 model configs forbid them
    assert init["optimizer"] == {"AdamW": {"betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01,
                                           "correct_bias": True}}
    (seq,) = init["schedulers"]
    kinds = [next(iter(s)) for s in seq["SequentialLR"]["schedulers"]]
    assert kinds == ["LinearLR", "CosineDecayLR"]
    cos = seq["SequentialLR"]["schedulers"][1]["CosineDecayLR"]
    assert cos == {"initial_learning_rate": 2e-3, "end_learning_rate": pytest.approx(2e-4), "total_iters": 35}
    assert init["precision"] == {"enabled": True, "fp16_type": "cbfloat16", "loss_scaling_factor": "dynamic",
                                 "max_gradient_norm": 0.5}
    assert init["loop"] == {"max_steps": 40, "eval_frequency": 40}
    assert init["checkpoint"] == {"steps": 10, "save_initial_checkpoint": False,
                                  "disable_strict_checkpoint_loading": True}
    assert init["logging"] == {"log_steps": 5}
    assert "sparsity" not in init
    common = {"r": 4, "alpha": 8.0, "dropout": 0.05, "merge_weights": False}
    assert init["callbacks"] == [{"Lora": {"lora_params": [
        {**common, "target_modules": ["MultiQueryAttention", "Linear"]},
        {**common, "target_modules": ["FeedForwardNetwork", "Linear"]}]}}]
    train = fit["train_dataloader"]
    assert train["batch_size"] == 16  # global: 8 per device x 2 accumulated
    assert (train["data_dir"], train["shuffle"], train["shuffle_seed"]) == ("/data/train", True, 7)
    assert fit["val_dataloader"]["data_dir"] == "/data/val" and fit["val_dataloader"]["shuffle"] is False


def test_masked_unstructured_07_yaml():
    p = params("adapter=masked", "sparsity=unstructured", "sparsity.level=0.7",
               "adapter.target_modules=[q_proj,k_proj,v_proj,o_proj]")
    init = p["trainer"]["init"]
    # The frozen base is masked before the run (ModelZoo masks only what its optimiser holds): the
    # block goes to the masking step, with the seed, and not into the trainer YAML.
    assert "sparsity" not in init
    cfg = compose_run(["hardware=cerebras", "adapter=masked", "sparsity=unstructured", "sparsity.level=0.7"])
    assert base_mask(cfg, DATA) == {"algorithm": "static", "init_method": "topk", "sparsity": 0.7,
                                    "param_filter": TINY_LLAMA_GLOBS, "seed": int(cfg.seed)}
    assert base_mask(compose_run(["hardware=cerebras", "adapter=full", "sparsity=unstructured"]), DATA) is None
    (lora,) = init["callbacks"][0]["Lora"]["lora_params"]
    assert lora["target_modules"] == ["MultiQueryAttention", "Linear"] and lora["r"] == 8
    assert init["checkpoint"]["disable_strict_checkpoint_loading"] is True


def test_precision_is_what_the_backend_runs():
    """float32 runs on ModelZoo's CPU/GPU backends only; the CPU backend's half type is bfloat16."""
    cpu = CerebrasOptions(train_data_dir="/d", checkpoint_path="/c.mdl", target_device="CPU")
    assert params("hardware.precision=bfloat16", opts=cpu)["trainer"]["init"]["precision"]["fp16_type"] == "bfloat16"
    for precision in ("cbfloat16", "float16"):
        with pytest.raises(ConfigError) as err:
            check_supported(compose_run(["hardware=cerebras", f"hardware.precision={precision}"]), cpu)
        assert err.value.key == "hardware.precision" and "['bfloat16', 'float32']" in str(err.value)
    with pytest.raises(ConfigError) as err:
        check_supported(compose_run(["hardware=cerebras"]), CerebrasOptions(checkpoint_path="/c.mdl",
                                                                           target_device="TPU"))
    assert err.value.key == "hydra.launcher.target_device"


def test_mixtral_lora_trains_what_ftlab_trains():
    """ModelZoo's LoRA adds exactly the parameters ftlab's own run trains, and no load-balancing loss
    (ftlab's transformers Mixtral has none without output_router_logits); a target set ModelZoo would
    cover differently is refused in one line."""
    with pytest.raises(ConfigError) as err:  # the default adapts every expert (issue 21): ModelZoo's LoRA cannot
        cszoo_params(compose_run(["hardware=cerebras", "model=mixtral_8x7b", "adapter=lora"]), DATA)
    assert err.value.key == "model.target_modules" and "fused MoE experts" in str(err.value)
    cfg = compose_run(["hardware=cerebras", "model=mixtral_8x7b", "adapter=lora",
                       "model.target_modules=[q_proj,k_proj,v_proj,o_proj]"])
    init = cszoo_params(cfg, DATA)["trainer"]["init"]
    assert init["model"]["moe"]["load_balancing_loss_coef"] == 0.0
    _check_lora_coverage(cfg, lora_target_names(cfg), "model.target_modules")  # what ftlab trains: agreed
    with pytest.raises(ConfigError) as err:  # a narrower set than ftlab's (e.g. experts left out): refused
        _check_lora_coverage(cfg, ["q_proj", "k_proj", "v_proj"], "model.target_modules")
    assert err.value.key == "model.target_modules" and "nn.Linear modules only" in str(err.value)
    assert len(str(err.value).splitlines()) == 1


def test_full_yaml_has_no_adapter_or_sparsity():
    cpu = CerebrasOptions(train_data_dir="/data/train", val_data_dir="/data/val", checkpoint_path="/cb/base.mdl",
                          target_device="CPU")
    init = params("adapter=full", "model=tiny_mistral", "hardware.precision=float32", opts=cpu)["trainer"]["init"]
    assert "callbacks" not in init and "sparsity" not in init
    assert init["model"]["name"] == "mistral" and "attention_sliding_window_length" in init["model"]
    assert init["precision"] == {"enabled": False, "max_gradient_norm": 1.0}
    assert "mixed_precision" not in init["model"]
    assert "disable_strict_checkpoint_loading" not in init["checkpoint"]  # dense full: strict loading works


def test_gmp_random_and_module_names():
    opts = CerebrasOptions(train_data_dir="/d", checkpoint_path="/c.mdl", sparsity_algorithm="gmp",
                           sparsity_update_freq=5, module_names={"q_proj": "self_attn.my_q"}, num_csx=2)
    p = params("adapter=full", "sparsity=random", "sparsity.level=0.5", "train.max_steps=50", opts=opts)
    s = p["trainer"]["init"]["sparsity"]
    assert s["algorithm"] == "gmp" and s["init_method"] == "random"
    assert s["sparsity"] == {"type": "linear", "init": 0.0, "slope": 0.5 / 50}
    assert s["update"] == {"freq": 5, "stop": 51}
    assert "*transformer_decoder.layers.*.self_attn.my_q.weight" in s["param_filter"]
    assert "*transformer_decoder.layers.*.self_attn.proj_k_dense_layer.weight" in s["param_filter"]
    assert p["trainer"]["init"]["checkpoint"]["disable_strict_checkpoint_loading"] is True  # no masks in the base
    assert p["trainer"]["init"]["backend"]["cluster_config"]["num_csx"] == 2


def test_param_globs_cover_every_layer_with_one_glob_per_kind():
    names = [f"model.layers.{i}.self_attn.q_proj.weight" for i in range(32)] + ["model.layers.3.mlp.up_proj.weight"]
    assert param_globs("llama", names) == ["*transformer_decoder.layers.*.ffn.ffn.0.linear_layer.weight",
                                           "*transformer_decoder.layers.*.self_attn.proj_q_dense_layer.weight"]


@pytest.mark.parametrize("schedule", [
    {"name": "constant", "lr": 1e-3, "warmup_steps": 0, "min_lr_ratio": 0.0},
    {"name": "constant", "lr": 1e-3, "warmup_steps": 7, "min_lr_ratio": 0.0},
    {"name": "cosine", "lr": 3e-3, "warmup_steps": 10, "min_lr_ratio": 0.1},
    {"name": "cosine", "lr": 3e-3, "warmup_steps": 0, "min_lr_ratio": 0.0},
    {"name": "linear", "lr": 2e-4, "warmup_steps": 1, "min_lr_ratio": 0.25},
    {"name": "linear", "lr": 2e-4, "warmup_steps": 4, "min_lr_ratio": 0.0},
])
def test_emitted_schedule_equals_ftlab_lr_at_every_step(schedule):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({**schedule, "stages": None})
    steps = 60
    emitted = schedulers(cfg, steps)
    for step in range(steps + 5):
        assert math.isclose(cerebras_lr(emitted, step), lr_at(step, cfg, steps), rel_tol=1e-12, abs_tol=1e-15), step


def test_stages_schedule_equals_lr_at():
    cfg = compose_run(["hardware=cerebras", "schedule=stages",
                       "schedule.stages=[{iters:5,lr:1e-3},{iters:7,lr:3e-4},{iters:3,lr:1e-4}]"])
    emitted = cszoo_params(cfg, DATA)["trainer"]["init"]["schedulers"]
    assert [next(iter(s)) for s in emitted[0]["SequentialLR"]["schedulers"]] == ["ConstantLR"] * 3
    for step in range(15):
        assert cerebras_lr(emitted, step) == lr_at(step, cfg.schedule, 15)


@pytest.mark.parametrize(("overrides", "key", "words"), [
    (["adapter=sora"], "adapter", "proximal step"),
    (["adapter=sdora"], "adapter", "proximal step"),
    (["adapter=dora"], "adapter", "DoRA"),
    (["adapter=none"], "adapter", "trains nothing"),
    (["sparsity=nm"], "sparsity.method", "unstructured"),
    (["sparsity=unstructured", "sparsity.importance=wanda"], "sparsity.importance", "calibration"),
    (["sparsity=unstructured", "sparsity.group=row"], "sparsity.group", "layer"),
    (["model=tiny_qwen2"], "model.arch", "no Qwen2 model"),
    (["base.enabled=true"], "base.enabled", "own cszoo run"),
    (["hardware.precision=16-mixed"], "hardware.precision", "cbfloat16"),
    # a CS-X always runs mixed precision: float32 would silently be bfloat16
    (["hardware.precision=float32"], "hardware.precision", "target_device=CSX"),
    (["model=mixtral_8x7b", "+model.config.output_router_logits=true"], "model.config.output_router_logits",
     "load_balancing_loss"),
])
def test_unsupported_options_name_the_option(overrides, key, words):
    cfg = compose_run(["hardware=cerebras", *overrides])
    with pytest.raises(ConfigError) as err:
        check_supported(cfg, DATA)
    assert err.value.key == key and words in str(err.value)
    assert len(str(err.value).splitlines()) == 1


def test_local_hardware_and_missing_data_are_rejected():
    with pytest.raises(ConfigError, match="hardware=cerebras"):
        check_supported(compose_run(["hardware=cpu"]), DATA)
    with pytest.raises(ConfigError) as err:  # tiny_llama has no HF dir to convert: random weights
        check_supported(compose_run(["hardware=cerebras"]), CerebrasOptions(dry_run=True))
    assert err.value.key == "hydra.launcher.checkpoint_path" and "random weights" in str(err.value)
    check_supported(compose_run(["hardware=cerebras"]), CerebrasOptions(checkpoint_path="/c.mdl"))
