"""Structures that structured pruning removes whole: attention KV groups and MLP channels.

A :class:`Structure` is a set of weights cut into the same number of units along one dimension
each; unit ``u`` of every member is kept or pruned by one decision, so pruning it removes a
computation, and the pruned model equals a smaller dense model with those units sliced out.

* ``head`` — one unit per KV head (a GQA group): the rows of its query heads in ``q_proj``, its
  rows in ``k_proj`` and ``v_proj``, and its query heads' columns in ``o_proj``. Whole groups
  are scored and pruned, not single query heads: transformers' attention needs the same number
  of query heads per KV head, so only whole groups leave a model that a smaller config can
  express (and that is faster in practice); with MHA a group is one head.
* ``channel`` — one unit per MLP intermediate channel: its row in ``gate_proj`` and ``up_proj``
  (``fc1``; experts' ``w1``/``w3``) and its column in ``down_proj`` (``fc2``; ``w2``).

* ``channel`` of a fused experts module: per expert ``e``, one unit per intermediate channel of
  that expert: its rows in ``gate_up_proj[e]`` (the gate row and the up row: the dimension is
  [gate; up], so the layout has two parts) and its column in ``down_proj[e]``. Experts are
  pruned independently (each expert ranks its own channels).

A selected module pulls in the rest of its structure (pruning q rows alone leaves a head that
still attends, uniformly, to its values).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import nn

from ftlab.core.errors import ConfigError
from ftlab.core.plugins import Registry
from ftlab.models.structure import LINEAR_TYPES, is_transposed
from ftlab.sparsity.selection import HeadLayout, unit_name, unit_parts

#: leaf name -> dimension that holds the units ("out": row blocks, "in": column blocks)
HEAD_MEMBERS = {"q_proj": "out", "k_proj": "out", "v_proj": "out", "o_proj": "in"}
CHANNEL_MEMBERS = {"gate_proj": "out", "up_proj": "out", "down_proj": "in", "fc1": "out", "fc2": "in",
                   "w1": "out", "w3": "out", "w2": "in", "c_fc": "out", "c_proj": "in"}  # GPT-2: Conv1D
#: fused experts: parameter leaf -> (unit dimension, concatenated parts)
EXPERT_CHANNEL_MEMBERS = {"gate_up_proj": ("out", 2), "down_proj": ("in", 1)}
@dataclass(frozen=True)
class StructureSpec:
    """A kind of structure ``sparsity.structure`` names: which sibling linears form one, along
    which dimension each holds the units, and how many units there are. :func:`find_structures`
    reads these fields, never structure names, so a structure added from outside (entry-point
    group ``ftlab.structures``) is found, checked and pruned like a built-in one."""

    name: str
    #: leaf module name -> the dimension holding the units ("out": row blocks, "in": column blocks)
    members: Mapping[str, str]
    #: what the members are, for messages ("MLP projections")
    what: str
    #: why another module is not one, for messages ("is not an MLP projection")
    lacks: str
    #: how to restrict ``sparsity.modules`` to members, for messages
    hint: str
    #: model-config attributes giving the unit count (the first one set); empty: the members'
    #: shared size along their unit dimensions (one unit per row/column)
    units_from: tuple[str, ...] = ()
    #: a structure needs every member (a head without its o_proj columns still attends)
    all_members: bool = False
    #: fused experts' parameter leaf -> (unit dimension, concatenated parts); ``None``: experts
    #: have no such structure
    expert_members: Mapping[str, tuple[str, int]] | None = None
    #: run-config keys of its own settings; they enter the mask key
    config_keys: tuple[str, ...] = ()
    doc: str = ""


_REGISTRY: Registry[StructureSpec] = Registry("structure", "sparsity.structure", StructureSpec, "ftlab.structures")


register_structure = _REGISTRY.register
all_structures = _REGISTRY.all
#: the spec of a registered structure; one line on ``sparsity.structure`` naming them otherwise
get_structure = _REGISTRY.get


HEAD = register_structure(StructureSpec(
    "head", HEAD_MEMBERS, what="attention projections", lacks="has no heads",
    hint="restrict sparsity.modules to attention, e.g. ['*.self_attn.*']",
    units_from=("num_key_value_heads", "num_attention_heads"), all_members=True,
    doc="a KV group: its query heads' q_proj rows, its k_proj/v_proj rows, its query heads' o_proj columns"))
CHANNEL = register_structure(StructureSpec(
    "channel", CHANNEL_MEMBERS, what="MLP projections", lacks="is not an MLP projection",
    hint="restrict sparsity.modules to MLPs, e.g. ['*.mlp.*']", expert_members=EXPERT_CHANNEL_MEMBERS,
    doc="an MLP intermediate channel: its gate/up (fc1) rows and its down (fc2) column"))


@dataclass(frozen=True)
class Structure:
    """``units`` blocks along ``members[name]`` ("out"/"in") of every member weight."""

    name: str
    units: int
    members: dict[str, str]
    #: members whose unit dimension is several concatenated stretches (``gate_up_proj``: 2)
    parts: tuple[tuple[str, int], ...] = ()

    def layout(self, weight: str) -> HeadLayout:
        return HeadLayout(self.members[weight], self.units, dict(self.parts).get(weight, 1))


def _expert_structure(model: nn.Module, param: str, expert: int, spec: StructureSpec) -> Structure:
    """One expert's units: for ``channel``, rows of its [gate; up] and columns of its down projection."""
    owner = param.rsplit(".", 1)[0]
    module = model.get_submodule(owner)
    kind = spec.name
    table = spec.expert_members
    if table is None or not getattr(module, "is_concatenated", True) or getattr(module, "is_transposed", False):
        raise ConfigError("sparsity.structure", kind, f"structure=channel on experts stored as [gate; up] "
                          f"(out, in) matrices; {owner} is not (restrict sparsity.modules to attention, e.g. "
                          "['*.self_attn.*'], for structure=head)")
    names = {leaf: f"{owner}.{leaf}" for leaf in table}
    missing = [n for n in names.values() if not hasattr(module, n.rsplit(".", 1)[1])]
    if missing:
        raise ConfigError("sparsity.structure", kind, f"experts with {' and '.join(table)}; {owner} lacks {missing}")
    units_leaf = next(leaf for leaf, (dim, _) in table.items() if dim == "in")
    units = int(getattr(module, units_leaf).shape[-1])
    members = {unit_name(n, expert): table[leaf][0] for leaf, n in names.items()}
    parts = tuple((unit_name(names[leaf], expert), count) for leaf, (_, count) in table.items() if count != 1)
    return Structure(unit_name(owner, expert), units, members, parts)


