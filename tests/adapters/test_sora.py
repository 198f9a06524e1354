"""SoRA / SDoRA layers against peft, export to a smaller peft adapter, the prox hook, accounting,
and bad input. Training end-to-end lives in ``test_sora_training.py``."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from ftlab.adapters.registry import get_adapter
from ftlab.adapters.sora import GATE_GROUP, GatedDoraLinear, GatedLoraLinear
from ftlab.core.errors import ConfigError
from ftlab.models import build_model, build_tokenizer
from ftlab.preflight.compose import compose_run
from ftlab.training.module import FtlabModule
from tolerance import assert_close

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# tiny_llama: hidden 128, intermediate 256, 4 heads of 32, 2 kv heads -> k/v project to 64
DIMS = {"q_proj": (128, 128), "k_proj": (128, 64), "v_proj": (128, 64), "o_proj": (128, 128),
        "gate_proj": (128, 256), "up_proj": (128, 256), "down_proj": (256, 128)}  # (in, out)


def run_cfg(*overrides: str):
    return compose_run(["task.num_examples=100", "eval.generate=false", *overrides])


def base_model(cfg):
    tok = build_tokenizer(cfg.model)
    return build_model(cfg.model, tok, seed=0)


def adapted_of(cfg, model=None):
    return get_adapter(cfg.adapter.name).build(model if model is not None else base_model(cfg), cfg.adapter, cfg)


def inputs(seed=0, n=3, length=12):
    return torch.randint(3, 259, (n, length), generator=torch.Generator().manual_seed(seed))


def logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def randomize(adapted, seed=0, zero_gates=None):
    """Non-trivial A, B (and magnitudes); gates 1 except the listed ``{layer: [ranks]}`` zeros."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, layer in adapted.layers.items():
            layer.lora_A.weight.copy_(torch.randn(layer.lora_A.weight.shape, generator=gen) * 0.1)
            layer.lora_B.weight.copy_(torch.randn(layer.lora_B.weight.shape, generator=gen) * 0.1)
            layer.lora_gate.copy_(torch.rand(layer.r, generator=gen) + 0.5)
            if isinstance(layer, GatedDoraLinear):
                layer.lora_magnitude.mul_(torch.rand(layer.out_features, generator=gen) + 0.5)
            for r in (zero_gates or {}).get(name, []):
                layer.lora_gate[r] = 0.0


@pytest.mark.numerical
@pytest.mark.parametrize("use_dora", [False, True])
def test_all_gates_one_equals_peft(use_dora):
    """SoRA with g = 1 is peft's LoRA and SDoRA with g = 1 is peft's DoRA (same A, B, W, m)."""
    cfg = run_cfg(f"adapter={'sdora' if use_dora else 'sora'}", "adapter.r=4", "adapter.sparse_lambda_2=0")
    base = base_model(cfg)
    ref = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=cfg.adapter.alpha, target_modules=TARGETS,
                                                         use_dora=use_dora))
    adapted = adapted_of(cfg, copy.deepcopy(base))
    gen = torch.Generator().manual_seed(5)
    inner = ref.base_model.model
    with torch.no_grad():
        for name, layer in adapted.layers.items():
            assert isinstance(layer, GatedDoraLinear if use_dora else GatedLoraLinear)
            assert torch.equal(layer.lora_gate, torch.ones(4))  # gate_init=ones
            mod = inner.get_submodule(name)
            mod.lora_B["default"].weight.copy_(torch.randn(mod.lora_B["default"].weight.shape, generator=gen) * 0.3)
            layer.lora_A.weight.copy_(mod.lora_A["default"].weight)
            layer.lora_B.weight.copy_(mod.lora_B["default"].weight)
            if use_dora:
                mag = mod.lora_magnitude_vector["default"].weight
                assert torch.allclose(mag, layer.lora_magnitude, atol=1e-6)  # both start at ||W||_row
                mag.mul_(torch.rand(mag.shape, generator=gen) + 0.5)
                layer.lora_magnitude.copy_(mag)
    assert len(adapted.layers) == 2 * len(TARGETS)
    ids = inputs()
    expected = logits(ref, ids)
    got = logits(adapted.model, ids)
    assert not torch.allclose(expected, logits(base, ids), atol=1e-3)  # the adapters do change the output
    ops = base.config.intermediate_size  # the longest reduction inside a block
    assert_close(got, expected, ops=ops)
    merged_ref = logits(ref.merge_and_unload(), ids)
    assert_close(logits(adapted.merged_model(), ids), merged_ref, ops=ops)


