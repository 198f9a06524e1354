"""Memory features: gradient checkpointing, attention kernels, a half-precision frozen base with
fp32 trainables, and a k-bit (nf4/int8) base through bitsandbytes, with their one-line refusals."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from conftest import compose, run_tiny
from ftlab.adapters.registry import get_adapter
from ftlab.core.errors import ConfigError
from ftlab.models import build_model, build_tokenizer
from ftlab.models import quantization as Q
from ftlab.models.memory import prepare_for_training, upcast_trainable_
from ftlab.models.structure import decoder_blocks
from ftlab.preflight.model_checks import meta_architecture
from ftlab.sparsity.selection import select_modules
from tolerance import assert_close

HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None
needs_bnb = pytest.mark.skipif(not HAS_BNB, reason="bitsandbytes is not installed (pyproject dependency)")


def batch(vocab: int, n: int = 2, length: int = 16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (n, length), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def adapted_model(*overrides: str):
    """Base built, prepared and adapted the way ``ftlab.recipe.run`` does it."""
    cfg = compose(*overrides)
    model = build_model(cfg.model, build_tokenizer(cfg.model), seed=0)
    model = prepare_for_training(model, cfg)
    torch.manual_seed(0)  # adapter initialisation draws from the global generator
    adapted = get_adapter(cfg.adapter.name).build(model, cfg.adapter, cfg)
    upcast_trainable_(adapted.model)
    if cfg.adapter.name == "masked":
        targets = select_modules(model, cfg.sparsity.modules)
        g = torch.Generator().manual_seed(1)
        adapted.set_masks({n: torch.rand(lin.weight.shape, generator=g) >= 0.5 for n, lin in targets.items()})
    return cfg, adapted


def grads_of_one_step(adapted) -> tuple[float, dict[str, torch.Tensor], int]:
    """Loss, gradients of the trainable tensors, and how often a submodule of decoder block 0 ran
    (transformers checkpoints a block's ``forward``: hooks inside it see the recomputation)."""
    model = adapted.model
    model.train()
    calls = []
    block = model.get_submodule(decoder_blocks(model)[0])
    first = next(block.children())  # self_attn / input_layernorm: runs in every forward
    handle = first.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():  # a non-zero B, so the adapters' gradients are not trivially zero
        for n, p in model.named_parameters():
            if p.requires_grad and "lora_B" in n:
                p.copy_(torch.full_like(p, 0.01))
    loss = model(**batch(model.config.vocab_size)).loss
    loss.backward()
    handle.remove()
    return float(loss), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}, len(calls)


# -- gradient checkpointing ---------------------------------------------------------------
@pytest.mark.parametrize("adapter", ["lora", "dora", "sora", "masked", "full"])
def test_gradient_checkpointing_recomputes_and_gives_the_same_gradients(adapter: str) -> None:
    extra = ["sparsity=random", "sparsity.level=0.5"] if adapter == "masked" else []
    _, plain = adapted_model(f"adapter={adapter}", *extra)
    _, ckpt = adapted_model(f"adapter={adapter}", *extra, "train.gradient_checkpointing=true")
    loss0, grads0, calls0 = grads_of_one_step(plain)
    loss1, grads1, calls1 = grads_of_one_step(ckpt)
    assert (calls0, calls1) == (1, 2)  # the checkpointed block ran again in the backward pass
    assert loss1 == pytest.approx(loss0, abs=1e-6)
    assert grads0.keys() == grads1.keys() and grads0
    for name in grads0:
        torch.testing.assert_close(grads1[name], grads0[name], atol=1e-6, rtol=1e-5)
    assert any(g.abs().sum() > 0 for g in grads1.values())


def test_gradient_checkpointing_on_gpt_neox_with_peft() -> None:
    _, ckpt = adapted_model("model=tiny_gpt_neox", "adapter=lora", "train.gradient_checkpointing=true")
    _, grads, calls = grads_of_one_step(ckpt)
    assert calls == 2 and all(g.abs().sum() > 0 for n, g in grads.items() if "lora_A" in n)


# -- attention kernels ---------------------------------------------------------------------
@pytest.mark.numerical
def test_eager_and_sdpa_attention_agree() -> None:
    outs = {}
    for impl in ("sdpa", "eager"):
        cfg = compose(f"model.attn_implementation={impl}")
        model = build_model(cfg.model, build_tokenizer(cfg.model), seed=0).eval()
        assert model.config._attn_implementation == impl
        b = batch(model.config.vocab_size)
        with torch.no_grad():
            outs[impl] = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    # two attention kernels: each logit goes through reductions of up to intermediate_size terms per block
    assert_close(outs["eager"], outs["sdpa"], ops=model.config.num_hidden_layers * model.config.intermediate_size)


