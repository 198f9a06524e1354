"""A frozen k-bit base through bitsandbytes (QLoRA): load, check, and dequantize for export.

``model.quantization=nf4`` loads the base's linears as 4-bit NormalFloat (double quantisation,
compute in ``model.dtype``), ``int8`` as LLM.int8. Only low-rank adapters that train *next to*
a frozen weight can sit on top (peft's LoRA/DoRA bnb layers): full fine-tuning cannot update
packed weights. SoRA's gated layers call the k-bit layer for ``W x`` and dequantise it only to merge;
SDoRA's forward needs the dense weight norm every step, and masked LoRA and pruning masks write the
dense weight. Those combinations are refused by :func:`validate_quantization` before anything loads.

bitsandbytes >= 0.47 runs nf4/int8 on the CPU too (its multi-backend release), which is what
the tests use; older versions need CUDA, so the check names the version and what is missing.

Export dequantizes *before* merging: peft's own merge on a 4-bit layer would re-quantise
``W + dW`` and round most of a small ``dW`` away. :func:`dequantized_merge` unloads the adapter,
replaces the k-bit linears by plain ones holding the dequantised weights, re-attaches the same
adapter weights and merges in ``model.dtype``: the exported model is the function the run trained.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import tempfile
import warnings
from collections.abc import Sequence
from importlib import metadata
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from ftlab.core.errors import fail
from ftlab.models.dtypes import torch_dtype

QUANTIZATIONS = ("nf4", "int8")
#: first bitsandbytes release whose nf4/int8 kernels run without CUDA
CPU_BNB_VERSION = (0, 47)


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def bnb_problem(accelerator: str, cuda: bool | None = None) -> str | None:
    """Why bitsandbytes cannot run here (one phrase), or ``None``."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed (pip install bitsandbytes)"
    cuda = torch.cuda.is_available() if cuda is None else cuda
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and cuda)
    if on_gpu and not cuda:
        return "hardware.accelerator asks for a GPU and CUDA is not available"
    version = metadata.version("bitsandbytes")
    if not on_gpu and _version(version) < CPU_BNB_VERSION:
        return (f"bitsandbytes {version} needs CUDA; CPU kernels need >= "
                f"{'.'.join(map(str, CPU_BNB_VERSION))}")
    return None


def validate_quantization(cfg: Any, quantizable: Sequence[str]) -> None:
    """One line before any weight loads: unknown scheme, no usable bitsandbytes, or a combination
    that would have to write the packed weights. ``quantizable``: the adapters that train beside a
    frozen k-bit weight (their spec's ``supports_quantized_base``)."""
    q = cfg.model.quantization
    if q is None:
        return
    if q not in QUANTIZATIONS:
        fail("model.quantization", q, f"null or one of {list(QUANTIZATIONS)}")
    problem = bnb_problem(str(cfg.hardware.accelerator))
    if problem:
        fail("model.quantization", q, f"null on this machine: {problem}")
    if cfg.adapter.name not in quantizable:
        fail("adapter", cfg.adapter.name, f"one of {list(quantizable)} with model.quantization={q} "
             "(a k-bit base stays frozen: full fine-tuning, SDoRA's weight norm and masked LoRA need dense weights)")
    if cfg.base.enabled:
        fail("base.enabled", True, f"false with model.quantization={q} (base pre-training updates every weight)")


def dense_expert_params(model: nn.Module) -> int:
    """Parameters bitsandbytes would leave dense: fused MoE expert tensors (``[experts, out, in]``,
    as transformers >= 5 stores Mixtral's and Qwen2-MoE's experts). bitsandbytes quantises
    ``nn.Linear`` layers only, and peft's k-bit preparation then upcasts what stayed dense to
    float32."""
    return sum(p.numel() for p in model.parameters() if p.ndim >= 3)


def check_kbit_coverage(model: nn.Module, model_cfg: Any) -> None:
    """One line before any weight loads when ``model.quantization`` would leave most of the model
    dense: a "4-bit" Mixtral-8x7B whose experts (45 of its 47 B parameters) stay in float32 is
    larger than the bf16 model it was meant to shrink."""
    q = model_cfg.quantization
    dense = dense_expert_params(model) if q else 0
    if dense:
        total = sum(p.numel() for p in model.parameters())
        fail("model.quantization", q, f"null for {model_cfg.arch}: bitsandbytes quantises nn.Linear layers only, "
             f"and its fused MoE experts ({dense / 1e9:.3g} B of {total / 1e9:.3g} B parameters) would stay dense "
             "and be upcast to float32 by k-bit preparation; shard it with hardware=fsdp instead")


