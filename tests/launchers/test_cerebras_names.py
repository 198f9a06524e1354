"""The HF -> ModelZoo name tables against the facts read off ModelZoo's source (tag Release_2.10.0,
paths under src/cerebras/modelzoo/): one test per parameter-name entry, the LoRA class groups and
the refusals of what ModelZoo cannot express."""

from __future__ import annotations

import fnmatch

import pytest

from ftlab.core.errors import ConfigError
from ftlab.launchers.cerebras_names import (
    CS_CHECKPOINT_FORMAT,
    LAYER_PARAMS,
    MODELZOO_MODELS,
    TOP_PARAMS,
    UNSUPPORTED_ARCHS,
    converted_checkpoint_name,
    hf_checkpoint_file,
    lora_target_groups,
    modelzoo_param_names,
    param_globs,
)
from ftlab.launchers.cerebras_params import pruned_weight_names
from ftlab.preflight.compose import compose_run

# (arch, HF name inside a decoder layer, ModelZoo names inside the layer, where it is written).
DENSE = [
    ("self_attn.q_proj.weight", ["self_attn.proj_q_dense_layer.weight"], "llama.py EquivalentSubkey('q_proj', 'proj_q_dense_layer')"),
    ("self_attn.k_proj.weight", ["self_attn.proj_k_dense_layer.weight"], "llama.py EquivalentSubkey('k_proj', 'proj_k_dense_layer')"),
    ("self_attn.v_proj.weight", ["self_attn.proj_v_dense_layer.weight"], "llama.py EquivalentSubkey('v_proj', 'proj_v_dense_layer')"),
    ("self_attn.o_proj.weight", ["self_attn.proj_output_dense_layer.weight"], "llama.py EquivalentSubkey('o_proj', 'proj_output_dense_layer')"),
    ("input_layernorm.weight", ["norm1.weight"], "llama.py EquivalentSubkey('input_layernorm', 'norm1')"),
    ("post_attention_layernorm.weight", ["norm3.weight"], "llama.py EquivalentSubkey('post_attention_layernorm', 'norm3')"),
    ("mlp.gate_proj.weight", ["ffn.ffn.0.linear_layer_for_glu.weight"], "llama.py EquivalentSubkey('mlp.gate_proj', 'ffn.ffn.0.linear_layer_for_glu')"),
    ("mlp.up_proj.weight", ["ffn.ffn.0.linear_layer.weight"], "llama.py EquivalentSubkey('mlp.up_proj', 'ffn.ffn.0.linear_layer')"),
    ("mlp.down_proj.weight", ["ffn.ffn.1.linear_layer.weight"], "llama.py EquivalentSubkey('mlp.down_proj', 'ffn.ffn.1.linear_layer')"),
]
MOE = DENSE[:6] + [
    ("mlp.gate.weight", ["ffn.gate.weight"], "mixtral.py EquivalentSubkey('block_sparse_moe.gate', 'ffn.gate')"),
    ("mlp.experts.gate_up_proj", ["ffn.experts.fused_ffns.0.linear_layer_for_glu.expert_weights",
                                  "ffn.experts.fused_ffns.0.linear_layer.expert_weights"],
     "mixtral.py moe_optimized_impl_rules: w1 -> fused_ffns.0.linear_layer_for_glu, w3 -> fused_ffns.0.linear_layer"),
    ("mlp.experts.down_proj", ["ffn.experts.fused_ffns.1.linear_layer.expert_weights"],
     "mixtral.py moe_optimized_impl_rules: w2 -> fused_ffns.1.linear_layer"),
]
FACTS = [("llama", *f) for f in DENSE] + [("mistral", *f) for f in DENSE] + [("mixtral", *f) for f in MOE]


@pytest.mark.parametrize(("arch", "hf", "modelzoo", "source"), FACTS, ids=[f"{a}:{h}" for a, h, *_ in FACTS])
def test_parameter_name_entry(arch, hf, modelzoo, source):
    """``model.layers.N.<hf>`` is ``model.transformer_decoder.layers.N.<modelzoo>`` on the trainer side
    (Gpt2Model.model is the GPT2LMHeadModel; converter rule: layers -> transformer_decoder.layers)."""
    got = modelzoo_param_names(arch, f"model.layers.7.{hf}")
    assert list(got) == [f"model.transformer_decoder.layers.7.{m}" for m in modelzoo], source


@pytest.mark.parametrize("arch", sorted(LAYER_PARAMS))
def test_tables_hold_exactly_the_verified_entries(arch):
    assert set(LAYER_PARAMS[arch]) == {hf for a, hf, *_ in FACTS if a == arch}