@pytest.mark.parametrize("override,key", [("model.attn_implementation=flash_attention_2", "model.attn_implementation"),
                                          ("model.attn_implementation=xformers", "model.attn_implementation"),
                                          ("model.quantization=fp8", "model.quantization")])
def test_bad_memory_settings_are_one_line(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        compose(override)
    assert err.value.key == key and "\n" not in str(err.value)


# -- half-precision frozen base ------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("adapter", ["lora", "sora", "full"])
def test_half_precision_base_with_fp32_trainables(dtype: str, adapter: str) -> None:
    _, adapted = adapted_model(f"model.dtype={dtype}", f"adapter={adapter}")
    params = dict(adapted.model.named_parameters())
    trainable = {n: p for n, p in params.items() if p.requires_grad}
    frozen = {n: p for n, p in params.items() if not p.requires_grad}
    assert trainable and all(p.dtype == torch.float32 for p in trainable.values())
    if adapter != "full":
        assert frozen and all(p.dtype == getattr(torch, dtype) for p in frozen.values())
    loss, grads, _ = grads_of_one_step(adapted)
    assert torch.isfinite(torch.tensor(loss)) and all(torch.isfinite(g).all() for g in grads.values())


# -- k-bit base ----------------------------------------------------------------------------
def test_bitsandbytes_missing_is_one_line(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(Q.importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(ConfigError) as err:
        compose("model.quantization=nf4")
    assert "bitsandbytes is not installed" in str(err.value) and "\n" not in str(err.value)


def test_old_bitsandbytes_needs_cuda_for_cpu_runs(monkeypatch) -> None:
    monkeypatch.setattr(Q.importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setattr(Q.metadata, "version", lambda name: "0.44.1")
    assert "needs CUDA" in Q.bnb_problem("cpu", cuda=False)
    assert Q.bnb_problem("gpu", cuda=True) is None
    assert "CUDA is not available" in Q.bnb_problem("gpu", cuda=False)
    monkeypatch.setattr(Q.metadata, "version", lambda name: "0.50.2")
    assert Q.bnb_problem("cpu", cuda=False) is None


@needs_bnb
@pytest.mark.parametrize("overrides,key", [
    (["adapter=full"], "adapter"), (["adapter=sdora"], "adapter"),
    (["adapter=masked", "sparsity=random", "sparsity.level=0.5"], "adapter"),
    (["sparsity=random", "sparsity.level=0.5"], "sparsity"), (["base.enabled=true"], "base.enabled"),
])
def test_quantization_refuses_what_needs_dense_weights(overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        compose("model.quantization=nf4", *overrides)
    assert err.value.key == key and "model.quantization=nf4" in str(err.value) and "\n" not in str(err.value)


@needs_bnb
@pytest.mark.parametrize("quant,adapter", [("nf4", "lora"), ("nf4", "dora"), ("int8", "lora")])
def test_kbit_base_trains_and_merge_dequantizes(quant: str, adapter: str) -> None:
    import bitsandbytes as bnb

    cfg, adapted = adapted_model(f"model.quantization={quant}", f"adapter={adapter}",
                                 "train.gradient_checkpointing=true")
    kbit = (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    assert sum(isinstance(m, kbit) for m in adapted.model.modules()) == 14  # 7 linears x 2 blocks
    loss, grads, calls = grads_of_one_step(adapted)
    assert calls == 2 and torch.isfinite(torch.tensor(loss))
    assert grads and all("lora_" in n for n in grads)  # the k-bit base is frozen
    assert all(g.abs().sum() > 0 for n, g in grads.items() if "lora_A" in n)
    opt = torch.optim.AdamW([p for p in adapted.model.parameters() if p.requires_grad], lr=1e-2)
    opt.step()
    model = adapted.model
    b = batch(model.config.vocab_size)
    with torch.no_grad():  # training-mode forward (no dropout): the k-bit layers compute in model.dtype
        expected = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
        model.eval()  # an inference forward may repack the CPU weights (bitsandbytes' AVX512 kernel)
        model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    merged = adapted.merged_model()
    assert not any(isinstance(m, kbit) for m in merged.modules())
    assert not Q.is_quantized(merged) and getattr(merged.config, "quantization_config", None) is None
    assert all(p.dtype == torch.float32 for p in merged.parameters())  # model.dtype
    with torch.no_grad():
        got = merged(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
    # the same dequantised weights either way, up to the kernels' arithmetic: bitsandbytes' CPU nf4
    # path dequantises through bf16, LLM.int8 multiplies in fp16
    tol = 1e-2 if quant == "nf4" else 5e-2
    torch.testing.assert_close(got, expected, atol=tol * expected.abs().max().item(), rtol=tol)


@needs_bnb
def test_sora_on_a_kbit_base_trains_merges_and_exports(tmp_path) -> None:
    import bitsandbytes as bnb

    _, adapted = adapted_model("model.quantization=nf4", "adapter=sora", "model.target_modules=[q_proj,v_proj]")
    assert all(isinstance(layer.base_layer, bnb.nn.Linear4bit) for layer in adapted.layers.values())
    assert all(p.dtype == torch.float32 for p in adapted.model.parameters() if p.requires_grad)
    loss, grads, _ = grads_of_one_step(adapted)
    assert torch.isfinite(torch.tensor(loss)) and all("lora_" in n for n in grads)
    opt = torch.optim.AdamW([p for p in adapted.model.parameters() if p.requires_grad], lr=1e-2)
    opt.step()
    model = adapted.model
    b = batch(model.config.vocab_size)
    with torch.no_grad():
        expected = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
    assert adapted.save_adapter(tmp_path / "adapter")  # peft's bnb LoRA layers around the k-bit base
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["r"] >= 1
    merged = adapted.merged_model()
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in merged.modules())  # targets and the rest
    assert getattr(merged.config, "quantization_config", None) is None
    with torch.no_grad():
        got = merged(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
    torch.testing.assert_close(got, expected, atol=1e-2 * expected.abs().max().item(), rtol=1e-2)


@needs_bnb
@pytest.mark.slow
def test_qlora_run_exports_a_dequantized_model(run_dir) -> None:
    _, metric = run_tiny(run_dir, "model.quantization=nf4", "adapter=lora", "train.gradient_checkpointing=true",
                         "train.max_steps=4", "eval.generate=false")
    assert metric is not None
    config = json.loads((run_dir / "model" / "config.json").read_text())
    assert "quantization_config" not in config
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["trainable_params"] > 0


def test_nn_linear_subclasses_count_as_targets() -> None:
    """bitsandbytes' k-bit linears subclass nn.Linear: the target resolution sees them."""
    if HAS_BNB:
        import bitsandbytes as bnb

        assert issubclass(bnb.nn.Linear4bit, nn.Linear) and issubclass(bnb.nn.Linear8bitLt, nn.Linear)
    else:
        pytest.skip("bitsandbytes is not installed")


@pytest.mark.slow
def test_half_base_with_checkpointing_runs_end_to_end(run_dir) -> None:
    """run.py's order: prepare (checkpointing) -> adapter -> fp32 trainables -> fit -> merge/export."""
    _, metric = run_tiny(run_dir, "adapter=sora", "model.dtype=bfloat16", "train.gradient_checkpointing=true",
                         "model.attn_implementation=eager", "train.max_steps=4", "eval.generate=false")
    assert metric is not None
    config = json.loads((run_dir / "model" / "config.json").read_text())
    assert config["dtype"] == "bfloat16" and config.get("use_cache", True) is True  # generation keeps its cache
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["trainable_params"] > 0 and 0.0 <= metrics["sparsity"] <= 1.0


@needs_bnb
@pytest.mark.slow
def test_sora_on_int8_runs_end_to_end(run_dir) -> None:
    """Every linear a SoRA target: the merge leaves no k-bit layer for transformers to dequantise."""
    _, metric = run_tiny(run_dir, "model.quantization=int8", "adapter=sora", "train.gradient_checkpointing=true",
                         "train.max_steps=4", "eval.generate=false")
    assert metric is not None and (run_dir / "sparsity_log.csv").is_file()
    assert "quantization_config" not in json.loads((run_dir / "model" / "config.json").read_text())


@pytest.mark.parametrize("preset", ["tiny_mixtral", "tiny_qwen2_moe"])
def test_kbit_base_with_fused_moe_experts_is_refused_before_loading(preset: str) -> None:
    # bitsandbytes quantises nn.Linear only: transformers' fused expert tensors would stay dense
    # (and k-bit preparation upcasts them to float32), so most of the model would not shrink
    with pytest.raises(ConfigError) as err:
        compose(f"model={preset}", "model.quantization=nf4")
    assert err.value.key == "model.quantization" and "fused MoE experts" in str(err.value)
    assert "\n" not in str(err.value)


def test_dense_expert_params_counts_the_fused_expert_tensors() -> None:
    moe = meta_architecture(OmegaConf.to_yaml(compose("model=tiny_mixtral").model, resolve=True))
    experts = sum(p.numel() for n, p in moe.named_parameters() if ".experts." in n)
    assert Q.dense_expert_params(moe) == experts > 0
    dense = meta_architecture(OmegaConf.to_yaml(compose("model=tiny_llama").model, resolve=True))
    assert Q.dense_expert_params(dense) == 0
