"""Masked LoRA against its formula: y = W x + s · ((B A) ⊙ M) x, merge W' = W + s · (B A) ⊙ M,
gradients of A and B through the mask, and the adapter saved in peft format."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel

from ftlab.adapters.masked import MaskedLora
from ftlab.adapters.masked_layer import MaskedLoraLinear
from ftlab.models import build_model, build_tokenizer
from ftlab.preflight.compose import compose_run
from ftlab.sparsity.apply import apply_masks_
from ftlab.sparsity.compute import compute_masks
from ftlab.sparsity.pipeline import attach_masks
from tolerance import assert_close


def masked_model(dropout: float = 0.0, level: float = 0.6):
    cfg = compose_run(["adapter=masked", "sparsity=unstructured", f"sparsity.level={level}",
                       f"adapter.dropout={dropout}", "adapter.r=4", "adapter.alpha=12"])
    tok = build_tokenizer(cfg.model)
    model = build_model(cfg.model, tok, seed=0)
    masks = compute_masks(cfg, model, tok)
    apply_masks_(model, masks)
    adapted = MaskedLora(model, cfg.adapter, cfg)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in adapted.masked_layers().values():  # B starts at 0: give it values to test with
            layer.lora_B["default"].weight.copy_(torch.randn(layer.lora_B["default"].weight.shape, generator=g))
    return cfg, tok, masks, adapted


def _layer(adapted, name="model.layers.1.mlp.up_proj.weight"):
    return name, adapted.masked_layers()[name]


@pytest.mark.numerical
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_forward_matches_formula(dropout):
    _, _, masks, adapted = masked_model(dropout)
    adapted.set_masks(masks)
    adapted.model.eval()  # dropout off: both code paths must equal the formula
    name, layer = _layer(adapted)
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    s = layer.scaling["default"]
    assert s == pytest.approx(12 / 4)
    W, bias = layer.get_base_layer().weight, layer.get_base_layer().bias
    x = torch.randn(3, 5, W.shape[1])
    expected = x @ W.T + s * x @ ((B @ A) * masks[name]).T + (0 if bias is None else bias)
    assert_close(layer(x), expected, ops=W.shape[1])  # dot products over the input features
    unmasked = x @ W.T + s * x @ (B @ A).T
    assert not torch.allclose(layer(x), unmasked, atol=1e-3)  # the mask matters


def test_gradients_flow_through_mask():
    _, _, masks, adapted = masked_model()
    adapted.set_masks(masks)
    name, layer = _layer(adapted)
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    s, W = layer.scaling["default"], layer.get_base_layer().weight
    x = torch.randn(7, W.shape[1])
    layer(x).pow(2).sum().backward()
    gA, gB = A.grad.clone(), B.grad.clone()
    A2, B2 = A.detach().clone().requires_grad_(), B.detach().clone().requires_grad_()
    (x @ (W.detach() + s * (B2 @ A2) * masks[name]).T).pow(2).sum().backward()
    assert torch.allclose(gA, A2.grad, rtol=1e-4, atol=1e-4)
    assert torch.allclose(gB, B2.grad, rtol=1e-4, atol=1e-4)
    assert W.grad is None  # the sparse base stays frozen


def test_merge_keeps_zeros_and_outputs(tmp_path):
    cfg, tok, masks, adapted = masked_model()
    wrapped = attach_masks(adapted, masks, cfg)
    wrapped.model.eval()
    ids = torch.tensor([tok.encode("Capitalize: abc def", add_special_tokens=False)])
    before = wrapped.model(input_ids=ids).logits
    name, layer = _layer(adapted)
    A, B = layer.lora_A["default"].weight.detach(), layer.lora_B["default"].weight.detach()
    expected_w = layer.get_base_layer().weight.detach() + layer.scaling["default"] * (B @ A) * masks[name]
    assert wrapped.save_adapter(tmp_path / "adapter")
    merged = wrapped.merged_model()
    params = dict(merged.named_parameters())
    assert not any(isinstance(m, MaskedLoraLinear) for m in merged.modules())
    assert torch.allclose(params[name], expected_w, atol=1e-6)
    for n, m in masks.items():
        assert int(torch.count_nonzero(params[n][~m])) == 0, n
    assert torch.allclose(merged(input_ids=ids).logits, before, atol=1e-4)
    assert wrapped.trainable_params() > 0  # counted before the merge consumed the adapter
    # The adapter directory is plain peft LoRA (+ the mask file), loadable by peft alone.
    base = build_model(cfg.model, tok, seed=0)
    apply_masks_(base, masks)
    reloaded = PeftModel.from_pretrained(base, str(tmp_path / "adapter"))
    state = {k: v for k, v in reloaded.state_dict().items() if "lora_B" in k}
    assert state and all(v.abs().sum() > 0 for v in state.values())
    assert (tmp_path / "adapter" / "sparsity_mask.safetensors").is_file()


def test_masked_without_masks_refuses_to_train():
    from ftlab.core.errors import FtlabError

    _, _, _, adapted = masked_model()
    with pytest.raises(FtlabError, match="adapter=masked needs the sparse base's masks"):
        adapted.param_groups(1e-3, 0.0)