@pytest.mark.parametrize("name", ["sora", "sdora"])
def test_gate_scales_each_rank(name):
    """A zero gate removes exactly its rank: same output as an adapter without that rank."""
    cfg = run_cfg(f"adapter={name}", "adapter.r=4")
    adapted = adapted_of(cfg)
    randomize(adapted, seed=1)
    layer = adapted.layers["model.layers.0.self_attn.q_proj"]
    x = torch.randn(2, 5, 128)
    with torch.no_grad():
        layer.lora_gate[2] = 0.0
        y = layer(x)
        keep = [0, 1, 3]
        g = layer.lora_gate[keep]
        delta = layer.scaling * (layer.lora_B.weight[:, keep] * g) @ layer.lora_A.weight[keep]
        v = layer.base_layer.weight + delta
        if name == "sdora":
            v = (layer.lora_magnitude / torch.linalg.norm(v, dim=1)).view(-1, 1) * v
        torch.testing.assert_close(y, x @ v.T, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["sora", "sdora"])
def test_export_smaller_rank_peft_adapter_matches_gated_model(tmp_path, name):
    cfg = run_cfg(f"adapter={name}", "adapter.r=4", "adapter.dropout=0.1")
    base = base_model(cfg)
    adapted = adapted_of(cfg, copy.deepcopy(base))
    all_q1 = "model.layers.1.self_attn.q_proj"
    zeros = {"model.layers.0.self_attn.q_proj": [1, 3], "model.layers.0.mlp.down_proj": [0], all_q1: [0, 1, 2, 3]}
    randomize(adapted, seed=2, zero_gates=zeros)
    ids = inputs(1)
    gated = logits(adapted.model, ids)
    assert (gated - logits(base, ids)).abs().max() > 1e-2  # a non-trivial adapter

    assert adapted.save_adapter(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["use_dora"] is (name == "sdora")
    ranks = {k.replace("\\", ""): v for k, v in config["rank_pattern"].items()}
    assert ranks["model.layers.0.self_attn.q_proj"] == 2 and ranks["model.layers.0.mlp.down_proj"] == 3
    assert ranks["model.layers.0.mlp.up_proj"] == 4
    if name == "sora":
        assert all_q1 not in config["target_modules"]  # nothing left to adapt there
    else:
        assert ranks[all_q1] == 1  # one zero rank carries the trained magnitude

    loaded = PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path / "adapter"))
    torch.testing.assert_close(logits(loaded, ids), gated, atol=1e-5, rtol=0)
    # the gated model is intact after the export, and the merged model gives the same outputs
    torch.testing.assert_close(logits(adapted.model, ids), gated, atol=0, rtol=0)
    merged = adapted.merged_model()
    assert not any(isinstance(m, GatedLoraLinear) for m in merged.modules())
    torch.testing.assert_close(logits(merged, ids), gated, atol=1e-5, rtol=0)


def test_export_with_no_live_rank(tmp_path):
    cfg = run_cfg("adapter=sora", "adapter.r=2")
    base = base_model(cfg)
    adapted = adapted_of(cfg, copy.deepcopy(base))
    randomize(adapted, zero_gates={n: [0, 1] for n in adapted.layers})
    assert adapted.sparsity() == 1.0 and adapted.effective_params() == 0
    assert adapted.save_adapter(tmp_path / "adapter") is False
    assert not (tmp_path / "adapter").exists()
    ids = inputs()
    torch.testing.assert_close(logits(adapted.merged_model(), ids), logits(base, ids), atol=1e-6, rtol=0)


