"""GPT-2's transformers ``Conv1D`` layers (weight stored ``(in, out)``) are linear layers everywhere:
default and explicit targets, every adapter (or a one-line refusal), masks in their transposed
layout with N:M groups and channels along the right dimension, Wanda's input statistics, merge."""

from __future__ import annotations

import json

import pytest
import torch
from transformers.pytorch_utils import Conv1D

from adapted_steps import train_then_logits
from conftest import compose, run_tiny
from ftlab.adapters.params import model_facts, trainable_params
from ftlab.adapters.registry import get_adapter
from ftlab.adapters.targets import resolve_targets
from ftlab.core.errors import ConfigError
from ftlab.evaluation.mask_validation import validate
from ftlab.models import build_model, build_tokenizer
from ftlab.sparsity.compute import compute_pruned, input_stats
from ftlab.sparsity.masks import mask_units, nm_pattern_ok, structured_ok
from ftlab.sparsity.pipeline import attach_masks, prepare_masks
from ftlab.sparsity.scores import InputSquares
from ftlab.sparsity.selection import select_modules

LEAVES = ["c_attn", "c_proj", "c_fc", "c_proj"]


def tiny(*overrides: str):
    cfg = compose("model=tiny_gpt2", *overrides)
    tok = build_tokenizer(cfg.model)
    return cfg, tok, build_model(cfg.model, tok, seed=0)


def ids() -> torch.Tensor:
    return torch.randint(3, 200, (2, 16), generator=torch.Generator().manual_seed(0))


def test_conv1d_layers_are_the_default_and_explicit_targets() -> None:
    _, _, model = tiny()
    names = resolve_targets(model, None)
    assert [n.rsplit(".", 1)[-1] for n in names] == LEAVES * 2
    assert all(isinstance(model.get_submodule(n), Conv1D) for n in names)
    assert resolve_targets(model, ["c_fc"]) == ["transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc"]
    with pytest.raises(ConfigError) as err:
        resolve_targets(model, ["q_proj"])
    assert "c_attn" in str(err.value) and "\n" not in str(err.value)
    compose("model=tiny_gpt2", "adapter.target_modules=[c_attn,c_fc,c_proj]")  # accepted at composition


@pytest.mark.parametrize("adapter", ["lora", "dora"])
def test_lora_and_dora_train_and_merge_on_conv1d(adapter: str) -> None:
    cfg, _, model = tiny(f"adapter={adapter}")
    adapted = get_adapter(adapter).build(model, cfg.adapter, cfg)
    assert adapted.trainable_params() == trainable_params(model_facts(cfg.model), cfg)  # planner = peft
    opt = torch.optim.AdamW(adapted.param_groups(1e-2, 0.0)[0]["params"], lr=1e-2)
    x = ids()
    adapted.model(input_ids=x, labels=x).loss.backward()
    opt.step()
    adapted.model.eval()
    with torch.no_grad():
        expected = adapted.model(input_ids=x).logits
        merged = adapted.merged_model()
        torch.testing.assert_close(merged(input_ids=x).logits, expected, atol=1e-4, rtol=1e-4)


def test_sora_on_conv1d_is_refused_in_one_line() -> None:
    cfg, _, model = tiny("adapter=sora")
    with pytest.raises(ConfigError) as err:
        get_adapter("sora").build(model, cfg.adapter, cfg)
    assert err.value.key == "adapter" and "Conv1D" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("overrides", [("sparsity=nm",), ("sparsity=structured",)],
                         ids=["nm", "structured"])
def test_masks_use_the_transposed_layout(overrides: tuple[str, ...]) -> None:
    cfg, tok, model = tiny(*overrides)
    masks = compute_pruned(cfg, model, tok).masks
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert mask.shape == params[name].shape  # stored (in, out), as the weight
    units = mask_units(masks, {n for n in masks})  # every pruned GPT-2 layer is a Conv1D
    if cfg.sparsity.method == "nm":  # N:M groups run along each output's input columns
        assert all(nm_pattern_ok(u, 2, 4) for u in units.values())
        assert not all(nm_pattern_ok(m, 2, 4) for m in masks.values())  # not along the stored rows
    else:  # one channel of the MLP: c_fc's output row and c_proj's input column
        fc, proj = units["transformer.h.0.mlp.c_fc.weight"], units["transformer.h.0.mlp.c_proj.weight"]
        assert structured_ok(fc, None) and torch.equal(fc.all(1), proj.all(0))
        assert 0 < int((~fc.all(1)).sum()) < fc.shape[0]


def test_wanda_statistics_of_conv1d_are_its_input_features() -> None:
    cfg, tok, model = tiny("sparsity=unstructured", "sparsity.importance=wanda",
                           "sparsity.calibration.batches=1", "sparsity.calibration.batch_size=4")
    views = select_modules(model, ["*.mlp.c_proj"])
    x = ids()
    stats = input_stats(model, views, [{"input_ids": x, "attention_mask": torch.ones_like(x)}],
                        lambda v: InputSquares(v.in_features))
    for name, v in views.items():
        assert v.in_features == 256 and stats[name].count == x.numel()  # c_proj reads the 256-wide MLP
    masks = compute_pruned(cfg, model, tok).masks
    assert masks["transformer.h.0.mlp.c_proj.weight"].shape == (256, 128)


def test_masked_lora_on_conv1d_keeps_zeros_through_merge() -> None:
    cfg, tok, model = tiny("adapter=masked", "sparsity=unstructured", "sparsity.level=0.5",
                           "sparsity.importance=magnitude")
    pruned = prepare_masks(cfg, model, tok)
    adapted = attach_masks(get_adapter("masked").build(model, cfg.adapter, cfg), pruned, cfg)
    x = ids()
    expected = train_then_logits(adapted, x)
    merged = adapted.merged_model()
    params = dict(merged.named_parameters())
    for name, mask in pruned.masks.items():
        assert int((params[name][~mask] != 0).sum()) == 0, name
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=x).logits, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_gpt2_masked_wanda_run_end_to_end(tmp_path) -> None:
    """A whole run on GPT-2: Wanda mask over every Conv1D, masked LoRA, merged export validated."""
    run_dir = tmp_path / "run"
    _, metric = run_tiny(run_dir, "model=tiny_gpt2", "adapter=masked", "sparsity=unstructured",
                         "sparsity.importance=wanda", "train.max_steps=3",
                         "eval.generate=false")
    assert metric is not None
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["validation_leaks"] == 0 and abs(metrics["weight_sparsity"] - 0.5) < 0.005
    report = validate(str(run_dir / "model"), str(run_dir / "mask.safetensors"), tmp_path / "report.json")
    assert report["passed"] and len(report["layers"]) == 8  # c_attn, attn.c_proj, c_fc, mlp.c_proj x 2 blocks
