"""Which weights are pruned, and how their parameter names survive adapter wrapping.

Masks are keyed by the *base model's* parameter names (``model.layers.0.self_attn.q_proj.weight``).
peft renames what it wraps (``base_model.model.<name>``, ``<module>.base_layer.weight``), so every
lookup goes through :func:`canonical_name`; merged models are plain HF models again and need none.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatch

from torch import nn

from ftlab.errors import ConfigError
from ftlab.models.structure import decoder_linears, layer_patterns, router_names

_PEFT_PREFIX = "base_model.model."

#: Attention projections whose rows (or, for ``o_proj``, columns) form heads:
#: leaf name -> (dimension holding the heads, config attribute with their count).
HEAD_PROJECTIONS: dict[str, tuple[str, str]] = {
    "q_proj": ("out", "num_attention_heads"),
    "k_proj": ("out", "num_key_value_heads"),
    "v_proj": ("out", "num_key_value_heads"),
    "o_proj": ("in", "num_attention_heads"),
}


def canonical_name(name: str) -> str:
    """The base model's name of a parameter seen through a peft wrapper."""
    if name.startswith(_PEFT_PREFIX):
        name = name[len(_PEFT_PREFIX):]
    while ".base_layer." in name:  # nested: peft wraps a second expert parameter of one module again
        name = name.replace(".base_layer.", ".")
    return name


def canonical_parameters(model: nn.Module) -> dict:
    """``{canonical name: parameter}`` of a (possibly peft-wrapped) model."""
    return {canonical_name(n): p for n, p in model.named_parameters()}


def prunable_linears(model: nn.Module, patterns: list[str]) -> dict[str, nn.Linear]:
    """``{weight name: linear}`` of the linears whose module name matches one of ``patterns``.

    Embeddings, norms, the LM head and MoE routers are never returned, whatever the patterns say:
    pruning them is not what the sparse-fine-tuning studies measure, the LM head is often tied to
    the input embedding, and a router decides which experts run.
    """
    never = {id(model.get_input_embeddings()), id(model.get_output_embeddings())}
    never |= {id(model.get_submodule(n)) for n in router_names(model)}
    found: dict[str, nn.Linear] = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or id(module) in never:
            continue
        if any(fnmatch(name, p) for p in patterns):
            found[f"{name}.weight"] = module
    return found


def select_modules(model: nn.Module, patterns: list[str]) -> dict[str, nn.Linear]:
    """:func:`prunable_linears`, failing with one line when nothing matches."""
    found = prunable_linears(model, list(patterns))
    if not found:
        raise ConfigError("sparsity.modules", list(patterns),
                          "fnmatch patterns matching at least one linear layer of the decoder blocks; this "
                          f"model's linear layers: {layer_patterns(decoder_linears(model))}")
    return found


@dataclass(frozen=True)
class HeadLayout:
    """How one attention projection splits into heads."""

    dim: str  # "out": heads are blocks of rows; "in": blocks of columns
    heads: int


def head_layout(model_config, weight_name: str, shape: tuple[int, int]) -> HeadLayout:
    """The heads of an attention projection; a module without heads is a one-line error."""
    leaf = weight_name.rsplit(".", 2)[-2]
    if leaf not in HEAD_PROJECTIONS:
        raise ConfigError("sparsity.structure", "head",
                          f"attention projections only ({sorted(HEAD_PROJECTIONS)}); module "
                          f"{weight_name.removesuffix('.weight')!r} has no heads (use structure=channel "
                          "or restrict sparsity.modules, e.g. ['*.self_attn.*'])")
    dim, attr = HEAD_PROJECTIONS[leaf]
    heads = getattr(model_config, attr, None) or getattr(model_config, "num_attention_heads", None)
    size = shape[0] if dim == "out" else shape[1]
    if not heads or size % heads:
        raise ConfigError("sparsity.structure", "head",
                          f"a module whose {dim} dimension splits into heads; {weight_name} has {size} "
                          f"{'rows' if dim == 'out' else 'columns'} and {heads} heads")
    return HeadLayout(dim, int(heads))
