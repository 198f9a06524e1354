"""A LoRA init that rewrites the frozen base (PiSSA, OLoRA) as a cached step of the plan: its key
covers what the factorisation reads, a hit gives the same rewritten base and initial factors as a
build and as peft's own ``get_peft_model``, and the RNG that follows does not depend on which."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from ftlab.adapters.inits import initial_state
from ftlab.adapters.params import init_bytes, model_facts
from ftlab.adapters.registry import get_adapter
from ftlab.artifacts.store import ArtifactStore
from ftlab.models import build_model, build_tokenizer
from ftlab.preflight.compose import compose_run
from ftlab.recipe.run import run
from ftlab.reuse.cached import INIT_FILE, cached_init_fn
from ftlab.reuse.runner import StepRunner
from ftlab.reuse.steps import as_plain, run_steps

PISSA = ["adapter=lora", "adapter.init=pissa", "adapter.r=4"]


def steps_of(*overrides: str):
    return run_steps(as_plain(compose_run(["task.num_examples=100", *overrides])))


def test_init_step_key_covers_what_the_factorisation_reads():
    ref = steps_of(*PISSA)
    assert ref.init is not None and ref.init.parent == ref.model.key and ref.train.parent == ref.init.key
    assert [label for label, _ in ref.labelled()][-2:] == ["init", "train"]
    for override in ("adapter.init=olora", "adapter.r=8", "adapter.alpha=4", "adapter.use_rslora=true",
                     "adapter.target_modules=[q_proj]", "model.init_seed=3"):
        assert steps_of(*PISSA, override).init.key != ref.init.key, override
    for override in ("adapter.dropout=0.1", "adapter.lora_plus_ratio=4", "schedule.lr=1e-2", "train.batch_size=4"):
        assert steps_of(*PISSA, override).init.key == ref.init.key, override
    for init in ("default", "gaussian"):  # these change no base: no step, the train key stands on the model
        plain = steps_of("adapter=lora", f"adapter.init={init}")
        assert plain.init is None and plain.train.parent == plain.model.key
    assert steps_of("adapter=sora").init is None  # an adapter without the key


@pytest.mark.numerical  # W_res + s B0 A0 == W within 1e-5: fp32 SVD/QR round-off on 128-wide weights of O(0.02)
@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_hit_equals_build_equals_peft_own_and_leaves_the_rng_alone(tmp_path, init):
    cfg = compose_run(["task.num_examples=100", "adapter=lora", f"adapter.init={init}", "adapter.r=4",
                       f"paths.cache_dir={tmp_path}"])
    base = build_model(cfg.model, build_tokenizer(cfg.model), seed=0)
    spec = get_adapter("lora")
    states, rngs, records = [], [], []
    for _ in range(2):  # a miss, then a hit
        runner = StepRunner(cfg)
        torch.manual_seed(11)
        adapted = spec.build(copy.deepcopy(base), cfg.adapter, cfg, init_store=cached_init_fn(runner))
        rngs.append(torch.get_rng_state())
        states.append(initial_state(adapted.model))
        records.append(runner.records["init"])
        assert adapted.model.peft_config["default"].init_lora_weights == init  # the export's conversion reads it
    assert [r["cache_hit"] for r in records] == [False, True] and records[0]["key"] == records[1]["key"]
    assert torch.equal(rngs[0], rngs[1])
    targets = sorted({n.split(".")[-3] for n in states[0] if n.endswith("base_layer.weight")})
    own = get_peft_model(copy.deepcopy(base), PeftLoraConfig(r=4, lora_alpha=cfg.adapter.alpha, target_modules=targets,
                                                            init_lora_weights=init))
    want = initial_state(own)
    for state in states:
        assert state.keys() == want.keys()
        for name, tensor in want.items():
            assert torch.equal(state[name], tensor), name
    # the base really was rewritten, and W_res + s B0 A0 is the original weight
    params = dict(base.named_parameters())
    name = next(n for n in want if n.endswith("base_layer.weight"))
    prefix = name.removesuffix(".base_layer.weight")
    original = params[prefix.removeprefix("base_model.model.") + ".weight"]
    a, b = want[f"{prefix}.lora_A.default.weight"], want[f"{prefix}.lora_B.default.weight"]
    assert (want[name] - original).abs().max() > 1e-3
    torch.testing.assert_close(want[name] + (cfg.adapter.alpha / 4) * b @ a, original, atol=1e-5, rtol=0)


@pytest.mark.slow
@pytest.mark.numerical  # merged == W_res + s B A within 1e-5: one fp32 rank-4 product on O(0.02) weights
def test_two_runs_with_one_init_share_the_rewritten_base(tmp_path):
    """The second run hits the first's init step and trains to the same adapter; with the store off
    the init is computed in memory and the result is the same too. The exported merged model is the
    stored rewritten base plus the trained update."""
    common = ["task.num_examples=120", "train.max_steps=4", "train.batch_size=8", "train.eval_batch_size=32",
              "eval.generate=false", "train.log_measurements=false", "adapter.dropout=0.1", *PISSA,
              f"paths.cache_dir={tmp_path / 'cache'}"]
    out = []
    for name, extra in (("built", []), ("hit", []), ("naive", ["reuse.enabled=false"])):
        run(compose_run([*common, *extra]), run_dir=tmp_path / name)
        out.append((load_file(str(tmp_path / name / "adapter" / "adapter_model.safetensors")),
                    json.loads((tmp_path / name / "reuse_record.json").read_text())))
    assert [rec["init"]["cache_hit"] for _, rec in out] == [False, True, False]
    assert [rec["init"]["cached"] for _, rec in out] == [True, True, False]
    for adapter, _ in out[1:]:
        assert adapter.keys() == out[0][0].keys()
        assert all(torch.equal(adapter[k], out[0][0][k]) for k in adapter)
    # the planner's size of the artifact: the tensors' bytes, the safetensors header on top
    (entry,) = [e for e in ArtifactStore(tmp_path / "cache").entries() if e.info()["kind"] == "init"]
    size = (entry.artifact / INIT_FILE).stat().st_size
    planned = init_bytes(model_facts(compose_run(common).model), compose_run(common))
    assert planned <= size <= planned + 16384
    # the merged model is the stored residual base + s B A of the trained factors (peft's converted
    # adapter stacks them first: A' = [A; A0], B' = [B, -B0])
    residual = load_file(str(entry.artifact / INIT_FILE))
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "built" / "model").state_dict()
    adapter, scale, checked = out[0][0], compose_run(common).adapter.alpha / 4, 0
    for name in (n for n in residual if n.endswith(".base_layer.weight")):
        prefix = name.removesuffix(".base_layer.weight")
        a, b = adapter[f"{prefix}.lora_A.weight"][:4], adapter[f"{prefix}.lora_B.weight"][:, :4]
        want = residual[name] + scale * b @ a
        torch.testing.assert_close(merged[prefix.removeprefix("base_model.model.") + ".weight"], want,
                                   atol=1e-5, rtol=0)
        checked += 1
    assert checked > 0
