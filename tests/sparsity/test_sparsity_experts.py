"""Fused MoE experts are pruned per expert, adapted, and keep their zeros through merge and export.

Tiny Mixtral, Qwen2-MoE and Qwen3-MoE store each block's experts as two 3-D parameters
(``mlp.experts.gate_up_proj``, ``mlp.experts.down_proj``); every mask method must cover every
expert with one ``(out, in)`` matrix per expert as its unit.
"""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel

from adapted_steps import train_then_logits
from conftest import compose, read_csv, run_tiny
from ftlab.adapters.params import model_facts, trainable_params
from ftlab.adapters.registry import get_adapter
from ftlab.evaluation.mask_validation import validate
from ftlab.models import build_model, build_tokenizer
from ftlab.models.structure import expert_parameters
from ftlab.sparsity.calibration import calibration_batches
from ftlab.sparsity.check import check_targets
from ftlab.sparsity.compute import (
    PrunedBase,
    compute_pruned,
    importance_of,
    layouts_for,
    sequential_prune,
    spec_of,
)
from ftlab.sparsity.experts import ExpertInputs
from ftlab.sparsity.io import load_masks
from ftlab.sparsity.masks import mask_units, nm_pattern_ok, sparsity_of, structured_ok
from ftlab.sparsity.pipeline import attach_masks, prepare_masks
from ftlab.sparsity.selection import select_modules
from ftlab.sparsity.stats import describe, layer_rows

MOE = ["tiny_mixtral", "tiny_qwen2_moe", "tiny_qwen3_moe"]
CAL = ("sparsity.calibration.batches=2", "sparsity.calibration.batch_size=4")


def tiny(preset: str, *overrides: str):
    cfg = compose(f"model={preset}", *overrides)
    tok = build_tokenizer(cfg.model)
    return cfg, tok, build_model(cfg.model, tok, seed=0)


