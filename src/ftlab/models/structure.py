"""Where the adaptable linears of a Hugging Face causal LM are, read from the loaded model.

Architectures name their layers differently (``q_proj`` / ``query_key_value`` / ``dense`` /
``fc1``), so lists of names copied from a Llama preset break on GPT-NeoX or Phi. This module
answers from the model itself:

* the *decoder blocks* are the modules whose class transformers marks as not to be split across
  devices (``_no_split_modules``, e.g. ``LlamaDecoderLayer``, ``GPTNeoXLayer``) — the same unit
  FSDP wraps; models without that attribute fall back to the longest ``nn.ModuleList``;
* *routers* of mixture-of-experts blocks (Mixtral ``mlp.gate``, Qwen2-MoE ``mlp.gate`` and
  ``mlp.shared_expert_gate``) are the modules with their own weight that sit directly in a block
  that also holds ``experts``. A LoRA on a router changes which experts run, which is not what
  parameter-efficient fine-tuning of the experts means; peft's ``all-linear`` skips them too;
* the *decoder linears* are every ``nn.Linear`` (bitsandbytes' 4/8-bit linears subclass it) and
  every transformers ``Conv1D`` (GPT-2's ``c_attn``/``c_fc``/``c_proj``, weight stored as
  ``(in, out)``) inside a decoder block that is not a router: peft's ``all-linear`` meaning, minus
  the LM head, which lives outside the blocks;
* the *expert parameters* are the fused 3-D weights transformers 5 stores an MoE block's experts
  in (Mixtral / Qwen2-MoE / Qwen3-MoE ``mlp.experts.gate_up_proj`` ``(experts, 2 x inter, hidden)``
  and ``down_proj`` ``(experts, hidden, inter)``): no ``nn.Linear`` exists per expert, so a list of
  linears alone would skip almost every weight of the model. Each ``[e]`` slice is one expert's
  ``(out, in)`` matrix (``(in, out)`` where the experts module says ``is_transposed``).
"""

from __future__ import annotations

import re

from torch import nn
from transformers.pytorch_utils import Conv1D

#: module types that are a linear map ``y = x W^T + b`` (Conv1D: ``y = x W + b``, W stored transposed)
LINEAR_TYPES = (nn.Linear, Conv1D)


def decoder_layer_classes(model: nn.Module) -> set[type]:
    """Classes of the decoder blocks (what transformers will not split; FSDP's wrap unit)."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    classes = {type(m) for m in model.modules() if type(m).__name__ in names}
    if classes:
        return classes
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m)]
    if not lists:
        return set()
    longest = max(lists, key=len)
    return {type(m) for m in longest}


def decoder_blocks(model: nn.Module) -> list[str]:
    """Module names of the decoder blocks, outermost only, in model order."""
    classes = decoder_layer_classes(model)
    blocks: list[str] = []
    for name, module in model.named_modules():
        if type(module) in classes and not any(name.startswith(b + ".") for b in blocks):
            blocks.append(name)
    return blocks


def _in_blocks(name: str, blocks: list[str]) -> bool:
    return any(name.startswith(b + ".") for b in blocks)


def router_names(model: nn.Module) -> list[str]:
    """Module names of MoE routers: weight-owning direct children of a block that has ``experts``."""
    found = []
    for name, module in model.named_modules():
        if not hasattr(module, "experts"):
            continue
        for child_name, child in module.named_children():
            if child_name == "experts" or "weight" not in dict(child.named_parameters(recurse=False)):
                continue
            found.append(f"{name}.{child_name}" if name else child_name)
    return found


def linear_names(model: nn.Module) -> list[str]:
    """Module names of every linear layer (``nn.Linear``, ``Conv1D``) of the model, in model order."""
    return [name for name, m in model.named_modules() if isinstance(m, LINEAR_TYPES)]


def is_transposed(module: nn.Module) -> bool:
    """The module stores its weight as ``(in, out)``: a ``Conv1D``, or fused experts that say so."""
    return isinstance(module, Conv1D) or bool(getattr(module, "is_transposed", False))


def expert_parameters(model: nn.Module) -> list[str]:
    """Parameter names of the fused expert weights inside decoder blocks (3-D parameters owned
    directly by a module named ``experts``), in model order; routers are never among them."""
    blocks = decoder_blocks(model)
    found = []
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] != "experts" or not _in_blocks(name, blocks):
            continue
        found += [f"{name}.{p}" for p, w in module.named_parameters(recurse=False) if w.dim() == 3]
    return found


def expert_count(model: nn.Module, param_name: str) -> int:
    """Experts stacked in a fused expert parameter (its first dimension)."""
    return int(model.get_parameter(param_name).shape[0])


def decoder_linears(model: nn.Module) -> list[str]:
    """Module names of the linears inside decoder blocks, routers excluded (the default targets)."""
    blocks = decoder_blocks(model)
    routers = set(router_names(model))
    return [n for n in linear_names(model) if _in_blocks(n, blocks) and n not in routers]


def leaf_names(names: list[str]) -> list[str]:
    """Distinct last components of module names, first-seen order (``q_proj``, ``k_proj``, ...)."""
    return list(dict.fromkeys(n.rsplit(".", 1)[-1] for n in names))


def matches(name: str, target: str) -> bool:
    """peft's rule for one entry of a ``target_modules`` list: the full name or its last components."""
    return name == target or name.endswith("." + target)


def layer_patterns(names: list[str]) -> list[str]:
    """Module names with layer indices as ``*`` (``model.layers.*.self_attn.q_proj``), deduplicated:
    a short listing of a deep model that is also valid ``fnmatch`` input."""
    return list(dict.fromkeys(re.sub(r"\.\d+(?=\.|$)", ".*", n) for n in names))
