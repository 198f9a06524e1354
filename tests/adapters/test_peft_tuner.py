"""``adapter=peft``: peft's other tuners by name. Each builds on the model's targets and starts at
the base model; a trained one loads with ``PeftModel.from_pretrained`` and the exported merged
model is base + adapter; its settings enter the training key; bad ones are one line."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from conftest import FAST, assert_refused, compose, run_tiny
from ftlab.adapters.registry import get_adapter
from ftlab.core.errors import ConfigError
from ftlab.launchers.cerebras_options import CerebrasOptions
from ftlab.launchers.cerebras_params import check_supported
from ftlab.models import build_model, build_tokenizer
from ftlab.preflight.compose import compose_run
from ftlab.reuse.steps import as_plain, run_steps

TUNERS = {"loha": "{r: 4, alpha: 8}", "lokr": "{r: 4}", "vera": "{r: 16}", "oft": "{r: 0, oft_block_size: 4}",
          "ia3": "null", "hra": "{r: 4}", "miss": "{r: 4}", "boft": "{boft_block_size: 4}"}


def ids(seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 259, (2, 12), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("tuner", sorted(TUNERS))
def test_each_tuner_builds_on_the_targets_and_starts_at_the_base(tuner):
    cfg = compose_run(["adapter=peft", f"adapter.peft_type={tuner}", f"adapter.peft_config={TUNERS[tuner]}"])
    base = build_model(cfg.model, build_tokenizer(cfg.model), seed=0)
    adapted = get_adapter("peft").build(copy.deepcopy(base), cfg.adapter, cfg)
    assert adapted.model.peft_config["default"].peft_type.value.lower() == tuner
    assert 0 < adapted.trainable_params() < sum(p.numel() for p in base.parameters()) / 10
    with torch.no_grad():
        torch.testing.assert_close(adapted.model(input_ids=ids()).logits, base(input_ids=ids()).logits,
                                   atol=1e-5, rtol=0)


def test_settings_enter_the_training_key_and_bad_ones_are_one_line():
    ref = run_steps(as_plain(compose_run(["adapter=peft"]))).train.key
    for option in ("adapter.peft_type=vera", "adapter.peft_config={r: 2}"):
        assert run_steps(as_plain(compose_run(["adapter=peft", option]))).train.key != ref, option
    cases = [(["adapter.peft_type=prompt_tuning"], "adapter.peft_type='prompt_tuning' is invalid: one of ["),
             (["adapter.peft_config={nope: 1}"], "adapter.peft_config={'nope': 1} is invalid: keyword arguments of "
              "peft's LoHaConfig"),
             (["adapter.peft_config={target_modules: [q_proj]}"], "adapter.peft_config.target_modules=['q_proj'] is "
              "invalid: unset"),
             (["adapter.peft_config=3"], "adapter.peft_config=3 is invalid: a mapping"),
             (["sparsity=unstructured"], "adapter='peft' is invalid: lora, dora, masked, full or sora with a sparse"),
             (["hardware=fsdp"], "adapter='peft' is invalid: lora or dora with hardware.strategy=fsdp")]
    for overrides, message in cases:
        assert_refused(["adapter=peft", *overrides], message)
    cerebras = compose_run(["adapter=peft", "hardware=cerebras"])
    with pytest.raises(ConfigError, match="adapter='peft' is invalid: one of .* on Cerebras: ModelZoo trains every "
                                          "weight or LoRA factors of linear layers"):
        check_supported(cerebras, CerebrasOptions())


@pytest.mark.slow
@pytest.mark.parametrize("tuner", ["loha", "vera", "ia3", "oft"])
def test_trained_tuner_loads_in_peft_and_merged_is_base_plus_adapter(run_dir, tuner):
    opts = ("adapter=peft", f"adapter.peft_type={tuner}", f"adapter.peft_config={TUNERS[tuner]}", "train.max_steps=6",
            "schedule.lr=1e-2")
    run_tiny(run_dir, *opts)
    config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"].lower() == tuner
    cfg = compose(*FAST, *opts)
    base = build_model(cfg.model, build_tokenizer(cfg.model), seed=cfg.seed)
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), run_dir / "adapter").eval()
    merged = AutoModelForCausalLM.from_pretrained(run_dir / "model").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids(1)).logits, merged(input_ids=ids(1)).logits,
                                   atol=1e-4, rtol=1e-4)
        assert (merged(input_ids=ids(1)).logits - base(input_ids=ids(1)).logits).abs().max() > 1e-4  # it trained
    want = loaded.merge_and_unload().state_dict()
    got = merged.state_dict()
    for name, tensor in want.items():
        torch.testing.assert_close(got[name], tensor, atol=1e-5, rtol=1e-5)
