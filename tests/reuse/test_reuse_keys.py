"""Step keys: canonical, stable under reordering and excluded keys, changed by every included key,
chained to the parent; and every key of the composed config is classified."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ftlab.adapters.inits import init_names, init_spec
from ftlab.artifacts.keys import canonical_json, lookup, step_key
from ftlab.config.refs import check_key
from ftlab.reuse import steps as S
from ftlab.sparsity.importance import all_importances
from ftlab.sparsity.methods import all_methods
from ftlab.sparsity.structures import all_structures

STAGES = "schedule.stages=[{iters:5,lr:1e-3},{iters:5,lr:5e-4}]"


def plain(*overrides: str) -> dict[str, Any]:
    from ftlab.preflight.compose import compose_run

    return S.as_plain(compose_run(["schedule=stages", STAGES, *overrides]))


@pytest.fixture(scope="module")
def base_cfg() -> dict[str, Any]:
    return plain("base.enabled=true", "sparsity=unstructured", "sparsity.importance=wanda")


def perturb(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 0.125
    if isinstance(value, str):
        return value + "_x"
    if isinstance(value, list):
        return [*value, "extra"]
    if isinstance(value, dict):
        return {**value, "extra_key": 1}
    return "perturbed"  # None


def with_value(c: dict, dotted: str, value: Any) -> dict:
    out = copy.deepcopy(c)
    node = out
    *parents, last = dotted.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    return out


def keys_of(c: dict) -> dict[str, Any]:
    rs = S.run_steps(c)
    return {"model": rs.model.key, "base": rs.base and rs.base.key, "mask": rs.mask and rs.mask.key,
            "train": rs.train.key, "stages": [s.key for s in rs.stages]}


def leaves(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        return [p for k, v in node.items() for p in leaves(v, f"{prefix}.{k}" if prefix else k)]
    return [prefix]


# -- canonical JSON and the key function --------------------------------------------------
def test_canonical_json_ignores_dict_order_and_refuses_unstable_values():
    a = {"b": 1, "a": {"y": [1, 2.5], "x": None}}
    b = {"a": {"x": None, "y": [1, 2.5]}, "b": 1}
    assert canonical_json(a) == canonical_json(b) == '{"a":{"x":null,"y":[1,2.5]},"b":1}'
    assert step_key("k", None, a, 1) == step_key("k", None, b, 1)
    with pytest.raises(ValueError):
        canonical_json({"lr": float("nan")})
    with pytest.raises(TypeError):
        canonical_json({"obj": object()})


def test_key_depends_on_kind_parent_version_and_config():
    base = step_key("stage", "p", {"lr": 1e-3}, 1)
    assert len(base) == 64 and int(base, 16) >= 0
    assert step_key("stage", "q", {"lr": 1e-3}, 1) != base
    assert step_key("stage", "p", {"lr": 1e-3}, 2) != base
    assert step_key("base", "p", {"lr": 1e-3}, 1) != base
    assert step_key("stage", "p", {"lr": 2e-3}, 1) != base
    assert step_key("stage", "p", {"lr": 1e-3}, 1) == base


# -- the run's steps ----------------------------------------------------------------------
def test_every_config_key_is_classified(base_cfg):
    """A new config key must be put on an allow-list or on EXCLUDED/DERIVED before it can give
    stale hits (omitted by mistake) or needless misses."""
    covered = (*(k for spec in S.SPECS for k in spec.reads), *S.CALIBRATION_KEYS, *S.OWL_KEYS, *S.EXCLUDED,
               *S.DERIVED)
    configs = [base_cfg, plain("adapter=dora"), plain("adapter=full"), plain("logger=wandb")]
    for c in configs:
        for path in leaves(c):
            assert any(path == k or path.startswith(k + ".") for k in covered), f"{path} is not classified"


def test_key_unchanged_by_reordering_and_by_every_excluded_key(base_cfg):
    ref = keys_of(base_cfg)
    reordered = {k: base_cfg[k] for k in reversed(list(base_cfg))}
    reordered["model"] = {k: base_cfg["model"][k] for k in reversed(list(base_cfg["model"]))}
    assert keys_of(reordered) == ref
    for key in S.EXCLUDED:
        value = lookup(base_cfg, key, None)
        if value is None and "." in key and lookup(base_cfg, key.rsplit(".", 1)[0], None) is None:
            continue
        assert keys_of(with_value(base_cfg, key, perturb(value))) == ref, key


def test_every_included_key_changes_its_step_and_all_later_ones(base_cfg):
    ref = keys_of(base_cfg)
    cases = {"model": S.MODEL_KEYS, "base": S.BASE_KEYS, "mask": S.mask_keys(base_cfg), "train": S.TRAIN_KEYS}
    order = ["model", "base", "mask", "train"]
    for step, allow in cases.items():
        for key in allow:
            new = keys_of(with_value(base_cfg, key, perturb(lookup(base_cfg, key, None))))
            assert new[step] != ref[step], f"{key} does not change the {step} key"
            for later in order[order.index(step) + 1:]:
                assert new[later] != ref[later], f"{key} does not reach the {later} key"
            assert all(a != b for a, b in zip(new["stages"], ref["stages"])), key


def test_fine_tuning_keys_do_not_change_base_or_mask():
    c = plain("base.enabled=true", "sparsity=unstructured")
    ref = keys_of(c)
    for key in ("adapter.r", "schedule.lr", "train.batch_size", "train.accumulate_grad_batches",
                "task.num_examples", "task.val_fraction", "sparsity.mode"):
        new = keys_of(with_value(c, key, perturb(lookup(c, key))))
        assert (new["model"], new["base"], new["mask"]) == (ref["model"], ref["base"], ref["mask"]), key
        assert new["train"] != ref["train"], key


def test_calibration_enters_the_mask_key_only_for_calibrated_importances():
    mag = plain("sparsity=unstructured", "sparsity.importance=magnitude")
    wanda = plain("sparsity=unstructured", "sparsity.importance=wanda")
    for c, changes in ((mag, False), (wanda, True)):
        new = keys_of(with_value(c, "sparsity.calibration.batches", 3))
        assert (new["mask"] != keys_of(c)["mask"]) is changes


def test_derived_values_not_their_spelling():
    c = plain("base.enabled=true")
    same = with_value(with_value(c, "model.init_seed", c["seed"]), "base.seed", c["seed"])
    assert keys_of(same) == keys_of(c)  # null seeds mean the run seed
    assert keys_of(with_value(c, "model.init_seed", c["seed"] + 1))["model"] != keys_of(c)["model"]
    assert keys_of(with_value(c, "base.seed", c["seed"] + 1))["base"] != keys_of(c)["base"]


def test_data_file_content_enters_the_key(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "a", "answer": "b"}\n' * 5)
    c = plain()
    c["task"]["path"] = str(data)
    before = keys_of(c)["train"]
    data.write_text('{"prompt": "a", "answer": "c"}\n' * 5)
    assert keys_of(c)["train"] != before


def test_stage_keys_chain_to_their_parent():
    c1 = plain("schedule.stages=[{iters:5,lr:1e-3},{iters:5,lr:5e-4}]")
    c2 = plain("schedule.stages=[{iters:5,lr:1e-3},{iters:5,lr:3e-4}]")
    c3 = plain("schedule.stages=[{iters:6,lr:1e-3},{iters:5,lr:5e-4}]")
    c4 = plain("schedule.stages=[{iters:5,lr:1e-3,name:warmup},{iters:5,lr:5e-4}]")
    k1, k2, k3, k4 = (keys_of(c)["stages"] for c in (c1, c2, c3, c4))
    assert k1[0] == k2[0] and k1[1] != k2[1]  # a later stage's value leaves the earlier key alone
    assert k3[0] != k1[0] and k3[1] != k1[1]  # an earlier change moves every later stage
    assert k4 == k1  # a stage's name is a label
    rs = S.run_steps(c1)
    assert rs.stages[0].parent == rs.train.key and rs.stages[1].parent == rs.stages[0].key


def test_every_spec_names_schema_fields_and_each_registered_capability_key_is_checked():
    """The specs' keys are typed references (a misspelt one fails at import); the keys registered
    specs name as strings (importance, mask method, structure, LoRA init) pass the schema check,
    and a misspelt one stops the key computation naming it."""
    schemas = S._adapter_schemas()
    for spec in S.SPECS:
        for key in (*spec.reads, *spec.derives_from):
            assert check_key(key, schemas) == key
    registered = [*all_importances(), *all_methods(), *all_structures(), *map(init_spec, init_names())]
    assert any(r.config_keys for r in registered)
    for r in registered:
        for key in r.config_keys:
            assert check_key(key, schemas) == key, r.name
    c = plain("sparsity=unstructured")
    typo = S.StepSpec("mask", capability_reads=lambda c: ("sparsity.sparsegtp",))
    with pytest.raises(ValueError, match="sparsegtp"):
        S.step_config(typo, c)
    with pytest.raises(AttributeError, match="itres"):
        S.stage_config({"itres": 5, "lr": 1e-3})
