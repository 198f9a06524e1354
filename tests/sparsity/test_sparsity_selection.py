"""The default ``sparsity.modules: null`` prunes every linear layer and expert inside the decoder
blocks, found by structure: GPT-2 and Bloom (``transformer.h.*``), a MoE (every expert of every
block, routers never), where the former name pattern ``*.layers.*`` found nothing outside
Llama-style layouts."""

from __future__ import annotations

import pytest
from transformers import BloomConfig, BloomForCausalLM

from conftest import compose
from ftlab.core.errors import ConfigError
from ftlab.models import build_model, build_tokenizer
from ftlab.models.structure import decoder_linears, expert_count, expert_parameters, router_names
from ftlab.sparsity.selection import select_modules, unit_name


def _tiny(preset: str):
    cfg = compose(f"model={preset}", "sparsity=unstructured")
    return cfg, build_model(cfg.model, build_tokenizer(cfg.model), seed=0)


def _expected(model) -> set[str]:
    units = {f"{n}.weight" for n in decoder_linears(model)}
    return units | {unit_name(p, e) for p in expert_parameters(model) for e in range(expert_count(model, p))}


def test_default_prunes_every_conv1d_of_gpt2_blocks() -> None:
    cfg, model = _tiny("tiny_gpt2")
    assert cfg.sparsity.modules is None
    units = select_modules(model, cfg.sparsity.modules)
    assert set(units) == _expected(model) and len(units) == 8  # c_attn, attn.c_proj, c_fc, mlp.c_proj x 2
    assert all(n.startswith("transformer.h.") for n in units)


def test_default_prunes_bloom_blocks_that_a_layers_pattern_misses() -> None:
    model = BloomForCausalLM(BloomConfig(vocab_size=96, hidden_size=32, n_layer=2, n_head=2))
    units = select_modules(model, None)
    leaves = {n.split(".", 3)[3] for n in units}
    assert leaves == {"self_attention.query_key_value.weight", "self_attention.dense.weight",
                      "mlp.dense_h_to_4h.weight", "mlp.dense_4h_to_h.weight"} and len(units) == 8
    with pytest.raises(ConfigError) as err:  # the old default names Llama-style blocks only
        select_modules(model, ["*.layers.*"])
    assert "transformer.h.*.mlp.dense_h_to_4h" in str(err.value) and "\n" not in str(err.value)


def test_default_prunes_every_expert_and_no_router() -> None:
    _, model = _tiny("tiny_mixtral")
    units = select_modules(model, None)
    experts = expert_parameters(model)
    assert experts and set(units) == _expected(model)
    assert sum(n.split("[")[0] in experts for n in units) == sum(expert_count(model, p) for p in experts)
    assert not any(n.startswith(r + ".") for r in router_names(model) for n in units)
    assert set(units) == set(select_modules(model, ["*.layers.*"]))  # same as the old default on Llama layouts
