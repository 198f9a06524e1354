"""Any HF causal LM: default targets from the loaded model, one-line errors, every adapter family.

Tiny GPT-NeoX, Phi, Gemma, Qwen2, Mixtral and Qwen2-MoE models are built from transformers
configs (random weights, no download); each adapter takes an optimiser step and its merge must
reproduce the adapted model, and masked LoRA on a 50 % mask must keep every zero after merge.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from conftest import compose, run_tiny
from ftlab.adapters.masked import MaskedLora
from ftlab.adapters.registry import get_adapter
from ftlab.adapters.targets import peft_parameter_list, peft_target_list, resolve_targets
from ftlab.core.errors import ConfigError
from ftlab.models import build_model, build_tokenizer
from ftlab.models.structure import (
    decoder_layer_classes,
    decoder_linears,
    expert_parameters,
    layer_patterns,
    router_names,
)
from ftlab.sparsity.selection import canonical_name, select_modules

ARCHS = ["tiny_gpt_neox", "tiny_phi", "tiny_gemma", "tiny_qwen2", "tiny_mixtral", "tiny_qwen2_moe"]
MOE = ["tiny_mixtral", "tiny_qwen2_moe", "tiny_qwen3_moe"]
#: leaf names of the fused 3-D expert parameters of each decoder block (default targets too)
EXPERTS = {"tiny_mixtral": ["gate_up_proj", "down_proj"], "tiny_qwen2_moe": ["gate_up_proj", "down_proj"],
           "tiny_qwen3_moe": ["gate_up_proj", "down_proj"]}
#: leaf names of the linears inside the decoder blocks (the default targets)
EXPECTED = {
    "tiny_llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "tiny_gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "tiny_phi": ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"],
    "tiny_gemma": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "tiny_qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "tiny_mixtral": ["q_proj", "k_proj", "v_proj", "o_proj"],  # experts are fused 3-D weights
    "tiny_qwen2_moe": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "tiny_qwen3_moe": ["q_proj", "k_proj", "v_proj", "o_proj"],
}


def tiny(preset: str, *overrides: str):
    cfg = compose(f"model={preset}", *overrides)
    tok = build_tokenizer(cfg.model)
    return cfg, build_model(cfg.model, tok, seed=0)


def batch(vocab: int, n: int = 2, length: int = 12) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (n, length), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def train_step(model: nn.Module, adapted, lr: float = 1e-2) -> float:
    model.train()
    opt = torch.optim.AdamW([g for g in adapted.param_groups(lr, 0.0)], lr=lr)
    loss = model(**batch(model.config.vocab_size)).loss
    reg = adapted.regularization()
    (loss if reg is None else loss + reg).backward()
    opt.step()
    adapted.after_optimizer_step(opt)
    return float(loss)


@torch.no_grad()
def logits(model: nn.Module) -> torch.Tensor:
    model.eval()
    b = batch(model.config.vocab_size)
    return model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits


# -- structure -----------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["tiny_llama", *ARCHS, "tiny_qwen3_moe"])
def test_default_targets_are_the_decoder_linears(preset: str) -> None:
    cfg, model = tiny(preset)
    names = resolve_targets(model, None)
    layers = int(cfg.model.config.num_hidden_layers)
    experts = EXPERTS.get(preset, [])
    assert len(layer_patterns(names)) == len(EXPECTED[preset]) + len(experts)  # one pattern per kind of weight
    assert [n.rsplit(".", 1)[-1] for n in names] == EXPECTED[preset] * layers + experts * layers
    out = model.get_output_embeddings()
    assert all(model.get_submodule(n) is not out for n in decoder_linears(model))  # never the LM head
    assert names == decoder_linears(model) + expert_parameters(model)
    assert len(decoder_layer_classes(model)) == 1


@pytest.mark.parametrize("preset,routers", [("tiny_mixtral", ["mlp.gate"]),
                                            ("tiny_qwen2_moe", ["mlp.gate", "mlp.shared_expert_gate"])])
def test_moe_routers_are_found_and_never_targets(preset: str, routers: list[str]) -> None:
    _, model = tiny(preset)
    found = router_names(model)
    assert found == [f"model.layers.{i}.{r}" for i in range(2) for r in routers]
    assert not set(found) & set(decoder_linears(model))
    for r in routers:
        with pytest.raises(ConfigError) as err:
            resolve_targets(model, ["q_proj", r.rsplit(".", 1)[-1]])
        text = str(err.value)
        assert "router" in text and "\n" not in text and "q_proj" in text


def test_peft_list_is_leaf_names_unless_that_selects_more() -> None:
    _, model = tiny("tiny_qwen2_moe")
    names = decoder_linears(model)
    assert peft_target_list(model, names) == EXPECTED["tiny_qwen2_moe"]  # shared_expert_gate not selected
    experts = expert_parameters(model)
    assert peft_parameter_list(model, experts) == ["experts.gate_up_proj", "experts.down_proj"]
    assert peft_parameter_list(model, experts[:2]) == experts[:2]  # layer 0 only: full names
    _, model = tiny("tiny_llama")
    first = [n for n in resolve_targets(model, None) if ".layers.0." in n]
    assert peft_target_list(model, first) == first  # leaf names would select layer 1 as well


@pytest.mark.parametrize("preset,bad", [("tiny_gpt_neox", ["q_proj", "v_proj"]), ("tiny_phi", ["o_proj"]),
                                        ("tiny_llama", ["q_proj", "qkv"])])
def test_unmatched_target_is_one_line_with_the_models_linears(preset: str, bad: list[str]) -> None:
    for name in ("lora", "sora"):
        cfg, model = tiny(preset, f"adapter={name}")
        cfg.adapter.target_modules = bad  # past composition (which checks it on the meta device)
        with pytest.raises(ConfigError) as err:
            get_adapter(name).build(model, cfg.adapter, cfg)
        text = str(err.value)
        assert err.value.key == "adapter.target_modules" and "\n" not in text
        for leaf in EXPECTED[preset]:
            assert leaf in text


def test_preset_list_narrows_and_is_named_in_errors() -> None:
    cfg, model = tiny("tiny_phi", "model.target_modules=[fc1,fc2]")
    adapted = get_adapter("lora").build(model, cfg.adapter, cfg)
    wrapped = {n.rsplit(".", 1)[-1] for n, m in adapted.model.named_modules() if hasattr(m, "lora_A")}
    assert wrapped == {"fc1", "fc2"}
    cfg, model = tiny("tiny_phi")
    cfg.model.target_modules = ["o_proj"]
    with pytest.raises(ConfigError) as err:
        get_adapter("lora").build(model, cfg.adapter, cfg)
    assert err.value.key == "model.target_modules"


def test_sparsity_modules_matching_nothing_lists_the_linears() -> None:
    _, model = tiny("tiny_gpt_neox")
    with pytest.raises(ConfigError) as err:
        select_modules(model, ["*.self_attn.*"])
    text = str(err.value)
    assert "gpt_neox.layers.*.attention.query_key_value" in text and "\n" not in text
    _, model = tiny("tiny_qwen2_moe")
    pruned = select_modules(model, ["*.layers.*"])
    assert not any("gate." in n and "gate_proj" not in n for n in pruned)  # routers are never pruned
    assert "model.layers.0.mlp.shared_expert.gate_proj.weight" in pruned


# -- every adapter on every architecture --------------------------------------------------
@pytest.mark.parametrize("preset", ARCHS)
@pytest.mark.parametrize("adapter", ["lora", "dora", "sora", "full"])
def test_adapter_trains_and_merges(preset: str, adapter: str) -> None:
    narrowed: tuple[str, ...] = ()
    if preset in EXPERTS and not get_adapter(adapter).experts and not get_adapter(adapter).full_weights:
        with pytest.raises(ConfigError) as err:  # DoRA / SoRA have no form for fused experts: one line
            compose(f"model={preset}", f"adapter={adapter}")
        assert err.value.key == "adapter" and "target_modules" in str(err.value) and "\n" not in str(err.value)
        _, dense = tiny(preset)  # linears named by their last two components: shared_expert.down_proj, not down_proj
        linears = list(dict.fromkeys(".".join(n.rsplit(".", 2)[-2:]) for n in decoder_linears(dense)))
        narrowed = (f"adapter.target_modules=[{','.join(linears)}]",)
    cfg, model = tiny(preset, f"adapter={adapter}", *narrowed)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    targets = resolve_targets(model, list(cfg.adapter.target_modules) if narrowed else None)
    experts = expert_parameters(model) if not narrowed else []  # before peft wraps the experts modules
    adapted = get_adapter(adapter).build(model, cfg.adapter, cfg)
    if adapter == "sora":
        adapted.after_optimizer_step = lambda opt: None  # keep every gate live: the merge is what is tested
        assert sorted(adapted.layers) == sorted(targets)
    elif adapter != "full":
        wrapped = [n.removeprefix("base_model.model.") for n, m in adapted.model.named_modules()
                   if hasattr(m, "lora_A") and isinstance(getattr(m, "base_layer", None), nn.Linear)]
        params = {canonical_name(f"{n}.{m.parameter_name}") for n, m in adapted.model.named_modules()
                  if hasattr(m, "parameter_name")}  # peft's ParamWrapper: one per fused expert parameter
        assert wrapped == [t for t in targets if t not in experts] and params == set(experts)
    loss = train_step(adapted.model, adapted)
    assert torch.isfinite(torch.tensor(loss))
    expected = logits(adapted.model)
    merged = adapted.merged_model()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(logits(merged), expected, atol=1e-4, rtol=1e-4)
    changed = [n for n, p in merged.named_parameters() if n in before and not torch.equal(p, before[n])]
    assert changed  # the trained update is in the merged weights


@pytest.mark.parametrize("preset", ARCHS)
def test_masked_lora_keeps_a_half_mask_after_merge(preset: str) -> None:
    cfg, model = tiny(preset, "adapter=masked", "sparsity=random", "sparsity.level=0.5")
    params = dict(model.named_parameters())
    names = list(dict.fromkeys(v.param_name for v in select_modules(model, cfg.sparsity.modules).values()))
    g = torch.Generator().manual_seed(1)  # masks of the parameters' own shapes (3-D for fused experts)
    masks = {name: torch.rand(params[name].shape, generator=g) >= 0.5 for name in names}
    with torch.no_grad():
        for name in names:
            params[name].mul_(masks[name])
    pruned_base = {name: params[name].detach().clone() for name in names}
    adapted = MaskedLora(model, cfg.adapter, cfg)
    adapted.set_masks(masks)
    assert set(adapted.masks) == set(masks)  # every pruned linear carries its mask
    for _ in range(2):
        train_step(adapted.model, adapted)
    merged = adapted.merged_model()
    params = dict(merged.named_parameters())
    moved = 0
    for name, mask in masks.items():
        w = params[name]
        assert int((w[~mask] != 0).sum()) == 0, name  # zero leaks
        moved += int((w[mask] != pruned_base[name][mask]).sum())
    assert moved > 0.5 * sum(int(m.sum()) for m in masks.values())  # the update reached the kept weights
    assert 0.45 < sum(int((~m).sum()) for m in masks.values()) / sum(m.numel() for m in masks.values()) < 0.55


# -- local HF directories ------------------------------------------------------------------
@pytest.mark.parametrize("preset", ARCHS)
def test_local_dir_of_each_architecture(preset: str, tmp_path) -> None:
    cfg, model = tiny(preset)
    model.save_pretrained(str(tmp_path), safe_serialization=True)
    cfg = compose(f"model.name_or_path={tmp_path}", "adapter=lora")  # the default tiny_llama preset otherwise
    loaded = build_model(cfg.model, build_tokenizer(cfg.model))
    assert type(loaded) is type(model)
    meta = build_model(cfg.model, device="meta")
    assert type(meta) is type(model) and next(meta.parameters()).device.type == "meta"
    adapted = get_adapter("lora").build(loaded, cfg.adapter, cfg)
    assert set(adapted.model.peft_config["default"].target_modules) == set(EXPECTED[preset])
    assert set(adapted.model.peft_config["default"].target_parameters or []) == {
        f"experts.{leaf}" for leaf in EXPERTS.get(preset, [])}


@pytest.mark.slow
def test_local_gpt_neox_dir_runs_end_to_end(tmp_path) -> None:
    """The issue's case: a GPT-NeoX directory with adapter=lora and the default preset."""
    _, model = tiny("tiny_gpt_neox")
    model.save_pretrained(str(tmp_path / "neox"), safe_serialization=True)
    run_dir = tmp_path / "run"
    _, metric = run_tiny(run_dir, f"model.name_or_path={tmp_path / 'neox'}", "adapter=lora", "train.max_steps=4",
                         "eval.generate=false")
    assert metric is not None
    config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert set(config["target_modules"]) == set(EXPECTED["tiny_gpt_neox"])
    assert (run_dir / "model" / "model.safetensors").is_file()


@pytest.mark.parametrize("overrides,key", [
    (["model=tiny_gpt_neox", "adapter.target_modules=[q_proj]"], "adapter.target_modules"),
    (["model=tiny_mixtral", "adapter=sora", "adapter.target_modules=[q_proj,gate]"], "adapter.target_modules"),
    (["model=tiny_phi", "model.target_modules=[o_proj]"], "model.target_modules"),
])
def test_target_lists_are_checked_at_composition(overrides: list[str], key: str) -> None:
    """Before any weight loads: the architecture on the meta device is enough."""
    with pytest.raises(ConfigError) as err:
        compose(*overrides)
    assert err.value.key == key and "\n" not in str(err.value)
