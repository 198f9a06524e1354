"""The attention implementation a model is built with: the configured one where its class has it,
eager with one console line for a class without sdpa (Bloom), a one-line refusal for a flash
kernel the class lacks; and a Bloom run that asks for packing is refused in one line."""

from __future__ import annotations

import logging

import pytest
from transformers import AutoConfig, BloomForCausalLM, LlamaForCausalLM

from conftest import FAST, cli, compose
from ftlab.core.errors import ConfigError
from ftlab.models import build_model, build_tokenizer
from ftlab.models.attention import has_implementation, resolve_attention

# tiny_llama's keys that Bloom's config class does not read are refused (model.config checks)
BLOOM = ("model.arch=bloom", "~model.config.intermediate_size", "~model.config.num_key_value_heads",
         "~model.config.max_position_embeddings")


def test_sdpa_falls_back_to_eager_with_one_line_where_the_class_has_none(caplog) -> None:
    assert has_implementation(BloomForCausalLM, "sdpa") is False and has_implementation(LlamaForCausalLM, "sdpa")
    with caplog.at_level(logging.WARNING, logger="ftlab"):
        assert resolve_attention(AutoConfig.for_model("bloom"), "sdpa") == "eager"
        assert resolve_attention(AutoConfig.for_model("llama"), "sdpa") == "sdpa"
        assert resolve_attention(AutoConfig.for_model("bloom"), "sdpa", say=False) == "eager"
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["model.attn_implementation=sdpa: BloomForCausalLM has no sdpa attention in transformers; "
                     "using eager"]
    assert resolve_attention(AutoConfig.for_model("bloom"), "eager") == "eager"


def test_flash_attention_the_class_lacks_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"model.attn_implementation='flash_attention_2' is invalid: one that "
                                          r"BloomForCausalLM has in transformers: \['eager'\]"):
        resolve_attention(AutoConfig.for_model("bloom"), "flash_attention_2")


def test_bloom_builds_with_eager_from_the_default_config() -> None:
    cfg = compose(*BLOOM)
    model = build_model(cfg.model, build_tokenizer(cfg.model))
    assert type(model).__name__ == "BloomForCausalLM" and model.config._attn_implementation == "eager"


@pytest.mark.slow
def test_bloom_run_says_eager_and_refuses_packing_in_one_line(tmp_path) -> None:
    proc = cli("ftlab", *FAST, *BLOOM, "train.packing=true", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "BloomForCausalLM has no sdpa attention in transformers; using eager" in proc.stdout + proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("ftlab: error:")]
    assert len(errors) == 1 and "train.packing=True is invalid: false for BloomForCausalLM (eager attention)" in errors[0]
