"""Mask methods and structures are registered specs: the code reads their flags, so a method or a
structure registered from outside composes, is checked in one line, computes masks and keys the
mask step by its own settings like a built-in one."""

from __future__ import annotations

import pytest
import torch

from ftlab.core.errors import ConfigError
from ftlab.models import build_model, build_tokenizer
from ftlab.preflight.compose import compose_run
from ftlab.reuse import steps as S
from ftlab.sparsity.compute import compute_masks, spec_of
from ftlab.sparsity.masks import lowest_k_masks, prune_count, structured_ok
from ftlab.sparsity.methods import MaskMethodSpec, all_methods, get_method, register_method
from ftlab.sparsity.structures import StructureSpec, find_structures, register_structure


def _strided(scores, spec, structures, levels):
    """Test method: only every ``stride``-th input column may be pruned, lowest first per layer."""
    stride = int(spec.options.get("stride", 1))
    out = {}
    for name, s in scores.items():
        eligible = s.float().clone()
        keep_always = torch.ones(s.shape[1], dtype=torch.bool)
        keep_always[::stride] = False
        eligible[:, keep_always] = float("inf")
        out[name] = lowest_k_masks([eligible], prune_count(spec.level, s.numel()))[0]
    return out


def _check_stride(sp) -> None:
    stride = sp.options.get("stride", 1)
    if not isinstance(stride, int) or stride < 1:
        raise ConfigError("sparsity.options.stride", stride, "an integer >= 1")


STRIDED = register_method(MaskMethodSpec("h23_strided", _strided, groups=("layer",),
                                         config_keys=("sparsity.options.stride",), validate=_check_stride))
#: a KV group's value rows and its query heads' o_proj columns (q and k left whole)
VALUE_GROUP = register_structure(StructureSpec(
    "h23_value_group", {"v_proj": "out", "o_proj": "in"}, what="value and output projections",
    lacks="is neither v_proj nor o_proj", hint="restrict sparsity.modules to ['*.self_attn.v_proj']",
    units_from=("num_key_value_heads", "num_attention_heads"), all_members=True,
    config_keys=("sparsity.options.vo",)))


def test_builtin_methods_are_specs_with_flags():
    flags = {m.name: (m.elementwise, m.finds_structures, m.needs_n_m, m.allocates, m.importance, m.groups)
             for m in all_methods() if not m.name.startswith("h23_")}
    assert flags == {
        "unstructured": (True, False, False, True, None, ("layer", "row", "global")),
        "structured": (False, True, False, False, None, ("layer",)),
        "nm": (False, False, True, False, None, ("layer",)),
        "random": (True, False, False, False, "random", ("layer", "row", "global")),
    }
    with pytest.raises(ConfigError, match=r"sparsity.method='lottery' is invalid: one of \[.*'nm'.*\] \(or none\)"):
        get_method("lottery")
    with pytest.raises(ValueError, match="not both"):
        MaskMethodSpec("bad", _strided, finds_structures=True, needs_n_m=True)


def test_a_registered_method_composes_is_checked_and_keys_the_mask_by_its_own_setting():
    one = compose_run(["sparsity=unstructured", "sparsity.method=h23_strided", "+sparsity.options.stride=2",
                       "sparsity.level=0.25"])
    two = compose_run(["sparsity=unstructured", "sparsity.method=h23_strided", "+sparsity.options.stride=4"])
    keys = [S.run_steps(S.as_plain(c)).mask.key for c in (one, two)]
    assert keys[0] != keys[1]
    assert "sparsity.options.stride" in S.mask_keys(S.as_plain(one))
    assert "sparsity.options.stride" not in S.mask_keys(S.as_plain(compose_run(["sparsity=unstructured"])))
    with pytest.raises(ConfigError, match=r"sparsity.options.stride=0 is invalid: an integer >= 1"):
        compose_run(["sparsity=unstructured", "sparsity.method=h23_strided", "+sparsity.options.stride=0"])
    with pytest.raises(ConfigError, match="'layer' for method=h23_strided"):
        compose_run(["sparsity=unstructured", "sparsity.method=h23_strided", "sparsity.group=row"])
    with pytest.raises(ConfigError, match="sparsity.allocation='owl' is invalid: method=unstructured"):
        compose_run(["sparsity=unstructured", "sparsity.method=h23_strided", "sparsity.allocation=owl"])
    tok = build_tokenizer(one.model)
    model = build_model(one.model, tok, seed=0)
    masks = compute_masks(one, model, tok)
    for name, mask in masks.items():
        assert mask[:, 1::2].all(), name  # only the stride's columns are pruned
        assert (~mask).sum().item() == prune_count(spec_of(one.sparsity).target, mask.numel()), name


def test_a_registered_structure_is_found_pruned_whole_and_keyed():
    cfg = compose_run(["sparsity=structured", "sparsity.structure=h23_value_group",
                       "sparsity.modules=[*.self_attn.v_proj]", "+sparsity.options.vo=1"])
    other = compose_run(["sparsity=structured", "sparsity.structure=h23_value_group",
                         "sparsity.modules=[*.self_attn.v_proj]", "+sparsity.options.vo=2"])
    assert S.run_steps(S.as_plain(cfg)).mask.key != S.run_steps(S.as_plain(other)).mask.key
    tok = build_tokenizer(cfg.model)
    model = build_model(cfg.model, tok, seed=0)
    masks = compute_masks(cfg, model, tok)
    assert {n.rsplit(".", 2)[-2] for n in masks} == {"v_proj", "o_proj"}  # v_proj pulls in o_proj
    units = model.config.num_key_value_heads
    structures = find_structures(model, list(masks), "h23_value_group")
    for st in structures:
        assert st.units == units
        for name in st.members:
            assert structured_ok(masks[name], st.layout(name)), name
    with pytest.raises(ConfigError, match="is neither v_proj nor o_proj"):
        compose_run(["sparsity=structured", "sparsity.structure=h23_value_group", "sparsity.modules=[*.mlp.*]"])
    for option in ("sparsity=structured", "sparsity=unstructured"):  # unknown even where unused: a typo
        with pytest.raises(ConfigError, match=r"sparsity.structure='ring' is invalid: one of \['channel', .*'head'"):
            compose_run([option, "sparsity.structure=ring"])
