"""Memory features of a fine-tuning run: attention kernel, gradient checkpointing, precision.

* ``model.attn_implementation``: transformers' ``sdpa`` (default), ``eager`` or
  ``flash_attention_2``; the last needs the flash-attn package and CUDA, checked before loading.
* ``train.gradient_checkpointing``: transformers' per-decoder-block checkpointing with
  ``use_reentrant=False``. The non-reentrant form recomputes a block from its saved inputs
  whether or not they require grad, so it works when every base weight (and the embedding) is
  frozen and the only trainable tensors are inside the block — peft's LoRA layers and ftlab's own
  gated/masked layers, which sit inside the checkpointed blocks. Input gradients are enabled on
  the embedding output anyway, which custom checkpointed modules on the reentrant path need.
* a frozen base in ``model.dtype`` (bf16/fp16) with float32 trainable weights: peft and the gated
  layers create their adapters in float32; :func:`upcast_trainable_` does the same for whatever
  else trains (full fine-tuning), so AdamW's updates are not rounded to 8 mantissa bits.
* a k-bit base (:mod:`ftlab.models.quantization`): peft's ``prepare_model_for_kbit_training``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers.utils import is_flash_attn_2_available

from ftlab.core.errors import ConfigError, fail
from ftlab.models.quantization import is_quantized, validate_quantization

ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
CHECKPOINT_KWARGS = {"use_reentrant": False}


def validate_attention(cfg: Any, host_cpu: bool = False) -> None:
    """``host_cpu``: the hardware target's flag (its devices are CPU cores), passed in by the caller
    because hardware targets sit on a floor above the models."""
    impl = cfg.model.attn_implementation
    if impl not in ATTN_IMPLEMENTATIONS:
        fail("model.attn_implementation", impl, f"one of {list(ATTN_IMPLEMENTATIONS)}")
    if impl == "flash_attention_2":
        if not is_flash_attn_2_available():
            fail("model.attn_implementation", impl, "sdpa or eager here: flash_attention_2 needs the flash-attn "
                 "package and a CUDA GPU (pip install flash-attn on the GPU machine)")
        if host_cpu:
            fail("model.attn_implementation", impl, f"sdpa or eager with hardware.accelerator={cfg.hardware.accelerator}")


def validate_model(cfg: Any, quantizable: Sequence[str], host_cpu: bool = False) -> None:
    """Config checks of the model's memory features (registered in ``ftlab.preflight.validate``);
    ``quantizable``: the adapters that train beside a k-bit base; ``host_cpu``: the hardware
    target's flag of the same name."""
    validate_attention(cfg, host_cpu)
    validate_quantization(cfg, quantizable)


def enable_gradient_checkpointing(model: nn.Module) -> None:
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ConfigError("train.gradient_checkpointing", True,
                          f"false for {type(model).__name__} (transformers has no checkpointing for it)")
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 (the old name is deprecated)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=dict(CHECKPOINT_KWARGS))
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=dict(CHECKPOINT_KWARGS))
    model.enable_input_require_grads()
    # model.config.use_cache stays as it is: transformers turns the cache off for checkpointed
    # training forwards itself, and the exported model should generate with its cache


def prepare_for_training(model: nn.Module, cfg: Any) -> nn.Module:
    """The base as an adapter expects it: k-bit preparation (QLoRA) or plain checkpointing."""
    checkpointing = bool(cfg.train.gradient_checkpointing)
    if is_quantized(model):
        from peft import prepare_model_for_kbit_training  # heavy (~4 s of imports): k-bit bases only

        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing,
                                               gradient_checkpointing_kwargs=dict(CHECKPOINT_KWARGS))
    if checkpointing:
        enable_gradient_checkpointing(model)
    return model


def upcast_trainable_(model: nn.Module) -> int:
    """Trainable half-precision parameters to float32, in place; returns how many were cast."""
    cast = 0
    for p in model.parameters():
        if p.requires_grad and p.dtype in (torch.float16, torch.bfloat16):
            p.data = p.data.float()
            cast += 1
    return cast
