"""The data-driven and quantising LoRA inits (``adapter.init=eva|corda|loftq``) through peft's own
implementations: the same A/B and base tensors as peft's documented pipeline on the same tiny model
and batches, a hit equal to the build, the data settings in the init step's key, and one line for
each combination that cannot work."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import EvaConfig, get_peft_model, initialize_lora_eva_weights
from peft import LoraConfig as PeftLoraConfig
from peft.tuners.lora.config import CordaConfig
from peft.tuners.lora.corda import preprocess_corda

from ftlab.adapters.inits import init_spec, initial_state
from ftlab.adapters.peft_lora import peft_config
from ftlab.adapters.registry import get_adapter
from ftlab.core.errors import ConfigError
from ftlab.models import build_model, build_tokenizer
from ftlab.preflight.compose import compose_run
from ftlab.reuse.cached import cached_init_fn
from ftlab.reuse.runner import StepRunner
from ftlab.reuse.steps import as_plain, run_steps
from ftlab.sparsity.calibration import calibration_batches

DATA = ["task.num_examples=100", "adapter=lora", "adapter.r=4", "adapter.calibration.batches=4",
        "adapter.calibration.batch_size=8"]


def setup(init: str, tmp_path, *extra: str):
    cfg = compose_run([*DATA, f"adapter.init={init}", f"paths.cache_dir={tmp_path}", *extra])
    tokenizer = build_tokenizer(cfg.model)
    base = build_model(cfg.model, tokenizer, seed=0)
    return cfg, base, lambda: calibration_batches(cfg, tokenizer, cfg.adapter.calibration, "adapter.calibration")


def ours_miss_then_hit(cfg, base, batches) -> list[dict[str, torch.Tensor]]:
    """The init built through the store (a miss), then again (a hit); the RNG after each equal."""
    states, rngs, hits = [], [], []
    for _ in range(2):
        runner = StepRunner(cfg)
        torch.manual_seed(3)
        adapted = get_adapter("lora").build(copy.deepcopy(base), cfg.adapter, cfg, init_store=cached_init_fn(runner),
                                            init_batches=batches)
        rngs.append(torch.get_rng_state())
        hits.append(runner.records["init"]["cache_hit"])
        states.append(initial_state(adapted.model))
    assert hits == [False, True] and torch.equal(rngs[0], rngs[1])
    return states


def assert_same(states: list[dict[str, torch.Tensor]], want: dict[str, torch.Tensor]) -> None:
    for state in states:
        assert state.keys() == want.keys()
        for name, tensor in want.items():
            assert torch.equal(state[name], tensor), name


def targets_of(state: dict[str, torch.Tensor]) -> list[str]:
    return sorted({n.split(".")[-3] for n in state if n.endswith("base_layer.weight")})


@pytest.mark.slow
@pytest.mark.numerical  # ours and peft's own EVA, same batches and seed: compared exactly (same code, same order)
def test_eva_equals_peft_initialize_lora_eva_weights_and_hits_equal_builds(tmp_path):
    cfg, base, batches = setup("eva", tmp_path, "adapter.eva_rho=2")
    states = ours_miss_then_hit(cfg, base, batches)
    torch.manual_seed(3)
    own = get_peft_model(copy.deepcopy(base), PeftLoraConfig(
        r=4, lora_alpha=cfg.adapter.alpha, target_modules=targets_of(states[0]), init_lora_weights="eva",
        eva_config=EvaConfig(rho=2.0, tau=cfg.adapter.eva_tau)))
    initialize_lora_eva_weights(own, dataloader=batches(), show_progress_bar=False)
    assert_same(states, initial_state(own))
    a = {n: t for n, t in states[0].items() if "lora_A" in n}
    assert len({t.shape[0] for t in a.values()}) > 1  # rho = 2 redistributed the ranks across layers
    assert all(t.abs().sum() == 0 for n, t in states[0].items() if "lora_B" in n)  # EVA starts at the base


@pytest.mark.slow
@pytest.mark.numerical  # W_res + s B0 A0 == W within 1e-5: fp32 round-off of one rank-r product on O(0.02) weights
@pytest.mark.parametrize("method", ["ipm", "kpm"])
def test_corda_equals_peft_preprocess_corda_and_rewrites_the_base_exactly(tmp_path, method):
    cfg, base, batches = setup("corda", tmp_path, f"adapter.corda_method={method}")
    states = ours_miss_then_hit(cfg, base, batches)
    own_base = copy.deepcopy(base)
    config = PeftLoraConfig(r=4, lora_alpha=cfg.adapter.alpha, target_modules=targets_of(states[0]),
                            init_lora_weights="corda", corda_config=CordaConfig(corda_method=method))

    def run_model():  # peft's CorDA example feeds one unpadded sample per forward
        for batch in batches():
            for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
                own_base(input_ids=ids[mask.bool()].unsqueeze(0))

    preprocess_corda(own_base, config, run_model=run_model)
    want = initial_state(get_peft_model(own_base, config))
    assert_same(states, want)
    params = dict(base.named_parameters())
    scale = cfg.adapter.alpha / 4
    for name in (n for n in want if n.endswith("base_layer.weight")):
        prefix = name.removesuffix(".base_layer.weight")
        a, b = want[f"{prefix}.lora_A.default.weight"], want[f"{prefix}.lora_B.default.weight"]
        original = params[prefix.removeprefix("base_model.model.") + ".weight"]
        torch.testing.assert_close(want[name] + scale * b @ a, original, atol=1e-5, rtol=0)


def steps_of(*overrides: str):
    return run_steps(as_plain(compose_run([*DATA, *overrides])))


def test_data_driven_init_keys_cover_their_batches_and_settings():
    for init, own, other in (("eva", "adapter.eva_rho=1", "adapter.corda_method=kpm"),
                             ("corda", "adapter.corda_method=kpm", "adapter.eva_rho=1")):
        ref = steps_of(f"adapter.init={init}").init
        assert ref is not None and "adapter.calibration" in ref.config
        for override in (own, "adapter.calibration.batches=2", "task.max_length=48", "task.num_examples=90",
                         "adapter.r=8"):
            assert steps_of(f"adapter.init={init}", override).init.key != ref.key, (init, override)
        assert steps_of(f"adapter.init={init}", other).init.key == ref.key, (init, other)
    pissa = steps_of("adapter.init=pissa").init
    assert steps_of("adapter.init=pissa", "adapter.calibration.batches=2").init.key == pissa.key  # reads no data


def test_loftq_reaches_peft_up_to_its_cuda_quantiser_and_is_refused_on_cpu():
    cfg = compose_run([*DATA, "adapter.init=loftq", "adapter.loftq_bits=2", "adapter.loftq_iter=3", "hardware=gpu"])
    base = build_model(cfg.model, build_tokenizer(cfg.model), seed=0)
    config = peft_config(base, cfg.adapter, cfg, use_dora=False)
    assert config.init_lora_weights == "loftq" and config.loftq_config == {"loftq_bits": 2, "loftq_iter": 3}
    assert init_spec("loftq").rewrites_base and not init_spec("loftq").converts_back


@pytest.mark.parametrize(("overrides", "message"), [
    (["adapter.init=loftq"], "adapter.init='loftq' is invalid: another init with hardware.accelerator=cpu "
     "(peft's loftq_init quantises on a CUDA device only)"),
    (["adapter=dora", "adapter.init=eva"], "adapter.init='eva' is invalid: default, gaussian, pissa or olora with "
     "adapter=dora"),
    (["adapter.init=corda", "sparsity=unstructured"], "adapter.init='corda' is invalid: default or gaussian with a "
     "sparse base"),
    (["adapter.init=eva", "hardware=cerebras"], "adapter.init='eva' is invalid: default on Cerebras"),
    (["adapter.init=corda", "hardware=fsdp"], "adapter.init='corda' is invalid: default or gaussian with "
     "hardware.strategy=fsdp"),
    (["adapter.corda_method=xpm"], "adapter.corda_method='xpm' is invalid: ipm or kpm"),
    (["adapter.loftq_bits=3"], "adapter.loftq_bits=3 is invalid: 2, 4 or 8"),
    (["adapter.eva_rho=0.5"], "adapter.eva_rho=0.5 is invalid: a number >= 1"),
    (["adapter=sora", "adapter.init=eva"], "adapter.init is not a key of SoraConfig"),
])
def test_impossible_combinations_are_one_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        compose_run(["adapter=lora", *overrides])
    assert str(err.value).startswith(message), str(err.value)
