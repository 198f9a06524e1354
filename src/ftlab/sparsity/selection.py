"""Which weights are pruned, and how their parameter names survive adapter wrapping.

Masks are keyed by the *base model's* parameter names (``model.layers.0.self_attn.q_proj.weight``).
peft renames what it wraps (``base_model.model.<name>``, ``<module>.base_layer.weight``), so every
lookup goes through :func:`canonical_name`; merged models are plain HF models again and need none.

Scoring works on *units*, each one ``(out, in)`` matrix (:class:`WeightView`): a linear's weight,
a ``Conv1D``'s weight transposed, or one expert's slice ``[e]`` of a fused expert parameter (named
``<parameter>[e]``). Every per-layer rule (the ``layer`` comparison group, N:M groups along the
input columns, structured channels, OWL's and Wanda's statistics) therefore holds inside one
expert's matrix; :func:`ftlab.sparsity.masks.assemble_units` stacks the unit masks back into masks
of the parameters' own shapes, which is what is applied, saved and validated.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatch

import torch
from torch import nn

from ftlab.core.errors import ConfigError
from ftlab.models.structure import (
    LINEAR_TYPES,
    decoder_linears,
    expert_parameters,
    is_transposed,
    layer_patterns,
    router_names,
)

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


@dataclass(eq=False)
class WeightView:
    """One ``(out, in)`` matrix the mask pipeline scores (see the module docstring): ``weight`` is a
    view into the parameter, so writes (W ⊙ M, SparseGPT's reconstruction) land in the model."""

    param_name: str
    param: nn.Parameter
    module: nn.Module  # the linear, Conv1D or experts module holding the parameter
    expert: int | None = None
    transposed: bool = False

    def view(self, tensor: torch.Tensor) -> torch.Tensor:
        """This unit's ``(out, in)`` view of a tensor of the parameter's shape (weight, gradient)."""
        t = tensor if self.expert is None else tensor[self.expert]
        return t.t() if self.transposed else t

    @property
    def weight(self) -> torch.Tensor:
        return self.view(self.param)

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])


def unit_name(param_name: str, expert: int | None) -> str:
    return param_name if expert is None else f"{param_name}[{expert}]"


def unit_parts(name: str) -> tuple[str, int | None]:
    """``(parameter name, expert index or None)`` of a unit name."""
    if name.endswith("]") and "[" in name:
        param, _, index = name[:-1].rpartition("[")
        return param, int(index)
    return name, None


def transposed_parameters(model: nn.Module) -> list[str]:
    """Parameter names stored ``(in, out)``: ``Conv1D`` weights and experts that say ``is_transposed``."""
    found = [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, LINEAR_TYPES) and is_transposed(m)]
    return found + [p for p in expert_parameters(model) if is_transposed(model.get_submodule(p.rsplit(".", 1)[0]))]


def prunable_linears(model: nn.Module, patterns: list[str] | None) -> dict[str, WeightView]:
    """``{unit name: view}`` of the linear layers (``nn.Linear``, ``Conv1D``) whose module name, and
    of the experts of the fused expert parameters whose module or parameter name, matches one of
    ``patterns`` (``*.mlp.*`` selects every expert of every block). ``None`` (the default of
    ``sparsity.modules``) selects every linear and expert inside the decoder blocks, found by
    structure (:func:`ftlab.models.structure.decoder_blocks`) rather than by a name pattern, which
    would hold for one family's layout only (``model.layers.*`` vs GPT-2's ``transformer.h.*``).

    Embeddings, norms, the LM head and MoE routers are never returned, whatever the patterns say:
    pruning them is not what the sparse-fine-tuning studies measure, the LM head is often tied to
    the input embedding, and a router decides which experts run.
    """
    never = {id(model.get_input_embeddings()), id(model.get_output_embeddings())}
    never |= {id(model.get_submodule(n)) for n in router_names(model)}
    in_blocks = set(decoder_linears(model)) if patterns is None else set()
    found: dict[str, WeightView] = {}
    for name, module in model.named_modules():
        if not isinstance(module, LINEAR_TYPES) or id(module) in never:
            continue
        if name in in_blocks if patterns is None else any(fnmatch(name, p) for p in patterns):
            found[f"{name}.weight"] = WeightView(f"{name}.weight", module.weight, module, None, is_transposed(module))
    for param_name in expert_parameters(model):
        owner = param_name.rsplit(".", 1)[0]
        if patterns is not None and not any(fnmatch(owner, p) or fnmatch(param_name, p) for p in patterns):
            continue
        module = model.get_submodule(owner)
        param = model.get_parameter(param_name)
        for e in range(param.shape[0]):
            found[unit_name(param_name, e)] = WeightView(param_name, param, module, e, is_transposed(module))
    return found


def select_modules(model: nn.Module, patterns: list[str] | None) -> dict[str, WeightView]:
    """:func:`prunable_linears`, failing with one line when nothing matches."""
    patterns = None if patterns is None else list(patterns)
    found = prunable_linears(model, patterns)
    if not found:
        raise ConfigError("sparsity.modules", patterns,
                          "fnmatch patterns matching at least one linear layer or expert of the decoder blocks; "
                          f"this model's linear layers: {layer_patterns(decoder_linears(model))}"
                          + (f", experts: {layer_patterns(expert_parameters(model))}" if expert_parameters(model)
                             else ""))
    return found


@dataclass(frozen=True)
class HeadLayout:
    """How one attention projection splits into heads."""

    dim: str  # "out": heads are blocks of rows; "in": blocks of columns
    heads: int
    #: the dimension holds ``parts`` concatenated stretches of ``heads`` blocks each, unit ``u``
    #: owning block ``u`` of every stretch (an expert's fused ``gate_up_proj``: [gate; up] rows)
    parts: int = 1


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
