"""Build the base causal LM and its tokenizer.

Tiny models are built from a transformers config with random weights and a byte-level
tokenizer that needs no files, so tests and the quickstart never download anything. Presets of
real models carry their architecture in the config too, which lets them be instantiated on the
``meta`` device to count parameters and check target modules without weights.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, ByT5Tokenizer

from ftlab.core.errors import ConfigError
from ftlab.models.attention import resolve_attention
from ftlab.models.dtypes import torch_dtype
from ftlab.models.inputs import check_token_ids_suffice
from ftlab.models.quantization import load_quantized, quantize_built
from ftlab.models.structure import leaf_names, linear_names
from ftlab.models.vocab import match_vocabulary


def build_tokenizer(model_cfg):
    """Byte-level tokenizer (ByT5's: 3 specials + 256 bytes, no vocab file) or the model's own."""
    if model_cfg.tokenizer == "byte":
        tok = ByT5Tokenizer(extra_ids=0)
    elif model_cfg.tokenizer == "auto":
        if not model_cfg.name_or_path:
            raise ConfigError("model.tokenizer", "auto", "needs model.name_or_path (or use 'byte')")
        tok = AutoTokenizer.from_pretrained(model_cfg.name_or_path)
    else:
        raise ConfigError("model.tokenizer", model_cfg.tokenizer, "one of ['auto', 'byte']")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def model_config(model_cfg, tokenizer=None):
    """The transformers config of the architecture, vocabulary matched to the tokenizer."""
    kwargs = dict(model_cfg.config)
    if tokenizer is not None and model_cfg.tokenizer == "byte":
        kwargs["vocab_size"] = len(tokenizer)
        kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
        kwargs.setdefault("eos_token_id", tokenizer.eos_token_id)
        kwargs.setdefault("bos_token_id", tokenizer.eos_token_id)
    return AutoConfig.for_model(model_cfg.arch, **kwargs)


def _is_local_dir(path: str | None) -> bool:
    return bool(path) and Path(path).is_dir()


def build_model(model_cfg, tokenizer=None, *, device: str = "cpu", seed: int | None = None) -> nn.Module:
    """Instantiate the base model.

    ``device="meta"`` builds the architecture without allocating weights (presets of 7B+ models;
    a local directory's own ``config.json``). With ``name_or_path`` pointing at a local HF directory
    the weights are loaded from it; otherwise the model is built from ``model_cfg.config`` with
    seeded random weights. ``model.quantization`` loads the weights as a k-bit base. The attention
    implementation is ``model.attn_implementation`` where the class has it (``ftlab.models.attention``);
    a model type whose forward needs more than token ids is refused (``ftlab.models.inputs``);
    a loaded model's embedding rows must serve ``tokenizer`` (``ftlab.models.vocab``).
    """
    dtype = torch_dtype(model_cfg.dtype)
    path = model_cfg.name_or_path
    quantized = model_cfg.quantization is not None and device != "meta"
    if path and (device != "meta" or _is_local_dir(path)):
        if not _is_local_dir(path):
            raise ConfigError(
                "model.name_or_path", path, "a local HF model directory (no downloads on this machine)"
            )
        config = AutoConfig.from_pretrained(path)
        check_token_ids_suffice(config.model_type, f"{path}/config.json model_type")
        attn = resolve_attention(config, model_cfg.attn_implementation, say=device != "meta")
        if device == "meta":
            with torch.device("meta"):
                return AutoModelForCausalLM.from_config(config, dtype=dtype)
        if quantized:
            model = load_quantized(path, model_cfg, attn)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attn)
        return match_vocabulary(model, tokenizer, model_cfg) if tokenizer is not None else model
    check_token_ids_suffice(model_cfg.arch)
    config = model_config(model_cfg, tokenizer)
    attn = resolve_attention(config, model_cfg.attn_implementation, say=device != "meta")
    ctx = torch.device("meta") if device == "meta" else contextlib.nullcontext()
    fork = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with fork, ctx:
        if seed is not None:
            torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn)
    return quantize_built(model, model_cfg, attn) if quantized else model


@functools.lru_cache(maxsize=8)
def meta_model(model_yaml: str) -> nn.Module | None:
    """The architecture of a model config (its YAML, a cache key) on the meta device, or ``None``
    if it cannot be built here: config checks (targets, mask shapes) read names and shapes from
    it before any weight loads; the run builds the model itself and reports its own errors."""
    try:
        return build_model(OmegaConf.create(model_yaml), device="meta")
    except Exception:  # noqa: BLE001 - see the docstring
        return None


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def linear_module_names(model: nn.Module) -> list[str]:
    """Leaf names (``q_proj``...) of the linear layers, for checking target modules."""
    return sorted(leaf_names(linear_names(model)))
