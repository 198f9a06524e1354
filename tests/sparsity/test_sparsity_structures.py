"""Structured pruning removes whole structures, checked by construction: slicing the pruned KV
groups / MLP channels out of the model gives a smaller dense transformers model whose logits
equal the masked model's."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from ftlab.core.errors import ConfigError
from ftlab.models import build_model, build_tokenizer
from ftlab.preflight.compose import compose_run
from ftlab.sparsity.apply import apply_masks_
from ftlab.sparsity.compute import MaskSpec, compute_masks, decoder_layers, masks_from_scores
from ftlab.sparsity.structures import Structure, find_structures

CAL = ["sparsity.calibration.batches=2", "sparsity.calibration.batch_size=4", "task.num_examples=60"]


def _setup(*overrides: str):
    cfg = compose_run(["sparsity=structured", *CAL, *overrides])
    tok = build_tokenizer(cfg.model)
    return cfg, tok, build_model(cfg.model, tok, seed=0)


def _kept(mask: torch.Tensor, dim: str, units: int) -> torch.Tensor:
    """Indices of the kept units of one member weight's mask."""
    blocks = mask.reshape(units, -1) if dim == "out" else mask.t().reshape(units, -1)
    return blocks.all(1).nonzero().squeeze(1)


def _rows(w: torch.Tensor, units: int, kept: torch.Tensor) -> torch.Tensor:
    return w.reshape(units, -1, w.shape[1])[kept].reshape(-1, w.shape[1])


def _cols(w: torch.Tensor, units: int, kept: torch.Tensor) -> torch.Tensor:
    return w.reshape(w.shape[0], units, -1)[:, kept].reshape(w.shape[0], -1)


def _sliced(model, masks: dict[str, torch.Tensor], kind: str):
    """A smaller dense model from a transformers config with the pruned units cut out."""
    config = copy.deepcopy(model.config)
    prefix, layers = decoder_layers(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    counts = set()
    for i in range(len(layers)):
        if kind == "head":
            p = f"{prefix}.{i}.self_attn"
            units = model.config.num_key_value_heads
            kept = _kept(masks[f"{p}.k_proj.weight"], "out", units)
            for leaf in ("q_proj", "k_proj", "v_proj"):
                state[f"{p}.{leaf}.weight"] = _rows(state[f"{p}.{leaf}.weight"], units, kept)
            state[f"{p}.o_proj.weight"] = _cols(state[f"{p}.o_proj.weight"], units, kept)
        else:
            p = f"{prefix}.{i}.mlp"
            units = model.config.intermediate_size
            kept = _kept(masks[f"{p}.down_proj.weight"], "in", units)
            for leaf in ("gate_proj", "up_proj"):
                state[f"{p}.{leaf}.weight"] = _rows(state[f"{p}.{leaf}.weight"], units, kept)
            state[f"{p}.down_proj.weight"] = _cols(state[f"{p}.down_proj.weight"], units, kept)
        counts.add(int(kept.numel()))
    assert len(counts) == 1  # every layer keeps the same count (one config describes them all)
    k = counts.pop()
    if kind == "head":
        group = model.config.num_attention_heads // model.config.num_key_value_heads
        config.head_dim = model.config.hidden_size // model.config.num_attention_heads
        config.num_key_value_heads, config.num_attention_heads = k, k * group
    else:
        config.intermediate_size = k
    small = AutoModelForCausalLM.from_config(config)
    small.load_state_dict(state)
    return small.eval(), k


@pytest.mark.parametrize(("kind", "overrides"), [
    ("head", ["model.config.num_key_value_heads=4"]),  # MHA
    ("head", []),  # GQA: 4 query heads, 2 KV heads
    ("channel", []),
])
@pytest.mark.parametrize("importance", ["magnitude", "wanda"])
def test_sliced_model_equals_masked_model(kind, overrides, importance):
    modules = "[*.self_attn.*]" if kind == "head" else "[*.mlp.*]"
    cfg, tok, model = _setup(f"sparsity.structure={kind}", f"sparsity.modules={modules}",
                             f"sparsity.importance={importance}", *overrides)
    masks = compute_masks(cfg, model, tok)
    masked = apply_masks_(copy.deepcopy(model), masks).eval()
    small, kept = _sliced(model, masks, kind)
    units = model.config.num_key_value_heads if kind == "head" else model.config.intermediate_size
    assert 0 < kept < units
    ids = torch.randint(3, 200, (3, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = masked(input_ids=ids).logits, small(input_ids=ids).logits
    assert (a - b).abs().max().item() <= 1e-5
    # The check can fail: slicing other units than the masked ones changes the logits.
    if kind == "channel":
        other = {n: m.flip(0) if n.endswith(("gate_proj.weight", "up_proj.weight")) else m.flip(1)
                 for n, m in masks.items()}
        with torch.no_grad():
            c = _sliced(model, other, kind)[0](input_ids=ids).logits
        assert (a - c).abs().max().item() > 1e-3


def test_scores_are_summed_over_the_structure():
    """Unit 0 wins on the rows of one member, unit 1 on the sum with the other member's columns."""
    st = Structure("m", 2, {"up.weight": "out", "down.weight": "in"})
    scores = {"up.weight": torch.tensor([[3.0, 3.0], [1.0, 1.0]]),  # units: 6 vs 2
              "down.weight": torch.tensor([[0.0, 5.0], [0.0, 5.0]])}  # units: 0 vs 10
    masks = masks_from_scores(scores, MaskSpec("structured", 0.5), [st])
    assert masks["up.weight"].tolist() == [[False, False], [True, True]]
    assert masks["down.weight"].tolist() == [[False, True], [False, True]]


def test_a_selected_projection_pulls_in_its_structure():
    cfg, tok, model = _setup("sparsity.structure=head", "sparsity.modules=[*.layers.0.self_attn.q_proj]")
    masks = compute_masks(cfg, model, tok)
    assert sorted(n.rsplit(".", 2)[-2] for n in masks) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    with pytest.raises(ConfigError, match="is not an MLP projection"):
        find_structures(model, ["model.layers.0.self_attn.q_proj.weight"], "channel")