def test_effective_params_hand_count():
    cfg = run_cfg("adapter=sora", "adapter.r=4")
    adapted = adapted_of(cfg)
    randomize(adapted, zero_gates={"model.layers.0.self_attn.q_proj": [0],
                                   "model.layers.1.self_attn.k_proj": [0, 1, 2, 3],
                                   "model.layers.1.mlp.down_proj": [1, 2]})
    per_layer = {t: 4 * (i + o) + 4 for t, (i, o) in DIMS.items()}  # live ranks x (in + out) + gates
    full = 2 * sum(per_layer.values())
    assert adapted.trainable_params() == full == 2 * sum(4 * (i + o) + 4 for i, o in DIMS.values())
    expected = full - (128 + 128 + 1) - 4 * (128 + 64 + 1) - 2 * (256 + 128 + 1)
    assert adapted.effective_params() == expected
    assert adapted.sparsity() == pytest.approx(7 / (14 * 4))
    ls = adapted.layer_sparsity()
    assert ls["model.layers.1.self_attn.k_proj"] == 1.0 and ls["model.layers.0.self_attn.q_proj"] == 0.25
    assert sum(ls.values()) == pytest.approx(0.25 + 1.0 + 0.5)

    sd = adapted_of(run_cfg("adapter=sdora", "adapter.r=4"))
    randomize(sd, zero_gates={"model.layers.0.mlp.up_proj": [3]})
    mags = 2 * sum(o for _, o in DIMS.values())
    assert sd.trainable_params() == full + mags
    assert sd.effective_params() == full + mags - (128 + 256 + 1)


def test_regularization_is_lambda_times_mean_abs_gate():
    cfg = run_cfg("adapter=sora", "adapter.r=4", "adapter.sparse_lambda=0.3", "adapter.gate_init=normal")
    adapted = adapted_of(cfg)
    gates = torch.cat([g.detach() for g in adapted.gates()])
    assert gates.numel() == 56 and (gates != 1).any()  # normal init
    reg = adapted.regularization()
    assert reg.item() == pytest.approx(0.3 * gates.abs().mean().item(), rel=1e-6)
    reg.backward()
    g0 = adapted.gates()[0]
    assert torch.allclose(g0.grad, 0.3 * torch.sign(g0.detach()) / 56)
    assert adapted_of(run_cfg("adapter=sora", "adapter.sparse_lambda=0")).regularization() is None


def _module(*overrides):
    cfg = run_cfg("adapter=sora", "adapter.r=4", *overrides)
    adapted = adapted_of(cfg)
    module = FtlabModule(adapted, cfg)
    opt = module.configure_optimizers()["optimizer"]
    return adapted, opt


def test_gate_group_of_the_optimizer():
    adapted, opt = _module("adapter.gate_lr=0.05", "train.weight_decay=0.1", "schedule.lr=2e-3")
    groups = {g["name"]: g for g in opt.param_groups}
    gate_ids = {id(g) for g in adapted.gates()}
    assert {id(p) for p in groups[GATE_GROUP]["params"]} == gate_ids
    assert not gate_ids & {id(p) for p in groups["main"]["params"]}
    assert groups[GATE_GROUP]["lr"] == 0.05 and groups[GATE_GROUP]["weight_decay"] == 0.0
    assert groups["main"]["lr"] == 2e-3 and groups["main"]["weight_decay"] == 0.1
    n_main = sum(p.numel() for p in groups["main"]["params"])
    assert n_main + 56 == adapted.trainable_params()
    _, opt2 = _module("schedule.lr=2e-3")
    assert {g["name"]: g["lr"] for g in opt2.param_groups}[GATE_GROUP] == 2e-3  # gate_lr defaults to lr