def _out_in(lin: nn.Module) -> tuple[int, int]:
    """(out, in) of a linear layer; a ``Conv1D`` stores its weight (in, out)."""
    rows, cols = lin.weight.shape
    return (cols, rows) if is_transposed(lin) else (rows, cols)


def _units_of(spec: StructureSpec, parent: str, linears: dict[str, nn.Linear], model_config) -> int:
    kind = spec.name
    if spec.units_from:
        heads = next((getattr(model_config, a) for a in spec.units_from if getattr(model_config, a, None)), None)
        if not heads:
            raise ConfigError("sparsity.structure", kind, f"a model config with {spec.units_from[-1]}")
        return int(heads)
    sizes = {_out_in(lin)[0 if dim == "out" else 1] for leaf, (lin, dim) in linears.items()}
    if len(sizes) != 1:
        raise ConfigError("sparsity.structure", kind, f"{spec.what} that share one unit count; "
                          f"{parent} has {sorted(sizes)}")
    return sizes.pop()


def find_structures(model: nn.Module, weight_names: list[str], kind: str) -> list[Structure]:
    """The structures the selected weights belong to (each with all its members); ``kind`` names
    a registered :class:`StructureSpec`."""
    spec = get_structure(kind)
    table = spec.members
    modules = dict(model.named_modules())
    parents: list[str] = []
    experts: dict[str, Structure] = {}
    for name in weight_names:
        param, expert = unit_parts(name)
        if expert is not None:
            st = _expert_structure(model, param, expert, spec)
            experts.setdefault(st.name, st)
            continue
        parent, _, leaf = name.removesuffix(".weight").rpartition(".")
        if leaf not in table:
            raise ConfigError("sparsity.structure", kind,
                              f"{spec.what} only ({sorted(table)}); module {name.removesuffix('.weight')!r} "
                              f"{spec.lacks} ({spec.hint})")
        if parent not in parents:
            parents.append(parent)
    out = []
    for parent in parents:
        owner = modules[parent]
        linears = {leaf: (getattr(owner, leaf), dim) for leaf, dim in table.items()
                   if isinstance(getattr(owner, leaf, None), LINEAR_TYPES)}
        dims = {dim for _, dim in linears.values()}
        if (spec.all_members and set(linears) != set(table)) or dims != {"out", "in"}:
            raise ConfigError("sparsity.structure", kind, f"structures with all their projections; {parent} has "
                              f"only {sorted(linears)}")
        units = _units_of(spec, parent, linears, model.config)
        for leaf, (lin, dim) in linears.items():
            size = _out_in(lin)[0 if dim == "out" else 1]
            if size % units:
                raise ConfigError("sparsity.structure", kind, f"a module whose {dim} dimension splits into "
                                  f"{units} units; {parent}.{leaf} has {size}")
        out.append(Structure(parent, units, {f"{parent}.{leaf}.weight": dim for leaf, (_, dim) in linears.items()}))
    return out + list(experts.values())
