"""The importance registry: every score's flags decide the mask key, the computation and the
checks; a score added from outside (an import path here) needs no edit anywhere else."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from ftlab.artifacts.keys import lookup
from ftlab.core.errors import ConfigError
from ftlab.models import build_model, build_tokenizer
from ftlab.preflight.compose import compose_run
from ftlab.reuse import steps as S
from ftlab.sparsity.compute import compute_masks
from ftlab.sparsity.importance import (
    ImportanceSpec,
    all_importances,
    effective_importance,
    get_importance,
    importance_spec,
)

BUILTIN = ("magnitude", "gradient", "taylor", "wanda", "sparsegpt", "random")


def plain(*overrides: str) -> dict[str, Any]:
    return S.as_plain(compose_run(["sparsity=unstructured", *overrides]))


def mask_key(c: dict[str, Any]) -> str:
    return S.run_steps(c).mask.key


def changed(c: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    c = copy.deepcopy(c)
    *head, last = dotted.split(".")
    node = c
    for part in head:
        node = node.setdefault(part, {})
    node[last] = value
    return c


def test_builtins_are_registered_with_consistent_flags():
    specs = {s.name: s for s in all_importances()}
    assert set(BUILTIN) <= set(specs)
    assert [n for n in BUILTIN if specs[n].calibrated] == ["gradient", "taylor", "wanda", "sparsegpt"]
    assert [n for n in BUILTIN if specs[n].sequential] == ["wanda", "sparsegpt"]
    assert [n for n in BUILTIN if specs[n].reconstructs_weights] == ["sparsegpt"]
    assert all(s.doc for s in specs.values())


@pytest.mark.parametrize("name", BUILTIN)
def test_mask_key_covers_what_the_spec_says_it_reads(name):
    c = plain(f"sparsity.importance={name}")
    spec = get_importance(name)
    keys = S.mask_keys(c)
    assert set(spec.config_keys) <= set(keys)
    for key in spec.config_keys:  # the score's own settings change the mask key
        value = lookup(c, key)
        new = {**value, "extra": 1} if isinstance(value, dict) else value
        assert mask_key(changed(c, key, new)) != mask_key(c), key
    moved = mask_key(changed(c, "sparsity.calibration.batches", 3)) != mask_key(c)
    assert moved is spec.calibrated
    assert (mask_key(changed(c, "sparsity.seed", 7)) != mask_key(c)) is spec.seeded


def test_random_method_means_random_importance_everywhere():
    assert effective_importance({"method": "random", "importance": "wanda"}) == "random"
    assert effective_importance({"method": "unstructured", "importance": "wanda"}) == "wanda"
    c = plain("sparsity.method=random", "sparsity.importance=wanda")
    assert importance_spec(c["sparsity"]).name == "random"
    assert not set(S.CALIBRATION_KEYS) & {k for k in S.mask_keys(c) if k.startswith("sparsity.calibration")}


def test_unknown_importance_is_one_line_naming_the_choices():
    with pytest.raises(ConfigError) as err:
        compose_run(["sparsity=unstructured", "sparsity.importance=nope"])
    assert "sparsity.importance='nope'" in str(err.value) and "magnitude" in str(err.value)
    with pytest.raises(ConfigError, match="module:attribute|importable module"):
        get_importance("no_such_module_xyz:SPEC")
    with pytest.raises(ConfigError, match="ImportanceSpec"):
        get_importance("ftlab.sparsity.scores:magnitude")  # a function, not a spec


def test_import_path_names_a_spec_and_its_flags_drive_the_key():
    # taylor's spec by import path: calibrated, so the calibration settings enter the mask key
    c = plain("sparsity.importance=ftlab.sparsity.scores:TAYLOR")
    assert importance_spec(c["sparsity"]).gradients
    assert mask_key(changed(c, "sparsity.calibration.batches", 3)) != mask_key(c)
    assert mask_key(c) != mask_key(plain("sparsity.importance=taylor"))  # the name enters the key


#: A score defined outside ftlab's tables: |W|^p with its own setting sparsity.options.power.
POWER = ImportanceSpec("power", lambda i: i.weight.detach().float().abs() ** float(i.sparsity.options["power"]),
                       config_keys=("sparsity.options.power",), doc="|W|^p (test)")


def test_an_outside_score_is_computed_and_keyed_by_its_spec():
    path = f"{__name__}:POWER"
    cfg = compose_run(["sparsity=unstructured", f"sparsity.importance={path}", "+sparsity.options.power=2.0",
                       "sparsity.level=0.5"])
    c = S.as_plain(cfg)
    assert "sparsity.options.power" in S.mask_keys(c)
    assert mask_key(changed(c, "sparsity.options.power", 3.0)) != mask_key(c)
    tok = build_tokenizer(cfg.model)
    model = build_model(cfg.model, tok)
    masks = compute_masks(cfg, model, tok)
    ref = compute_masks(compose_run(["sparsity=unstructured", "sparsity.level=0.5"]), model, tok)
    # |W|^2 ranks like |W|: the same masks as magnitude pruning
    assert masks.keys() == ref.keys() and all(torch.equal(masks[k], ref[k]) for k in masks)