def _set_grads(adapted, value):
    for p in adapted.model.parameters():
        if p.requires_grad:
            p.grad = torch.full_like(p, value)


def test_prox_runs_after_real_steps_only():
    adapted, opt = _module("adapter.sparse_lambda_2=0.5", "schedule.lr=1e-3")
    with torch.no_grad():
        for g in adapted.gates():
            g.copy_(torch.tensor([0.3, -0.45, 0.9, -2.0]))
    before = [g.detach().clone() for g in adapted.gates()]
    scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    scaler.scale(torch.tensor(1.0))
    _set_grads(adapted, float("inf"))
    scaler.step(opt)  # inf gradients: the scaler skips the optimiser step ...
    scaler.update()
    for g, b in zip(adapted.gates(), before):
        assert torch.equal(g.detach(), b)  # ... and so no proximal step ran
    _set_grads(adapted, 0.0)
    opt.step()  # a real step with zero gradients: Adam moves nothing, then the prox shrinks by 0.5
    for g in adapted.gates():
        assert torch.allclose(g.detach(), torch.tensor([0.0, 0.0, 0.4, -1.5]), atol=1e-6)
        assert g[0].item() == 0.0 and g[1].item() == 0.0


def test_threshold_scaled_by_gate_lr_and_released_option():
    adapted, opt = _module("adapter.sparse_lambda_2=100", "adapter.threshold_scale=lr", "adapter.gate_lr=1e-3")
    with torch.no_grad():
        for g in adapted.gates():
            g.copy_(torch.tensor([0.05, 0.15, -0.3, 1.0]))
    _set_grads(adapted, 0.0)
    opt.step()
    assert adapted.last_xi == pytest.approx(0.1)
    assert torch.allclose(adapted.gates()[0].detach(), torch.tensor([0.0, 0.05, -0.2, 0.9]), atol=1e-6)

    adapted, opt = _module("adapter.sparse_lambda_2=0.1", "adapter.proximal=released")
    with torch.no_grad():
        for g in adapted.gates():
            g.copy_(torch.tensor([0.05, 0.15, -0.3, 1.0]))
    _set_grads(adapted, 0.0)
    opt.step()
    assert torch.allclose(adapted.gates()[0].detach(), torch.tensor([0.0, 0.0, -0.2, 0.9]), atol=1e-6)


def test_stage_thresholds_follow_schedule_and_per_stage_values():
    stages = "schedule.stages=[{iters:2,lr:1e-3},{iters:2,lr:1e-3},{iters:2,lr:1e-3,sparse_lambda_2:0.5},{iters:2,lr:1e-3}]"
    cfg = run_cfg("adapter=sora", "schedule=stages", stages, "adapter.sparse_lambda_2=1e-4",
                  "adapter.xi_schedule=linear", "adapter.xi_max=4e-4")
    adapted = adapted_of(cfg)
    assert adapted.stage_thresholds == pytest.approx([1e-4, 2e-4, 0.5, 4e-4])
    from ftlab.training.schedules import stage_table

    for stage in stage_table(cfg.schedule):
        adapted.on_stage_start(stage)
        assert adapted.xi == pytest.approx([1e-4, 2e-4, 0.5, 4e-4][stage.index])
    const = adapted_of(run_cfg("adapter=sora", "schedule=stages", "adapter.sparse_lambda_2=3e-4"))
    assert const.stage_thresholds == [3e-4, 3e-4]


def test_config_files_and_defaults():
    for name in ("sora", "sdora"):
        a = run_cfg(f"adapter={name}").adapter
        assert a.name == name and a.gate_init == "ones" and a.proximal == "exact" and a.threshold_scale == "none"
        assert a.gate_lr is None and a.sparse_lambda >= 0 and a.sparse_lambda_2 >= 0


