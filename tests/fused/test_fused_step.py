"""One fused forward/backward of four trials (two LoRA, two SoRA; different r, alpha, dropout,
seeds, batch sizes and widths) against the four solo runs of the same adapters and batches."""

from __future__ import annotations

import copy

import pytest
import torch

from ftlab.adapters.registry import get_adapter
from ftlab.core.errors import ConfigError
from ftlab.data.encoding import IGNORE_INDEX, Encoded, collate
from ftlab.fused.batch import concat_batches, trial_losses
from ftlab.fused.build import adapt_trial, adapted_layers, check_fusable, install, lend_back, restore, slot_of
from ftlab.models import build_model, build_tokenizer
from ftlab.preflight.compose import compose_run

TRIALS = [  # (overrides, adapter seed, dropout seed, rows, width)
    (["adapter=lora", "adapter.r=4", "adapter.alpha=8"], 1, 101, 3, 14),
    (["adapter=lora", "adapter.r=8", "adapter.alpha=32", "adapter.dropout=0.1"], 2, 102, 2, 9),
    (["adapter=sora", "adapter.r=4", "adapter.gate_init=normal"], 3, 103, 4, 11),
    (["adapter=sora", "adapter.r=2", "adapter.alpha=4", "adapter.dropout=0.2"], 4, 104, 2, 16),
]
#: float32 on CPU: the frozen product over more rows may block its matmul differently
TOL = {"rtol": 1e-5, "atol": 1e-6}


def cfg_of(overrides):
    return compose_run(["task.num_examples=100", "eval.generate=false", *overrides])


