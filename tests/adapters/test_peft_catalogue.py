"""peft's catalogue through ftlab: rsLoRA's scaling and LoRA+'s learning rates equal peft's own on
the same model; a trained adapter loads with ``PeftModel.from_pretrained`` and the exported merged
model is base + adapter; the options enter the training key; impossible combinations are one line."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from peft.optimizers import create_loraplus_optimizer
from peft.tuners.lora import LoraLayer
from transformers import AutoModelForCausalLM

from conftest import FAST, compose, run_tiny
from ftlab.adapters.inits import init_spec
from ftlab.adapters.registry import get_adapter
from ftlab.core.errors import ConfigError
from ftlab.models import build_model, build_tokenizer
from ftlab.preflight.compose import compose_run
from ftlab.reuse.steps import as_plain, run_steps


def adapted_of(*overrides: str):
    cfg = compose_run(["task.num_examples=100", *overrides])
    base = build_model(cfg.model, build_tokenizer(cfg.model), seed=0)
    return cfg, base, get_adapter(cfg.adapter.name).build(copy.deepcopy(base), cfg.adapter, cfg)


@pytest.mark.parametrize("adapter", ["lora", "dora"])
def test_rslora_scaling_is_peft_own(adapter):
    cfg, base, adapted = adapted_of(f"adapter={adapter}", "adapter.r=4", "adapter.alpha=8", "adapter.use_rslora=true")
    layers = [m for m in adapted.model.modules() if isinstance(m, LoraLayer)]
    assert layers and all(m.scaling["default"] == pytest.approx(8 / math.sqrt(4)) for m in layers)
    targets = sorted({n.rsplit(".", 1)[-1] for n, m in adapted.model.named_modules() if isinstance(m, LoraLayer)})
    own = get_peft_model(copy.deepcopy(base), PeftLoraConfig(r=4, lora_alpha=8, use_rslora=True, target_modules=targets,
                                                             use_dora=adapter == "dora"))
    ours = {n: m.scaling["default"] for n, m in adapted.model.named_modules() if isinstance(m, LoraLayer)}
    theirs = {n: m.scaling["default"] for n, m in own.named_modules() if isinstance(m, LoraLayer)}
    assert ours == theirs
    plain = adapted_of(f"adapter={adapter}", "adapter.r=4", "adapter.alpha=8")[2]
    assert {m.scaling["default"] for m in plain.model.modules() if isinstance(m, LoraLayer)} == {2.0}


@pytest.mark.parametrize("adapter", ["lora", "dora"])
def test_lora_plus_groups_equal_peft_create_loraplus_optimizer(adapter):
    cfg, _, adapted = adapted_of(f"adapter={adapter}", "adapter.lora_plus_ratio=16", "train.weight_decay=0.01")
    lr, wd = 2e-4, 0.01
    ours = {id(p): (g["lr"], g["weight_decay"]) for g in adapted.param_groups(lr, wd) for p in g["params"]}
    opt = create_loraplus_optimizer(adapted.model, torch.optim.AdamW, lr=lr, loraplus_lr_ratio=16,
                                    loraplus_weight_decay=wd)
    theirs = {id(p): (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}
    assert ours == theirs
    assert {v[0] for v in ours.values()} == {lr, 16 * lr}  # A at lr, B (and DoRA's magnitudes) at 16 x lr
    names = {id(p): n for n, p in adapted.model.named_parameters()}
    assert all(ours[i][0] == 16 * lr for i, n in names.items() if "lora_B" in n)


def test_options_enter_the_training_key_and_impossible_combinations_are_one_line():
    ref = run_steps(as_plain(compose_run(["adapter=lora"]))).train.key
    for option in ("adapter.use_rslora=true", "adapter.lora_plus_ratio=4", "adapter.init=pissa"):
        assert run_steps(as_plain(compose_run(["adapter=lora", option]))).train.key != ref, option
    cases = [(["adapter.lora_plus_ratio=0"], "adapter.lora_plus_ratio=0.0 is invalid: a number > 0"),
             (["adapter.lora_plus_ratio=2", "hardware=fsdp"], "adapter.lora_plus_ratio=2.0 is invalid: null with "
              "hardware.strategy=fsdp"),
             (["adapter.use_rslora=true", "hardware=cerebras"], "adapter.use_rslora=True is invalid: false on Cerebras"),
             (["adapter=sora", "adapter.use_rslora=true"], "adapter.use_rslora is not a key of SoraConfig"),
             (["adapter.init=eva2"], "adapter.init='eva2' is invalid: one of ['default', 'gaussian', 'pissa', 'olora', "
              "'corda', 'eva', 'loftq']"),
             (["adapter=dora", "adapter.init=pissa"], "adapter.init='pissa' is invalid: default or gaussian with "
              "adapter=dora"),
             (["adapter.init=olora", "sparsity=unstructured"], "adapter.init='olora' is invalid: default or gaussian "
              "with a sparse base"),
             (["adapter.init=pissa", "hardware=fsdp"], "adapter.init='pissa' is invalid: default or gaussian with "
              "hardware.strategy=fsdp"),
             (["adapter.init=gaussian", "hardware=cerebras"], "adapter.init='gaussian' is invalid: default on Cerebras")]
    for overrides, message in cases:
        with pytest.raises(ConfigError) as err:
            compose_run(["adapter=lora", *overrides])
        assert str(err.value).startswith(message), str(err.value)


@pytest.mark.slow
def test_trained_rslora_lora_plus_adapter_loads_in_peft_and_merged_is_base_plus_adapter(run_dir):
    opts = ("adapter=lora", "adapter.use_rslora=true", "adapter.lora_plus_ratio=4", "train.max_steps=6",
            "schedule.lr=1e-2")
    run_tiny(run_dir, *opts)
    config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert config["use_rslora"] is True
    cfg = compose(*FAST, *opts)  # the same seeded base model the run started from
    base = build_model(cfg.model, build_tokenizer(cfg.model), seed=cfg.seed)
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), run_dir / "adapter").eval()
    b = [p for n, p in loaded.named_parameters() if "lora_B" in n]
    assert b and all(p.abs().sum() > 0 for p in b)  # B trained away from its zero init
    want = loaded.merge_and_unload().state_dict()
    merged = AutoModelForCausalLM.from_pretrained(run_dir / "model").eval().state_dict()
    for name, tensor in want.items():
        torch.testing.assert_close(merged[name], tensor, atol=1e-6, rtol=1e-6)
    assert any(not torch.equal(merged[n], t) for n, t in base.state_dict().items() if n in merged)


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_base_changing_init_starts_at_the_base_model(init):
    _, base, adapted = adapted_of("adapter=lora", f"adapter.init={init}", "adapter.r=4")
    ids = torch.randint(3, 259, (2, 10), generator=torch.Generator().manual_seed(0))
    layer = next(m for m in adapted.model.modules() if isinstance(m, LoraLayer))
    assert layer.lora_B["default"].weight.abs().sum() > 0  # B holds the principal directions, not zeros
    with torch.no_grad():
        torch.testing.assert_close(adapted.model(input_ids=ids).logits, base(input_ids=ids).logits, atol=1e-5, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("init", ["gaussian", "pissa", "olora", "corda", "eva"])
def test_trained_init_adapter_loads_on_the_original_base_and_merged_is_base_plus_adapter(run_dir, init):
    opts = ("adapter=lora", f"adapter.init={init}", "adapter.r=4", "train.max_steps=6", "schedule.lr=1e-2")
    run_tiny(run_dir, *opts)
    config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    if init_spec(init).converts_back:  # peft's conversion: a plain LoRA of rank 2r on the original base
        assert config["init_lora_weights"] is True and config["r"] == 8
    else:
        assert config["init_lora_weights"] == init and config["r"] == 4
    cfg = compose(*FAST, *opts)
    base = build_model(cfg.model, build_tokenizer(cfg.model), seed=cfg.seed)  # the original base, not W_res
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), run_dir / "adapter").eval()
    merged = AutoModelForCausalLM.from_pretrained(run_dir / "model").eval()
    ids = torch.randint(3, 259, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, merged(input_ids=ids).logits, atol=1e-4, rtol=1e-4)
        assert (merged(input_ids=ids).logits - base(input_ids=ids).logits).abs().max() > 1e-3  # it trained
    want = loaded.merge_and_unload().state_dict()
    got = merged.state_dict()
    for name, tensor in want.items():
        torch.testing.assert_close(got[name], tensor, atol=1e-5, rtol=1e-5)
