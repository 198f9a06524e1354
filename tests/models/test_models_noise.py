"""A base's own training-mode noise, as fused trials must know it: config probabilities the
forward applies itself, dropout modules, and nothing for a deterministic forward."""

from __future__ import annotations

import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, MixtralConfig

from ftlab.models.noise import base_noise, config_noise, describe, module_noise


def test_gpt2_defaults_draw_dropout_and_its_summary_head_does_not_count():
    with torch.device("meta"):
        model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=64, n_head=2))
    assert base_noise(model) == {"attn_pdrop": 0.1, "embd_pdrop": 0.1, "resid_pdrop": 0.1}
    quiet = GPT2Config(n_layer=1, n_embd=64, n_head=2, attn_pdrop=0.0, embd_pdrop=0.0, resid_pdrop=0.0)
    assert config_noise(quiet) == {}  # summary_first_dropout=0.1 belongs to a head a causal LM never runs


def test_llama_and_mixtral_noise_only_when_set():
    assert config_noise(LlamaConfig()) == {} and config_noise(MixtralConfig()) == {}
    assert config_noise(LlamaConfig(attention_dropout=0.2)) == {"attention_dropout": 0.2}
    assert config_noise(MixtralConfig(router_jitter_noise=0.01)) == {"router_jitter_noise": 0.01}


def test_dropout_modules_without_a_config_are_found():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.3), nn.Dropout(0.0))
    assert module_noise(model) == {"1": 0.3} == base_noise(model)
    assert describe({f"k{i}": 0.1 for i in range(5)}) == "k0=0.1, k1=0.1, k2=0.1 (+2 more)"
