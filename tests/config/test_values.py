"""Issue 22, deliverable 1: every value is checked against its schema field's rules (finite,
bounds, non-empty, length) and every ``model.config`` key against transformers' config class,
before anything is built or written. A table of (overrides, what the one line must name)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ftlab.config.fields import Bounds, knob
from ftlab.config.values import check_node
from ftlab.core.errors import ConfigError, FtlabError
from ftlab.preflight.launch import preflight

CASES = [
    # (id, overrides, substrings of the one line)
    ("lr-inf", ["schedule.lr=inf"], ("schedule.lr=inf", "finite number > 0")),
    ("lr-nan", ["schedule.lr=nan"], ("schedule.lr=nan", "finite")),
    ("stage-lr-inf", ["schedule=stages", "schedule.stages=[{iters: 3, lr: inf}]"],
     ("schedule.stages[0].lr=inf", "finite")),
    ("sora-gate-lr-nan", ["adapter=sora", "adapter.gate_lr=nan"], ("adapter.gate_lr=nan", "finite")),
    ("sora-lambda-inf", ["adapter=sora", "adapter.sparse_lambda=inf"], ("adapter.sparse_lambda=inf", "finite")),
    ("betas-above-one", ["train.betas=[0.9,1.5]"], ("train.betas[1]=1.5", "[0, 1)")),
    ("betas-negative", ["train.betas=[-0.1,0.999]"], ("train.betas[0]=-0.1", "[0, 1)")),
    ("betas-one-item", ["train.betas=[0.9]"], ("train.betas=[0.9]", "2 items")),
    ("adam-eps-zero", ["train.eps=0"], ("train.eps=0.0", "> 0")),
    ("weight-decay-nan", ["train.weight_decay=nan"], ("train.weight_decay=nan", "finite")),
    ("clip-inf", ["train.gradient_clip_val=inf"], ("train.gradient_clip_val=inf", "finite")),
    ("min-lr-ratio", ["schedule=cosine", "schedule.min_lr_ratio=1.5"], ("schedule.min_lr_ratio=1.5", "[0, 1]")),
    ("model-targets-empty", ["model.target_modules=[]"], ("model.target_modules=[]", "non-empty")),
    ("stages-empty-list", ["schedule.stages=[]"], ("schedule.stages=[]", "non-empty")),
    ("levels-empty", ["sparsity.levels=[]"], ("sparsity.levels=[]", "non-empty")),
    ("eval-examples-zero", ["task.eval_examples=0"], ("task.eval_examples=0", ">= 1")),
    ("keep-checkpoints-zero", ["train.keep_checkpoints=0"], ("train.keep_checkpoints=0", ">= 1")),
    ("memory-gb-negative", ["hardware.memory_gb=-1"], ("hardware.memory_gb=-1", "> 0")),
    ("base-lr-disabled", ["base.lr=-1"], ("base.lr=-1", "> 0")),  # set, though base.enabled=false
    ("calibration-batches", ["sparsity.calibration.batches=0"], ("sparsity.calibration.batches=0", ">= 1")),
    ("model-config-nan", ["model.config.hidden_size=128", "+model.config.rms_norm_eps=nan"],
     ("model.config.rms_norm_eps=nan", "finite")),
    ("owl-inf", ["sparsity.owl.lambda=inf"], ("sparsity.owl.lambda=inf", "finite")),
    ("model-config-typo", ["+model.config.num_hiden_layers=3"],
     ("model.config.num_hiden_layers=3", "LlamaConfig", "model.config.num_hidden_layers")),
    ("model-config-unknown", ["+model.config.rope_thta=3"], ("model.config.rope_thta=3", "LlamaConfig")),
    ("model-config-typo-qwen2", ["model=tiny_qwen2", "+model.config.sliding_windw=4"],
     ("model.config.sliding_windw=4", "Qwen2Config", "model.config.sliding_window")),
]


@pytest.mark.parametrize("overrides,expect", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_value_is_one_line_naming_the_key(overrides, expect, tmp_path: Path):
    with pytest.raises(FtlabError) as err:
        preflight([*overrides, f"hydra.run.dir={tmp_path}/run"], multirun=False)
    line = f"ftlab: error: {err.value}"
    assert "\n" not in line
    for part in expect:
        assert part in line, f"{part!r} not in {line!r}"
    assert not (tmp_path / "run").exists()


def test_known_legacy_and_preset_keys_pass(tmp_path: Path):
    """A key the class converts (``rope_theta`` into ``rope_parameters``) is read, so it passes."""
    preflight(["+model.config.rope_theta=30000.0", "train.betas=[0.0,0.5]", f"hydra.run.dir={tmp_path}/r"],
              multirun=False)


@dataclass
class _NewGroup:  # a field added tomorrow, declared with knob: its checks come with it
    rate: float = knob(0.5, "a new rate", gt=0, le=1)
    names: list[str] | None = knob(None, "a new list", nonempty=True)
    plain: float = 1.0  # no knob at all: the type still demands a finite number


@pytest.mark.parametrize("values,key,allowed", [
    ({"rate": 0.0}, "rate", "a number in (0, 1]"),
    ({"rate": 2.0}, "rate", "a number in (0, 1]"),
    ({"names": []}, "names", "non-empty"),
    ({"plain": float("inf")}, "plain", "a finite number"),
])
def test_a_new_field_gets_its_checks_from_its_declaration(values, key, allowed):
    node = OmegaConf.merge(OmegaConf.structured(_NewGroup), values)
    check_node(OmegaConf.structured(_NewGroup))  # its defaults pass
    with pytest.raises(ConfigError) as err:
        check_node(node, "new.")
    assert err.value.key == f"new.{key}" and allowed in err.value.allowed


def test_bounds_read_as_the_error_lines_do():
    assert Bounds(0, None, low_open=True).text(integer=True) == "an integer >= 1"
    assert Bounds(0, 1, high_open=True).text(integer=False) == "a number in [0, 1)"
    assert not Bounds(0, 1, low_open=True).allows(0.0) and Bounds(0, 1).allows(1.0)
