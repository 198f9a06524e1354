"""Hugging Face (transformers) -> Cerebras ModelZoo names, per architecture: the one place they live.

Every entry was read off ModelZoo's own source at tag ``Release_2.10.0`` of github.com/Cerebras/modelzoo
(paths below are relative to ``src/cerebras/modelzoo/``) and is pinned by a test of its own
(tests/launchers/test_cerebras_names.py), so a wrong guess cannot hide behind a glob that matches nothing:

- parameter names: ``tools/checkpoint_converters/llama.py`` (``Converter_LlamaModel_HF_CS``,
  ``Converter_LlamaAttention_HF_CS``; mistral.py reuses them), ``tools/checkpoint_converters/mixtral.py``
  (``moe_optimized_impl_rules``: the experts of one layer are fused into one ``expert_weights``
  tensor per projection), and ``models/nlp/gpt2/model.py`` (``Gpt2Model.model`` is the
  ``GPT2LMHeadModel``, so trainer-side names start ``model.transformer_decoder.layers.N.``);
- LoRA: ``common/utils/model/lora.py`` matches ``target_modules`` against the *class names* along a
  module's path (``type(m).__name__``), all listed names must be present, and only ``nn.Linear`` /
  ``nn.Embedding`` are converted; the classes are ``layers/AttentionHelper.py`` (``aiayn_attention``
  -> ``MultiheadAttention``, ``multiquery_attention`` -> ``MultiQueryAttention``, each with four
  ``nn.Linear`` projections), ``layers/FeedForwardNetwork.py`` (``FeedForwardNetwork`` ->
  ``SingleFeedForwardLayer`` -> ``nn.Linear``: gate, up, down with swiglu) and
  ``layers/SparseMoEBlock.py`` (experts are ``TopKExpertsSparseLinear``, not ``nn.Linear``);
- checkpoint conversion: ``tools/checkpoint_converters/registry.py`` (model names) and the
  ``formats()`` of the converters (newest Cerebras format listed: ``cs-2.9``; ``--tgt-fmt
  cs-current`` would ask for ``cs-2.10``, which no llama/mistral/mixtral converter lists).

ModelZoo 2.10 has no Qwen2 model and no Qwen2 checkpoint converter, so Qwen2 has no table here and is
refused on Cerebras with that reason.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ftlab.core.errors import ConfigError

#: The ModelZoo release every fact in this module was checked against.
MODELZOO_RELEASE = "Release_2.10.0"
#: ``--tgt-fmt`` of ``cszoo checkpoint convert``: the newest CS format ModelZoo 2.10's llama,
#: mistral and mixtral converters list.
CS_CHECKPOINT_FORMAT = "cs-2.9"

#: ftlab ``model.arch`` -> ModelZoo model name (``trainer.init.model.name``), which is also the
#: converter name of ``cszoo checkpoint convert --model``.
MODELZOO_MODELS = {"llama": "llama", "mistral": "mistral", "mixtral": "mixtral"}
#: Architectures ftlab builds that ModelZoo 2.10 cannot run, and why (for the error line).
UNSUPPORTED_ARCHS = {"qwen2": "ModelZoo Release_2.10.0 has no Qwen2 model or Qwen2 checkpoint converter"}

#: Decoder-layer prefix: transformers' in-memory name -> ModelZoo trainer-side name.
HF_LAYER_PREFIX = "model.layers."
MODELZOO_LAYER_PREFIX = "model.transformer_decoder.layers."

_ATTENTION = {
    "self_attn.q_proj.weight": ("self_attn.proj_q_dense_layer.weight",),
    "self_attn.k_proj.weight": ("self_attn.proj_k_dense_layer.weight",),
    "self_attn.v_proj.weight": ("self_attn.proj_v_dense_layer.weight",),
    "self_attn.o_proj.weight": ("self_attn.proj_output_dense_layer.weight",),
    "input_layernorm.weight": ("norm1.weight",),
    "post_attention_layernorm.weight": ("norm3.weight",),
}
_DENSE_FFN = {
    "mlp.gate_proj.weight": ("ffn.ffn.0.linear_layer_for_glu.weight",),
    "mlp.up_proj.weight": ("ffn.ffn.0.linear_layer.weight",),
    "mlp.down_proj.weight": ("ffn.ffn.1.linear_layer.weight",),
}
# transformers >= 5 keeps a Mixtral layer's experts fused (gate_up_proj = w1 and w3 of every expert,
# down_proj = w2); ModelZoo fuses them the same way per projection (w1 -> linear_layer_for_glu,
# w3 -> linear_layer, w2 -> fused_ffns.1).
_MOE_FFN = {
    "mlp.gate.weight": ("ffn.gate.weight",),
    "mlp.experts.gate_up_proj": ("ffn.experts.fused_ffns.0.linear_layer_for_glu.expert_weights",
                                 "ffn.experts.fused_ffns.0.linear_layer.expert_weights"),
    "mlp.experts.down_proj": ("ffn.experts.fused_ffns.1.linear_layer.expert_weights",),
}

#: Per architecture: parameter name inside a decoder layer, transformers -> ModelZoo (one HF tensor
#: can be several ModelZoo tensors).
LAYER_PARAMS: dict[str, dict[str, tuple[str, ...]]] = {
    "llama": {**_ATTENTION, **_DENSE_FFN},
    "mistral": {**_ATTENTION, **_DENSE_FFN},
    "mixtral": {**_ATTENTION, **_MOE_FFN},
}
#: Names outside the decoder layers (same for the three architectures).
TOP_PARAMS = {
    "model.embed_tokens.weight": "model.embedding_layer.word_embeddings.weight",
    "model.norm.weight": "model.transformer_decoder.norm.weight",
    "lm_head.weight": "model.lm_head.weight",
}

#: ftlab / peft target-module leaf names that ModelZoo's LoRA can only take as a whole group, and
#: the ModelZoo class that owns exactly those ``nn.Linear`` modules.
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
FFN_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
ATTENTION_CLASSES = {"aiayn_attention": "MultiheadAttention", "multiquery_attention": "MultiQueryAttention"}
FFN_CLASS = "FeedForwardNetwork"
LINEAR_CLASS = "Linear"


def modelzoo_param_names(arch: str, hf_name: str, module_names: dict[str, str] | None = None) -> tuple[str, ...]:
    """ModelZoo parameter name(s) of one transformers parameter of a decoder layer.

    ``module_names`` overrides the table per module: ``{HF module (leaf such as ``q_proj`` or path
    inside the layer such as ``self_attn.q_proj``): ModelZoo module path inside the layer}``.
    """
    if not hf_name.startswith(HF_LAYER_PREFIX):
        raise KeyError(hf_name)
    index, rel = hf_name[len(HF_LAYER_PREFIX):].split(".", 1)
    module, _, leaf = rel.rpartition(".")
    override = dict(module_names or {})
    for key in (module, module.rsplit(".", 1)[-1]):
        if key and key in override:
            return (f"{MODELZOO_LAYER_PREFIX}{index}.{override[key]}.{leaf}",)
    return tuple(f"{MODELZOO_LAYER_PREFIX}{index}.{name}" for name in LAYER_PARAMS[arch][rel])


def param_globs(arch: str, hf_names: list[str], module_names: dict[str, str] | None = None,
                key: str = "sparsity.modules") -> list[str]:
    """``sparsity.param_filter`` globs (fnmatch, as cerebras.pytorch's sparsity ``Group``) covering the
    ModelZoo names of ``hf_names``: one glob per kind of weight, the layer index as ``*``."""
    out = set()
    for name in hf_names:
        try:
            mapped = modelzoo_param_names(arch, name, module_names)
        except KeyError:
            raise ConfigError(key, name, f"weights with a ModelZoo name in the {arch} table of "
                              "ftlab.launchers.cerebras_names (or map the module with "
                              "hydra.launcher.module_names)") from None
        for mz in mapped:
            # "*transformer_decoder..." matches whatever wraps the decoder (the trainer's "model.").
            out.add("*" + re.sub(r"\.layers\.\d+\.", ".layers.*.", mz.removeprefix("model.")))
    return sorted(out)


def lora_target_groups(arch: str, attention_module: str, targets: list[str], key: str) -> list[list[str]]:
    """ModelZoo LoRA ``target_modules`` (class names), one list per group ftlab's targets name.

    ModelZoo matches class names along the module path, so it can select *all* linears of an
    attention block or of a dense feed-forward block, never a subset: a target list that names part
    of a group (e.g. ``[q_proj, v_proj]``) or anything else is refused with one line.
    """
    leaves = [str(t).rsplit(".", 1)[-1] for t in targets]
    groups: list[list[str]] = []
    rest = set(leaves)
    attn, ffn = set(ATTENTION_PROJECTIONS), set(FFN_PROJECTIONS)
    if rest & attn:
        if not attn <= rest:
            raise ConfigError(key, list(targets), f"all of {list(ATTENTION_PROJECTIONS)} or none on Cerebras "
                              f"(ModelZoo's LoRA matches the class {ATTENTION_CLASSES[attention_module]}, "
                              "which owns all four projections)")
        groups.append([ATTENTION_CLASSES[attention_module], LINEAR_CLASS])
        rest -= attn
    if rest & ffn:
        if arch == "mixtral":
            raise ConfigError(key, list(targets), "attention projections only for mixtral on Cerebras (ModelZoo's "
                              "experts are TopKExpertsSparseLinear, which its LoRA does not convert)")
        if not ffn <= rest:
            raise ConfigError(key, list(targets), f"all of {list(FFN_PROJECTIONS)} or none on Cerebras "
                              f"(ModelZoo's LoRA matches the class {FFN_CLASS}, which owns all three)")
        groups.append([FFN_CLASS, LINEAR_CLASS])
        rest -= ffn
    if rest or not groups:
        raise ConfigError(key, list(targets), f"whole groups on Cerebras: {list(ATTENTION_PROJECTIONS)} and/or "
                          f"{list(FFN_PROJECTIONS)} (ModelZoo's LoRA targets module classes)")
    return groups


def hf_checkpoint_file(hf_dir: Any) -> str:
    """The file ``cszoo checkpoint convert`` reads from an HF model dir: the sharded index (safetensors
    or bin; ModelZoo streams it) or a single ``pytorch_model.bin``. ModelZoo 2.10 refuses a single
    ``model.safetensors`` (``BaseCheckpointConverter_HF_CS.load``)."""
    for name in ("model.safetensors.index.json", "pytorch_model.bin.index.json", "pytorch_model.bin"):
        if (Path(hf_dir) / name).is_file():
            return name
    raise ConfigError("model.name_or_path", str(hf_dir), "an HF model dir with model.safetensors.index.json, "
                      "pytorch_model.bin.index.json or pytorch_model.bin (what cszoo checkpoint convert reads)")


def converted_checkpoint_name(hf_file: str, tgt_fmt: str = CS_CHECKPOINT_FORMAT) -> str:
    """The file ``cszoo checkpoint convert --output-dir D`` writes into D: the input's name with every
    alphabetic extension removed, ``_to_<tgt fmt>``, ``.mdl`` (``convert_checkpoint_from_file``)."""
    stem = re.sub(r"(?:\.[A-Za-z]+)+$", "", hf_file)
    return f"{stem}_to_{tgt_fmt}.mdl"