def test_top_level_names_and_models():
    # llama.py: embed_tokens -> embedding_layer.word_embeddings, norm -> transformer_decoder.norm,
    # lm_head kept; registry.py converter names "llama", "mistral", "mixtral".
    assert TOP_PARAMS == {"model.embed_tokens.weight": "model.embedding_layer.word_embeddings.weight",
                          "model.norm.weight": "model.transformer_decoder.norm.weight",
                          "lm_head.weight": "model.lm_head.weight"}
    assert MODELZOO_MODELS == {"llama": "llama", "mistral": "mistral", "mixtral": "mixtral"}
    assert "qwen2" in UNSUPPORTED_ARCHS and "qwen2" not in LAYER_PARAMS  # no Qwen2 in ModelZoo 2.10
    assert CS_CHECKPOINT_FORMAT == "cs-2.9"  # newest format in the 2.10 converters' formats()


@pytest.mark.parametrize("preset", ["tiny_llama", "tiny_mistral", "llama3_8b", "mistral_7b", "mixtral_8x7b"])
def test_every_weight_ftlab_prunes_has_a_modelzoo_glob_that_matches_its_modelzoo_name(preset):
    cfg = compose_run(["hardware=cerebras", f"model={preset}", "sparsity=unstructured"])
    names = pruned_weight_names(cfg)
    globs = param_globs(cfg.model.arch, names)
    for name in names:
        for mz in modelzoo_param_names(cfg.model.arch, name):
            matching = [g for g in globs if fnmatch.fnmatchcase(mz, g)]  # cerebras.pytorch: fnmatch.translate
            assert len(matching) == 1, (mz, globs)
    assert not any(fnmatch.fnmatchcase(n, g) for n in names for g in globs)  # HF names match nothing
    assert not any(fnmatch.fnmatchcase("model.transformer_decoder.layers.0.norm1.weight", g) for g in globs)


def test_module_names_override_a_module_by_leaf_or_path():
    name = "model.layers.2.self_attn.q_proj.weight"
    assert modelzoo_param_names("llama", name, {"q_proj": "attn.q"}) == ("model.transformer_decoder.layers.2.attn.q.weight",)
    assert modelzoo_param_names("llama", name, {"self_attn.q_proj": "a.b"}) == ("model.transformer_decoder.layers.2.a.b.weight",)
    with pytest.raises(ConfigError) as err:
        param_globs("llama", ["model.layers.0.mlp.new_proj.weight"])
    assert err.value.key == "sparsity.modules" and "hydra.launcher.module_names" in str(err.value)


@pytest.mark.parametrize(("targets", "attention", "groups"), [
    (["q_proj", "k_proj", "v_proj", "o_proj"], "multiquery_attention", [["MultiQueryAttention", "Linear"]]),
    (["q_proj", "k_proj", "v_proj", "o_proj"], "aiayn_attention", [["MultiheadAttention", "Linear"]]),
    (["gate_proj", "up_proj", "down_proj"], "aiayn_attention", [["FeedForwardNetwork", "Linear"]]),
    (["down_proj", "o_proj", "q_proj", "up_proj", "k_proj", "gate_proj", "v_proj"], "multiquery_attention",
     [["MultiQueryAttention", "Linear"], ["FeedForwardNetwork", "Linear"]]),
])
def test_lora_groups_are_modelzoo_class_names(targets, attention, groups):
    # lora.py get_lora_config_for_module: every name of target_modules must be among the class names
    # along the module path; AttentionHelper.py: aiayn -> MultiheadAttention, multiquery -> MultiQueryAttention.
    assert lora_target_groups("llama", attention, targets, "adapter.target_modules") == groups


@pytest.mark.parametrize(("arch", "targets", "words"), [
    ("llama", ["q_proj", "v_proj"], "all of ['q_proj', 'k_proj', 'v_proj', 'o_proj'] or none"),
    ("llama", ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"], "all of ['gate_proj', 'up_proj', 'down_proj']"),
    ("llama", ["lm_head"], "whole groups"),
    ("mixtral", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], "TopKExpertsSparseLinear"),
])
def test_lora_targets_modelzoo_cannot_express_are_refused(arch, targets, words):
    with pytest.raises(ConfigError) as err:
        lora_target_groups(arch, "multiquery_attention", targets, "adapter.target_modules")
    assert err.value.key == "adapter.target_modules" and words in str(err.value)
    assert len(str(err.value).splitlines()) == 1


def test_checkpoint_file_names(tmp_path):
    # convert_checkpoint.py _remove_file_extension + "_to_" + tgt_fmt; the CS writer adds ".mdl".
    assert converted_checkpoint_name("model.safetensors.index.json") == "model_to_cs-2.9.mdl"
    assert converted_checkpoint_name("pytorch_model.bin") == "pytorch_model_to_cs-2.9.mdl"
    with pytest.raises(ConfigError, match="model.name_or_path"):
        hf_checkpoint_file(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")  # one safetensors file: ModelZoo 2.10 refuses it
    with pytest.raises(ConfigError):
        hf_checkpoint_file(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    assert hf_checkpoint_file(tmp_path) == "pytorch_model.bin"
    (tmp_path / "model.safetensors.index.json").write_text("{}")
    assert hf_checkpoint_file(tmp_path) == "model.safetensors.index.json"