@pytest.mark.parametrize(("override", "key"), [
    ("adapter.sparse_lambda_2=-0.1", "adapter.sparse_lambda_2"),
    ("adapter.sparse_lambda=-1", "adapter.sparse_lambda"),
    ("adapter.r=0", "adapter.r"),
    ("adapter.gate_lr=0", "adapter.gate_lr"),
    ("adapter.gate_init=zeros", "adapter.gate_init"),
    ("adapter.threshold_scale=step", "adapter.threshold_scale"),
    ("adapter.proximal=hard", "adapter.proximal"),
    ("adapter.xi_schedule=cubic", "adapter.xi_schedule"),
    ("adapter.xi_schedule=linear", "adapter.xi_schedule"),  # needs schedule=stages
])
@pytest.mark.parametrize("name", ["sora", "sdora"])
def test_bad_values_fail_at_composition(name, override, key):
    with pytest.raises(ConfigError) as err:
        run_cfg(f"adapter={name}", override)
    assert err.value.key == key
    assert "\n" not in str(err.value)


def test_bad_sparsify_settings():
    base = ["adapter=sora", "schedule=stages", "adapter.xi_schedule=linear"]
    with pytest.raises(ConfigError) as err:
        run_cfg(*base)  # no xi_max
    assert err.value.key == "adapter.xi_max"
    with pytest.raises(ConfigError) as err:
        run_cfg(*base, "adapter.sparse_lambda_2=0.01", "adapter.xi_max=0.001")
    assert err.value.key == "adapter.xi_max"
    with pytest.raises(ConfigError) as err:
        run_cfg("adapter=sora", "schedule=stages", "adapter.xi_schedule=exp_linear", "adapter.sparse_lambda_2=0",
                "adapter.xi_max=0.1")
    assert err.value.key == "adapter.sparse_lambda_2"
    with pytest.raises(ConfigError) as err:
        run_cfg("adapter=lora", "schedule=stages", "schedule.stages=[{iters:2,lr:1e-3,sparse_lambda_2:0.1}]")
    assert err.value.key == "schedule.stages[0].sparse_lambda_2"


@pytest.mark.parametrize("override", ["adapter.sparse_lambda=0.1", "adapter.sparse_lambda_2=0.1",
                                      "adapter.gate_init=ones"])
def test_sora_keys_on_other_adapters_are_rejected(override):
    with pytest.raises(ConfigError) as err:
        run_cfg("adapter=lora", override)
    assert err.value.key.startswith("adapter.")


def test_no_matching_target_module():
    with pytest.raises(ConfigError) as err:  # at composition (meta device) since issue 11, else at build
        adapted_of(run_cfg("adapter=sora", "adapter.target_modules=[qkv]"))
    assert err.value.key == "adapter.target_modules" and "q_proj" in err.value.allowed


@pytest.mark.parametrize(("args", "key"), [
    (["adapter=sora", "adapter.sparse_lambda_2=-1"], "adapter.sparse_lambda_2=-1"),
])
def test_cli_bad_input_one_line_nonzero_exit(tmp_path, args, key, refused_in_process):
    code, _, stderr = refused_in_process(*args, f"hydra.run.dir={tmp_path / 'run'}")  # python -m ftlab's main
    assert code == 2
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ftlab: error: ") and key in lines[0]
    assert not (tmp_path / "run").exists()


def test_gated_layer_is_a_module_of_the_model_and_base_frozen():
    adapted = adapted_of(run_cfg("adapter=sdora", "adapter.r=2"))
    names = {n for n, _ in adapted.model.named_modules()}
    assert "model.layers.0.self_attn.q_proj.lora_A" in names
    trainable = {n for n, p in adapted.model.named_parameters() if p.requires_grad}
    assert trainable and all(any(k in n for k in ("lora_A", "lora_B", "lora_gate", "lora_magnitude"))
                             for n in trainable)
    assert not any(isinstance(m, nn.Linear) and n.endswith("q_proj") for n, m in adapted.model.named_modules())