def expert_units(masks: dict[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    experts = expert_parameters(model)
    return {n: m for n, m in mask_units({p: masks[p] for p in experts}).items()}


@pytest.mark.parametrize("overrides", [
    ("sparsity=unstructured", "sparsity.importance=magnitude"),
    ("sparsity=unstructured", "sparsity.importance=taylor", *CAL),
    ("sparsity=unstructured", "sparsity.importance=wanda", *CAL),
    ("sparsity=unstructured", "sparsity.importance=sparsegpt", *CAL),
    ("sparsity=unstructured", "sparsity.importance=wanda", "sparsity.allocation=owl", *CAL),
    ("sparsity=nm",),
    ("sparsity=random",),
    ("sparsity=structured",),
], ids=["magnitude", "taylor", "wanda", "sparsegpt", "owl", "nm", "random", "structured"])
def test_every_expert_is_pruned_as_its_own_matrix(overrides: tuple[str, ...]) -> None:
    cfg, tok, model = tiny("tiny_mixtral", "sparsity.level=0.5", *overrides)
    pruned = compute_pruned(cfg, model, tok)
    experts = expert_parameters(model)
    params = dict(model.named_parameters())
    for p in experts:  # every fused expert parameter, in its own shape
        assert pruned.masks[p].shape == params[p].shape and pruned.masks[p].dtype == torch.bool
    units = expert_units(pruned.masks, model)
    assert len(units) == 4 * len(experts)
    sp = cfg.sparsity
    layouts = layouts_for(model, select_modules(model, sp.modules), spec_of(sp))
    meta = describe(pruned.masks, model=cfg.model.name, method=sp.method, importance=importance_of(sp),
                    target=spec_of(sp).target, spec=spec_of(sp), layouts=layouts, levels=pruned.levels)
    check_targets(pruned.masks, meta, "sparsity.level", 0.5)  # per unit: per expert
    for name, unit in units.items():
        if sp.method == "nm":
            assert nm_pattern_ok(unit, int(sp.n), int(sp.m)), name
        elif sp.method == "structured":
            assert structured_ok(unit, layouts[name]), name
        elif sp.allocation != "owl":
            assert abs(sparsity_of(unit) - 0.5) < 0.005, name  # the level inside each expert
    if sp.method == "structured":  # one decision per channel of one expert: gate row, up row, down column
        for layer in range(2):
            gu = pruned.masks[f"model.layers.{layer}.mlp.experts.gate_up_proj"]
            down = pruned.masks[f"model.layers.{layer}.mlp.experts.down_proj"]
            inter = down.shape[-1]
            for e in range(4):
                kept = down[e].all(0)
                assert torch.equal(gu[e, :inter].all(1), kept) and torch.equal(gu[e, inter:].all(1), kept)
            assert not all(torch.equal(down[0], down[e]) for e in range(1, 4))  # experts rank their own channels
    if pruned.weights:  # SparseGPT reconstructs each expert around its own mask
        for p in experts:
            assert int((pruned.weights[p][~pruned.masks[p]] != 0).sum()) == 0


def test_expert_statistics_are_the_real_tokens_routed_to_it() -> None:
    cfg, tok, model = tiny("tiny_mixtral", "sparsity=unstructured", *CAL)
    batch = calibration_batches(cfg, tok)[0]
    valid = batch["attention_mask"].reshape(-1).bool()
    assert not bool(valid.all())  # padding present: it must not be counted
    param = model.model.layers[0].mlp.experts.gate_up_proj
    rows = torch.zeros(4, dtype=torch.long)

    def sink(p, e, x):
        if p is param:
            rows[e] += x.shape[0]

    tap = ExpertInputs([param], [model.model.layers[0].mlp.experts], sink, lambda: valid)
    with torch.no_grad(), tap:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert int(rows.sum()) == 2 * int(valid.sum())  # top-2: every real token reaches two experts, pads none
    assert model.config._experts_implementation == "grouped_mm"  # the eager switch is undone on exit


@pytest.mark.parametrize("preset", MOE)
def test_masked_lora_on_experts_keeps_zeros_and_round_trips(preset: str, tmp_path) -> None:
    cfg, tok, model = tiny(preset, "adapter=masked", "sparsity=unstructured", "sparsity.level=0.5",
                           "sparsity.importance=magnitude")
    pruned: PrunedBase = prepare_masks(cfg, model, tok)
    experts = expert_parameters(model)
    assert set(experts) <= set(pruned.masks)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    adapted = attach_masks(get_adapter("masked").build(model, cfg.adapter, cfg), pruned, cfg)
    assert adapted.trainable_params() == trainable_params(model_facts(cfg.model), cfg)  # planner = peft
    ids = torch.randint(3, 200, (2, 16), generator=torch.Generator().manual_seed(0))
    expected = train_then_logits(adapted, ids)
    adapted.save_adapter(tmp_path / "adapter")
    merged = adapted.merged_model()
    params = dict(merged.named_parameters())
    for p in experts:
        mask = pruned.masks[p]
        assert int((params[p][~mask] != 0).sum()) == 0  # 0 leaks in every expert
        assert int((params[p][mask] != base[p][mask]).sum()) > 0.5 * int(mask.sum())  # the update reached them
    with torch.no_grad():  # merged = base ⊙ M + ΔW ⊙ M: the adapted model's own outputs
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, atol=1e-4, rtol=1e-4)
    # peft's own loader: the saved adapter (plain LoRA + the mask beside it) on the sparse base
    _, _, fresh = tiny(preset)
    with torch.no_grad():
        for n, p in fresh.named_parameters():
            p.copy_(base[n])
    loaded = PeftModel.from_pretrained(fresh, str(tmp_path / "adapter"))
    mask_file, _ = load_masks(str(tmp_path / "adapter" / "sparsity_mask.safetensors"))
    assert set(experts) <= set(mask_file)
    reloaded = loaded.merge_and_unload()
    with torch.no_grad():
        for n, p in reloaded.named_parameters():
            if n in mask_file:
                p.masked_fill_(~mask_file[n], 0)
        torch.testing.assert_close(reloaded(input_ids=ids).logits, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_moe_run_adapts_and_prunes_every_expert(tmp_path) -> None:
    """The issue's command: trainable parameters include every expert, the mask holds every expert."""
    run_dir = tmp_path / "run"
    _, metric = run_tiny(run_dir, "model=tiny_mixtral", "sparsity=unstructured", "sparsity.level=0.5",
                         "adapter=lora", "train.max_steps=3", "eval.generate=false")
    assert metric is not None
    cfg, _, model = tiny("tiny_mixtral", "adapter=lora")
    experts = expert_parameters(model)
    masks, meta = load_masks(str(run_dir / "mask.safetensors"))
    assert set(experts) <= set(masks)
    _, rows = read_csv(run_dir / "layer_sparsity.csv")
    listed = {r["layer"] for r in rows}
    assert {f"{p}[{e}]" for p in experts for e in range(4)} <= listed
    assert all(abs(float(r["sparsity"]) - 0.5) < 0.005 for r in rows)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["trainable_params"] == trainable_params(model_facts(cfg.model), cfg)
    assert metrics["validation_leaks"] == 0
    config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert set(config["target_parameters"]) == {"experts.gate_up_proj", "experts.down_proj"}
    assert [r for r in layer_rows(masks, 0.5) if "experts" in r["layer"]]
    # the exported model (transformers saves experts per expert) checked by ftlab.validate
    report = validate(str(run_dir / "model"), str(run_dir / "mask.safetensors"), tmp_path / "report.json")
    assert report["passed"] and set(experts) <= set(report["layers"])


def test_wanda_on_experts_uses_their_inputs() -> None:
    """Wanda's score |W| * ||X_j|| differs from |W| alone (same row groups) once an expert's routed
    inputs are counted; with no inputs fed, every expert would get the magnitude ranking's ties."""
    cfg, tok, model = tiny("tiny_mixtral", "sparsity=unstructured", "sparsity.importance=wanda", *CAL)
    wanda = compute_pruned(cfg, model, tok).masks
    cfg_m, _, _ = tiny("tiny_mixtral", "sparsity=unstructured", "sparsity.importance=magnitude", "sparsity.group=row")
    magnitude = compute_pruned(cfg_m, model, tok).masks
    for p in expert_parameters(model):
        assert (wanda[p] != magnitude[p]).float().mean() > 0.05, p


@pytest.mark.parametrize("importance", ["wanda", "sparsegpt"])
def test_an_expert_no_calibration_token_reached_is_pruned_by_magnitude(importance: str) -> None:
    """No routed tokens (here: no batches at all) must not zero the expert (SparseGPT's dead
    columns) nor prune it by position (Wanda's all-equal scores): its magnitudes decide."""
    cfg, _, model = tiny("tiny_mixtral", "sparsity=unstructured", "sparsity.level=0.5", "sparsity.group=layer")
    targets = select_modules(model, ["*.experts"])
    spec = spec_of(cfg.sparsity)
    out = sequential_prune(model, targets, [], spec, importance, sparsegpt=None)
    for name, view in targets.items():
        keep = out.masks[name]
        w = view.weight.detach().abs()
        step = 128 if importance == "sparsegpt" else w.shape[1]  # SparseGPT selects per block of columns
        for c in range(0, w.shape[1], step):
            blk, kb = w[:, c:c + step], keep[:, c:c + step]
            assert blk[kb].min() >= blk[~kb].max()  # the largest half kept
        if out.weights:
            assert torch.equal(out.weights[name] != 0, keep)  # kept weights stay non-zero