def bnb_config(model_cfg: Any):
    """transformers' ``BitsAndBytesConfig`` for ``model.quantization`` (compute in ``model.dtype``)."""

    if model_cfg.quantization == "nf4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch_dtype(model_cfg.dtype))
    return BitsAndBytesConfig(load_in_8bit=True)


def device_map() -> dict[str, Any]:
    """bitsandbytes quantises while loading, on the device the weights land on: this rank's GPU,
    else the CPU."""
    if torch.cuda.is_available():
        return {"": int(os.environ.get("LOCAL_RANK", 0))}
    return {"": "cpu"}


def load_quantized(path: str, model_cfg: Any, attn: str | None = None) -> nn.Module:
    """``attn``: the attention implementation to load with (default ``model.attn_implementation``)."""

    if model_cfg.quantization == "int8":
        # LLM.int8 multiplies in fp16 and says so on every call of every layer for other input dtypes
        warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast")

    return AutoModelForCausalLM.from_pretrained(
        path, dtype=torch_dtype(model_cfg.dtype), quantization_config=bnb_config(model_cfg),
        device_map=device_map(), attn_implementation=attn or model_cfg.attn_implementation)


def quantize_built(model: nn.Module, model_cfg: Any, attn: str | None = None) -> nn.Module:
    """A model built from a config (random init) as a k-bit model: transformers quantises only
    while loading, so the weights go through a temporary HF directory (tiny models: milliseconds)."""
    with tempfile.TemporaryDirectory(prefix="ftlab-quantize-") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        return load_quantized(tmp, model_cfg, attn)


def is_quantized(model: nn.Module) -> bool:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool(getattr(inner, "is_quantized", False) or getattr(inner, "hf_quantizer", None))


def unpack_cpu_weights_(model: nn.Module) -> None:
    """Undo bitsandbytes' CPU repacking, in place. On CPUs with AVX512-BF16 a ``Linear4bit``
    rewrites its weight into a kernel-specific layout at its first inference forward (evaluation);
    dequantisation reads the standard layout, so the packed weights are converted back first."""
    for module in model.modules():
        weight = getattr(module, "weight", None)
        state = getattr(weight, "quant_state", None)
        if state is not None and getattr(state, "packing_format_for_cpu", False):
            # private, but the one inverse bitsandbytes itself calls before saving such a weight
            from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse  # optional dependency

            weight.data, weight.quant_state = _convert_weight_packed_for_cpu_inverse(weight.data, state)


def dequantized_merge(peft_model: nn.Module) -> nn.Module:
    """The merged model with the base dequantised first (see the module docstring); consumes
    ``peft_model``."""
    # peft is heavy (~4 s of imports): a k-bit merge only
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    name = peft_model.active_adapter
    config = copy.deepcopy(peft_model.peft_config[name])
    state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(peft_model, adapter_name=name).items()}
    base = dequantized_model(peft_model.unload())
    config.inference_mode = False
    plain = get_peft_model(base, config)
    set_peft_model_state_dict(plain, state)
    return plain.merge_and_unload().to(base.dtype)


def dequantized_model(model: nn.Module) -> nn.Module:
    """``model`` with every k-bit linear replaced by a plain one holding its dequantised weight,
    all in the load dtype (k-bit preparation upcast norms and embeddings to float32)."""
    unpack_cpu_weights_(model)
    dtype = model.config.dtype
    kbit = any(not w.is_floating_point() for w in (getattr(m, "weight", None) for m in model.modules())
               if isinstance(w, torch.Tensor))
    if not kbit:  # every k-bit linear was replaced already (transformers' dequantize fails on none)
        model.hf_quantizer.remove_quantization_config(model)
        return model.to(dtype)
    try:
        model = model.dequantize(dtype=dtype) or model
    except TypeError:  # transformers < 5: no dtype argument (dequantises to the load dtype)
        model = model.dequantize() or model
    return model.to(dtype)


def dense_weight(linear: nn.Module) -> torch.Tensor:
    """A linear's weight as a dense tensor: dequantised for bitsandbytes' k-bit layers (in their
    compute dtype), the weight itself otherwise."""
    weight = linear.weight
    if weight.is_floating_point():
        return weight
    from peft.utils.integrations import dequantize_bnb_weight  # heavy: k-bit weights only

    unpack_cpu_weights_(linear)
    weight = linear.weight
    state = getattr(weight, "quant_state", None) or getattr(linear, "state", None)  # nf4 | int8
    return dequantize_bnb_weight(weight, state=state)