def batch(seed: int, rows: int, width: int, pad_id: int):
    gen = torch.Generator().manual_seed(seed)
    examples = []
    for i in range(rows):
        n = width - (i % 3)  # ragged: the batch itself is padded
        ids = torch.randint(3, 259, (n,), generator=gen).tolist()
        examples.append(Encoded(ids, [IGNORE_INDEX] * (n // 2) + ids[n // 2:]))
    return collate(examples, pad_id)


def perturb(layers, seed: int):
    """Non-zero B (LoRA starts at B = 0, where A gets no gradient), same values solo and fused."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in sorted(layers):
            slot = slot_of(layers[name])
            slot.lora_B.weight.copy_(torch.randn(slot.lora_B.weight.shape, generator=gen) * 0.05)


def grads(layers):
    out = {}
    for name, layer in layers.items():
        slot = slot_of(layer)
        out[f"{name}.A"] = slot.lora_A.weight.grad
        out[f"{name}.B"] = slot.lora_B.weight.grad
        if slot.lora_gate is not None:
            out[f"{name}.g"] = slot.lora_gate.grad
    return out


@pytest.fixture(scope="module")
def setup():
    cfgs = [cfg_of(t[0]) for t in TRIALS]
    tok = build_tokenizer(cfgs[0].model)
    base = build_model(cfgs[0].model, tok, seed=0)
    batches = [batch(10 + k, rows, width, tok.pad_token_id) for k, (_, _, _, rows, width) in enumerate(TRIALS)]
    solo = []
    for k, (cfg, (_, seed, drop_seed, _, _)) in enumerate(zip(cfgs, TRIALS)):
        model = copy.deepcopy(base)
        torch.manual_seed(seed)
        get_adapter(cfg.adapter.name).build(model, cfg.adapter, cfg)
        layers = adapted_layers(model)
        perturb(layers, seed)
        model.train()
        torch.manual_seed(drop_seed)
        loss = model(**batches[k]).loss
        loss.backward()
        solo.append((loss.detach(), grads(layers), layers))
    return cfgs, tok, base, batches, solo


def fused_group(cfgs, base):
    shared = copy.deepcopy(base)
    trials = []
    for cfg, (_, seed, _, _, _) in zip(cfgs, TRIALS):
        torch.manual_seed(seed)
        trial = adapt_trial(shared, cfg.adapter, cfg)
        perturb(trial.layers, seed)
        trials.append(trial)
    assert not adapted_layers(shared)  # the base holds no trial's layers between builds
    state = install(shared, trials)
    for k, (_, _, drop_seed, _, _) in enumerate(TRIALS):
        torch.manual_seed(drop_seed)
        state.rng[k] = torch.get_rng_state()
    shared.train()
    return shared, trials, state


def fused_step(shared, state, batches, pad_id, skip=()):
    fb, state.rows, state.widths = concat_batches([None if k in skip else b for k, b in enumerate(batches)], pad_id)
    rows = state.rows
    logits = shared(input_ids=fb["input_ids"], attention_mask=fb["attention_mask"]).logits
    losses = trial_losses(logits, fb["labels"], rows)
    sum(loss for loss in losses if loss is not None and torch.isfinite(loss)).backward()
    return losses


def test_one_backward_gives_each_adapter_its_solo_gradients(setup):
    cfgs, tok, base, batches, solo = setup
    shared, trials, state = fused_group(cfgs, base)
    for trial, (_, _, solo_layers) in zip(trials, solo):  # same family build, same seed: same init
        for name, layer in trial.layers.items():
            assert torch.equal(slot_of(layer).lora_A.weight, slot_of(solo_layers[name]).lora_A.weight)
    losses = fused_step(shared, state, batches, tok.pad_token_id)
    for k, (trial, (loss, solo_grads, _)) in enumerate(zip(trials, solo)):
        torch.testing.assert_close(losses[k].detach(), loss, **TOL)
        got = grads(trial.layers)
        assert got.keys() == solo_grads.keys() and len(got) >= 14
        for key, g in solo_grads.items():
            assert g is not None and g.abs().sum() > 0, key
            torch.testing.assert_close(got[key], g, **TOL, msg=f"trial {k} {key}")


def test_trial_without_rows_and_nan_trial_leave_the_others_exact(setup):
    """Trial 0 has left the group (no rows), trial 2 diverged (NaN weights): 1 and 3 are unchanged."""
    cfgs, tok, base, batches, solo = setup
    shared, trials, state = fused_group(cfgs, base)
    with torch.no_grad():
        slot_of(next(iter(trials[2].layers.values()))).lora_B.weight.fill_(float("nan"))
    losses = fused_step(shared, state, batches, tok.pad_token_id, skip=(0,))
    assert losses[0] is None and torch.isnan(losses[2])
    assert all(g is None for g in grads(trials[0].layers).values())
    for k in (1, 3):
        torch.testing.assert_close(losses[k].detach(), solo[k][0], **TOL)
        for key, g in solo[k][1].items():
            torch.testing.assert_close(grads(trials[k].layers)[key], g, **TOL, msg=f"trial {k} {key}")


def test_lend_back_exports_a_trial_with_its_own_family(setup, tmp_path):
    """A trial's peft adapter saved from the fused base equals the solo model's adapter weights."""
    cfgs, tok, base, batches, solo = setup
    shared, trials, state = fused_group(cfgs, base)
    fused = lend_back(shared, trials[0])
    assert trials[0].adapted.save_adapter(tmp_path / "adapter")
    restore(shared, fused)
    from safetensors.torch import load_file  # test-only reader of the saved adapter

    saved = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    name = next(iter(trials[0].layers))
    key = next(k for k in saved if name in k and "lora_B" in k)
    torch.testing.assert_close(saved[key], slot_of(solo[0][2][name]).lora_B.weight)


def test_concat_pads_to_the_widest_and_counts_rows():
    a = collate([Encoded([5, 6, 7], [-100, 6, 7])], pad_id=0)
    b = collate([Encoded([8, 9], [8, 9]), Encoded([4], [4])], pad_id=0)
    out, rows, widths = concat_batches([a, None, b], pad_id=0)
    assert rows == [1, 0, 2] and widths == [3, 0, 2]
    assert out["input_ids"].tolist() == [[5, 6, 7], [8, 9, 0], [4, 0, 0]]
    assert out["labels"].tolist() == [[-100, 6, 7], [8, 9, -100], [4, -100, -100]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0], [1, 0, 0]]


@pytest.mark.parametrize("name", ["dora", "sdora", "masked", "full", "none"])
def test_adapters_that_are_not_a_low_rank_addition_are_refused(name):
    with pytest.raises(ConfigError, match=f"adapter='{name}' is invalid: one of \\['lora', 'sora'\\]"):
        check_fusable(name)
