"""``hardware=fsdp`` (issue 11): what the sharded path refuses, the wrap units it picks, the
consolidation that gives rank 0 a whole model, and 2-rank CPU (gloo) runs through the CLI: the same
training as DDP, a resume that continues bit for bit, and an export that loads into a plain model."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from conftest import cli, compose
from ftlab.core.errors import ConfigError
from ftlab.preflight.fsdp_rules import check_fsdp_config, fsdp_problem
from ftlab.training.fsdp import gather_trainable, plain_parts, rebuild_, unwrap_, wrap_policy
from ftlab.training.state import (
    STATE_FILE,
    STATE_KEY,
    checkpoints_newest_first,
    snapshot_trainable,
    state_info,
    trainable_shapes,
)

CPU_FSDP = ["hardware=fsdp", "hardware.accelerator=cpu", "hardware.precision=32-true"]


@pytest.mark.parametrize("overrides,key", [
    (["adapter=sora"], "adapter"),
    (["model.quantization=nf4"], "model.quantization"),
    (["base.enabled=true"], "base.enabled"),
    (["adapter=full", "sparsity=unstructured", "sparsity.mode=sparse_to_sparse"], "sparsity.mode"),
])
def test_what_fsdp_does_not_train_is_refused_in_one_line(overrides, key):
    cfg = compose(*CPU_FSDP, *overrides)
    with pytest.raises(ConfigError) as err:
        check_fsdp_config(cfg)
    assert err.value.key == key and "\n" not in str(err.value)
    for ok in (["adapter=lora"], ["adapter=dora"], ["adapter=masked", "sparsity=unstructured"], ["adapter=full"]):
        assert fsdp_problem(compose(*CPU_FSDP, *ok)) is None
    assert fsdp_problem(compose("hardware=cpu", *overrides)) is None  # other strategies: not this check's business


def test_cli_refuses_fsdp_with_a_gated_adapter_before_anything_runs(tmp_path, refused_in_process):
    # python -m ftlab's main in this process; the next test runs a refusal through a real interpreter
    code, _, stderr = refused_in_process(*CPU_FSDP, "adapter=sora", f"hydra.run.dir={tmp_path / 'r'}")
    assert code == 2 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("ftlab: error: adapter='sora' is invalid")
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cli_refuses_gpu_fsdp_without_cuda_before_weights_load(tmp_path):
    res = cli("ftlab", "hardware=fsdp", f"hydra.run.dir={tmp_path / 'r'}")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("ftlab: error: hardware='fsdp' is invalid") and "needs a CUDA device" in last
    assert not (tmp_path / "r").exists()


def _tiny_lora():
    from ftlab.adapters.registry import get_adapter
    from ftlab.recipe.run import prepare_model

    cfg = compose("model.config.hidden_size=32", "model.config.intermediate_size=64")
    _, model = prepare_model(cfg)
    return cfg, get_adapter("lora").build(model, cfg.adapter, cfg).model


def _wrapped_units(policy, model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if n and policy(module=m, recurse=False, nonwrapped_numel=1)]


def test_wrap_units_are_the_decoder_blocks_and_in_a_half_precision_base_the_trainable_leaves():
    _, model = _tiny_lora()
    blocks = _wrapped_units(wrap_policy(model), model)  # fp32 everywhere: one unit per decoder block
    assert len(blocks) == model.config.num_hidden_layers and all(b.endswith(".layers." + b[-1]) for b in blocks)
    for p in model.parameters():
        if not p.requires_grad:
            p.data = p.data.to(torch.bfloat16)  # a bf16 frozen base under fp32 LoRA weights
    units = _wrapped_units(wrap_policy(model), model)
    leaves = [u for u in units if u not in blocks]
    assert set(blocks) < set(units) and all(".lora_A." in u or ".lora_B." in u for u in leaves)
    assert len(leaves) == len([n for n, p in model.named_parameters() if p.requires_grad])
    assert not any(u.endswith(("q_proj.base_layer", "embed_tokens", "lm_head")) for u in units)
    with pytest.raises(ConfigError, match="model.dtype='bfloat16' is invalid: float32 with adapter=dora"):
        check_fsdp_config(compose(*CPU_FSDP, "adapter=dora", "model.dtype=bfloat16"))
    assert fsdp_problem(compose(*CPU_FSDP, "adapter=lora", "model.dtype=bfloat16")) is None


@pytest.fixture
def gloo_world_of_one(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_fsdp_wrapped_model_unwraps_to_the_same_plain_model(gloo_world_of_one):
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    _, model = _tiny_lora()
    ids = torch.randint(0, 250, (2, 12))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    record = trainable_shapes(model)
    snapshot_trainable(model)
    parts = plain_parts(model, keep_values=True)
    root = FSDP(model, auto_wrap_policy=wrap_policy(model), use_orig_params=True, device_id=torch.device("cpu"))
    assert any(isinstance(m, FSDP) for m in model.modules()) and trainable_shapes(model) == record
    assert state_info(model, None)["trainable"] == record  # the record, not the flat shards
    trainable = gather_trainable(root, record, torch.device("cpu"))
    unwrap_(model)
    with pytest.raises(RuntimeError, match="do not fit the model"):
        rebuild_(model, parts, {"bogus.weight": torch.zeros(1)})
    rebuild_(model, parts, trainable)
    assert not any(isinstance(m, FSDP) for m in model.modules())
    assert {n: list(p.shape) for n, p in model.named_parameters() if p.requires_grad} == record
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, expected)


def test_bf16_base_under_mixed_precision_consolidates_to_the_base_and_the_trained_adapter(gloo_world_of_one):
    import copy

    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp import MixedPrecision
    from torch.distributed.fsdp._common_utils import clean_tensor_name

    _, model = _tiny_lora()
    for p in model.parameters():
        if not p.requires_grad:
            p.data = p.data.to(torch.bfloat16)  # a bf16 frozen base under fp32 LoRA weights
    reference = copy.deepcopy(model)
    record = trainable_shapes(model)
    parts = plain_parts(model, keep_values=True)
    frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad}
    kept = {ns[0]: v for ns, v in parts.params if v is not None}
    assert kept.keys() == frozen.keys() and all(kept[n].data_ptr() == frozen[n].data_ptr() for n in kept)  # no copy
    bf16 = MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.bfloat16, buffer_dtype=torch.bfloat16)
    root = FSDP(model, auto_wrap_policy=wrap_policy(model), use_orig_params=True, device_id=torch.device("cpu"),
                mixed_precision=bf16)  # Lightning's bf16-mixed policy
    opt = torch.optim.AdamW([p for p in root.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(0, 250, (2, 12))
    for _ in range(2):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = root(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    # what FSDP's own full state dict would miss: frozen bf16 weights are not re-registered after backward
    listed = {clean_tensor_name(n) for n, _ in root.named_parameters()}
    assert set(frozen) - listed
    trainable = gather_trainable(root, record, torch.device("cpu"))
    unwrap_(model)
    rebuild_(model, parts, trainable)
    assert not any(isinstance(m, FSDP) for m in model.modules())
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trained.keys() == record.keys() and all(not torch.equal(trained[n], reference.get_parameter(n)) for n in trained)
    reference.load_state_dict(trainable, strict=False)  # the pre-wrap model + the trained adapter
    want, got = reference.state_dict(), model.state_dict()
    assert want.keys() == got.keys()
    assert all(want[k].dtype == got[k].dtype and torch.equal(want[k], got[k]) for k in want)
    assert model.get_input_embeddings().weight.dtype == torch.bfloat16
    named = dict(model.named_parameters(remove_duplicate=False))
    ref_named = dict(reference.named_parameters(remove_duplicate=False))
    assert named.keys() == ref_named.keys()  # every name a parameter again (tied ones tied as before)
    assert len({id(p) for p in named.values()}) == len({id(p) for p in ref_named.values()})
    buffers = {n: b for n, b in model.named_buffers()}
    assert all(torch.equal(b, buffers[n]) and b.dtype == buffers[n].dtype for n, b in reference.named_buffers())
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, reference(input_ids=ids).logits)


# -- 2 ranks over gloo, through the CLI ----------------------------------------------------------
RUN = ["hardware.devices=2", "train.batch_size=4", "task.num_examples=200", "task.eval_examples=16",
       "eval.generate=false", "train.log_every_n_steps=1", "train.log_measurements=false",
       "model.config.hidden_size=64", "model.config.intermediate_size=128", "train.max_steps=6",
       "train.save_every_n_steps=3"]
DROPOUT = "adapter.dropout=0.1"  # dropout draws from every rank's RNG: the resume must restore each


def _train(run: Path, *overrides: str, env: dict | None = None) -> str:
    """The console (stdout + stderr) of a run that must succeed."""
    proc = cli("ftlab", *RUN, *overrides, f"hydra.run.dir={run}", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _losses(run: Path) -> list[float]:
    with open(run / "loss_log.csv", newline="") as fh:
        return [float(r["train_loss"]) for r in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def fsdp_and_ddp(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    _train(root / "fsdp", *CPU_FSDP, DROPOUT)
    # verbose: Lightning's rank lines on the console (the quiet console keeps them in the run's log)
    console = _train(root / "ddp", "hardware=cpu", DROPOUT, env={"FTLAB_VERBOSE": "1"})
    (root / "ddp.console").write_text(console)
    return root / "fsdp", root / "ddp"


@pytest.mark.slow
def test_two_process_cpu_ddp_run(fsdp_and_ddp):
    """Two-process DDP on CPU (gloo) through the CLI, as a user runs it: Lightning re-executes the
    command line for rank 1 with the same run dir, and only rank 0 writes the run's files."""
    _, run = fsdp_and_ddp
    out = run.with_name("ddp.console").read_text()
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in out and "GLOBAL_RANK: 1, MEMBER: 2/2" in out
    with open(run / "loss_log.csv", newline="") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [1, 2, 3, 4, 5, 6]  # one writer: no duplicated rows
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_steps"] == 6 and "val_loss" in metrics
    # rank 0 evaluated after rank 1 had left, and wrote everything once
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-epoch0-step3", "checkpoint-epoch0-step6"]
    assert not list(run.rglob("*.tmp")) and not list((run / "checkpoints").glob(".tmp-*"))
    assert (run / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_two_rank_fsdp_trains_as_ddp_does_and_checkpoints_trainable_tensors(fsdp_and_ddp):
    fsdp, ddp = fsdp_and_ddp
    # same global batches, same gradient average: sharding changes where tensors live, not the math
    assert _losses(fsdp) == pytest.approx(_losses(ddp), rel=1e-5, abs=1e-6) and len(_losses(fsdp)) == 6
    a, b = (load_file(str(r / "adapter" / "adapter_model.safetensors")) for r in (fsdp, ddp))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    metrics = json.loads((fsdp / "metrics.json").read_text())
    assert metrics["train_steps"] == 6 and metrics["trainable_params"] == json.loads(
        (ddp / "metrics.json").read_text())["trainable_params"]
    state = torch.load(checkpoints_newest_first(fsdp)[0] / STATE_FILE, map_location="cpu", weights_only=True)
    names = set(state[STATE_KEY]["trainable"])
    assert set(state["state_dict"]) == names and all("lora_" in n for n in names)
    assert all(list(state["state_dict"][n].shape) == s for n, s in state[STATE_KEY]["trainable"].items())
    assert len(state["optimizer_states"][0]["state"]) == len(names)  # AdamW moments of trainable ones only


@pytest.mark.slow
def test_fsdp_export_loads_into_a_plain_model_with_the_same_logits(fsdp_and_ddp):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ftlab.recipe.run import prepare_model

    fsdp, ddp = fsdp_and_ddp
    merged = AutoModelForCausalLM.from_pretrained(str(fsdp / "model")).eval()
    reference = AutoModelForCausalLM.from_pretrained(str(ddp / "model")).eval()
    _, base = prepare_model(compose(*RUN[1:], "hardware=cpu"))
    adapted = PeftModel.from_pretrained(base, str(fsdp / "adapter")).eval()
    ids = torch.randint(0, 250, (2, 16))
    with torch.no_grad():
        logits = merged(input_ids=ids).logits
        assert torch.allclose(logits, adapted(input_ids=ids).logits, atol=1e-5)  # adapter/ and model/ agree
        assert torch.allclose(logits, reference(input_ids=ids).logits, atol=1e-5)  # and match DDP's training
        with adapted.disable_adapter():
            assert not torch.allclose(logits, adapted(input_ids=ids).logits, atol=1e-4)  # it trained


@pytest.mark.slow
def test_fsdp_resume_continues_bit_for_bit(fsdp_and_ddp, tmp_path):
    fsdp, _ = fsdp_and_ddp
    run = tmp_path / "r"
    shutil.copytree(fsdp, run)
    full = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    shutil.rmtree(checkpoints_newest_first(run)[0])  # interrupted after the step-3 checkpoint
    shutil.rmtree(run / "adapter")
    _train(run, *CPU_FSDP, DROPOUT, "resume=auto")
    assert json.loads((run / "metrics.json").read_text())["resumed_from_step"] == 3
    resumed = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert resumed.keys() == full.keys() and all(torch.equal(full[k], resumed[k]) for k in full)


@pytest.mark.slow
@pytest.mark.parametrize("adapter", [["adapter=dora"], ["adapter=masked", "sparsity=unstructured", "sparsity.level=0.5"],
                                     ["adapter=full"], ["adapter=lora", "model.dtype=bfloat16"]])
def test_other_adapters_train_sharded_and_export(adapter, tmp_path):
    from transformers import AutoModelForCausalLM

    run = tmp_path / "r"
    _train(run, *CPU_FSDP, *adapter, "train.max_steps=2", "train.save_every_n_steps=2")
    metrics = json.loads((run / "metrics.json").read_text())
    state = torch.load(checkpoints_newest_first(run)[0] / STATE_FILE, map_location="cpu", weights_only=True)
    assert set(state["state_dict"]) == set(state[STATE_KEY]["trainable"])
    assert sum(v.numel() for v in state["state_dict"].values()) == metrics["trainable_params"]
    model = AutoModelForCausalLM.from_pretrained(str(run / "model"))
    if "model.dtype=bfloat16" in adapter:  # a bf16 frozen base; LoRA leaves are fp32 units of their own
        assert {v.dtype for v in load_file(str(run / "adapter" / "adapter_model.safetensors")).values()} == {torch.float32}
    if "sparsity=unstructured" in adapter:  # masked LoRA keeps the base's zeros through the merge
        w = model.model.layers[0].self_attn.q_proj.weight
        assert 0.45 < float((w == 0).float().mean()) < 0.55


CPU_AUTOCAST = """import torch
from lightning.pytorch.plugins.precision import fsdp
fsdp.FSDPPrecision.forward_context = lambda self: torch.autocast("cpu", dtype=torch.bfloat16)
"""


@pytest.mark.slow
@pytest.mark.parametrize("devices", [1, 2])
def test_bf16_base_under_bf16_mixed_trains_sharded_and_exports_the_base_plus_the_adapter(devices, tmp_path):
    # 1 rank is the H200 failure (FSDP switches to NO_SHARD; its full state missed the frozen bf16
    # weights after backward), 2 ranks really shard. Lightning autocasts FSDP's mixed precision for
    # CUDA only, so every rank's interpreter (sitecustomize) autocasts on the CPU instead
    import os

    from peft import PeftModel

    from ftlab.recipe.run import prepare_model

    (tmp_path / "sitecustomize.py").write_text(CPU_AUTOCAST)
    run = tmp_path / "r"
    proc = cli("ftlab", *RUN[1:], f"hardware.devices={devices}", "hardware=fsdp", "hardware.accelerator=cpu",
               "hardware.precision=bf16-mixed", "model.dtype=bfloat16", "train.max_steps=2", "train.save_every_n_steps=2", f"hydra.run.dir={run}",
               env={"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ("cpu x2 bf16-mixed" in proc.stdout + proc.stderr) == (devices == 2)  # the header's world size
    assert {v.dtype for v in load_file(str(run / "adapter" / "adapter_model.safetensors")).values()} == {torch.float32}
    got = load_file(str(run / "model" / "model.safetensors"))
    _, base = prepare_model(compose(*RUN[1:], "model.dtype=bfloat16"))
    untrained = {k: v.clone() for k, v in base.state_dict().items()}
    want = PeftModel.from_pretrained(base, str(run / "adapter")).merge_and_unload().state_dict()
    assert got.keys() == want.keys() and all(got[k].dtype == torch.bfloat16 for k in got)
    assert all(torch.equal(got[k], want[k]) for k in got)  # the frozen base, rebuilt on rank 0, + the adapter
    assert any(not torch.equal(got[k], untrained[k]) for k in got)  # it trained


@pytest.mark.slow
def test_fsdp_and_ddp_resume_each_others_checkpoints(fsdp_and_ddp, tmp_path):
    # the optimiser state is keyed as a plain optimiser keys it, whichever strategy wrote it
    for source, hardware in zip(fsdp_and_ddp, (["hardware=cpu"], CPU_FSDP)):
        run = tmp_path / source.name
        shutil.copytree(source, run)
        shutil.rmtree(checkpoints_newest_first(run)[0])
        shutil.rmtree(run / "adapter")
        _train(run, *hardware, DROPOUT, "resume=auto")
        full, resumed = (load_file(str(r / "adapter" / "adapter_model.safetensors")) for r in (source, run))
        assert json.loads((run / "metrics.json").read_text())["resumed_from_step"] == 3
        assert resumed.keys() == full.keys() and all(torch.allclose(full[k], resumed[k], atol=1e-6) for k in full)


def test_checkpoint_gathers_only_the_trainable_tensors(gloo_world_of_one, monkeypatch):
    import torch.distributed as dist
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    _, model = _tiny_lora()
    shapes = trainable_shapes(model)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    root = FSDP(model, auto_wrap_policy=wrap_policy(model), use_orig_params=True, device_id=torch.device("cpu"))
    with FSDP.state_dict_type(root, StateDictType.FULL_STATE_DICT, FullStateDictConfig(rank0_only=True)):
        full = root.state_dict()
    sent: list[int] = []  # numel of every tensor a rank puts into a collective
    real_gather, real_all_gather = dist.gather, dist.all_gather
    monkeypatch.setattr(dist, "gather", lambda t, *a, **k: sent.append(t.numel()) or real_gather(t, *a, **k))
    monkeypatch.setattr(dist, "all_gather", lambda out, t, *a, **k: sent.append(t.numel()) or real_all_gather(out, t, *a, **k))
    monkeypatch.setattr(FSDP, "state_dict", lambda *a, **k: pytest.fail("the whole model's state was gathered"))
    state = gather_trainable(root, shapes, torch.device("cpu"))
    assert list(state) == list(shapes) and all(torch.equal(state[k], full[k]) for k in shapes)
    assert all(v.device.type == "cpu" and v.untyped_storage().nbytes() == v.nbytes for v in state.values())
    # what travelled: the trainable values once, plus one count per tensor; not a frozen weight
    assert sum(sent) == sum(math.prod(s) for s in shapes.values()) + len(shapes) < frozen


def _two_rank_gather(rank: int, init: str, out: str) -> None:
    import torch.distributed as dist
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        _, model = _tiny_lora()
        shapes = trainable_shapes(model)
        root = FSDP(model, auto_wrap_policy=wrap_policy(model), use_orig_params=True, device_id=torch.device("cpu"))
        local = sum(p.numel() for p in root.parameters() if p.requires_grad)
        with FSDP.state_dict_type(root, StateDictType.FULL_STATE_DICT, FullStateDictConfig(rank0_only=True)):
            full = root.state_dict()
        state = gather_trainable(root, shapes, torch.device("cpu"))
        torch.save({"local": local, "state": state, "full": {k: full[k] for k in shapes} if rank == 0 else {},
                    "total": sum(math.prod(s) for s in shapes.values())}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_sharded_ranks_gather_whole_trainable_tensors_on_rank_0(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_two_rank_gather, args=(f"file://{tmp_path / 'pg'}", str(tmp_path / "out")), nprocs=2)
    zero, one = (torch.load(tmp_path / f"out.{r}", weights_only=True) for r in (0, 1))
    assert zero["local"] + one["local"] == zero["total"] and 0 < zero["local"] < zero["total"]  # really sharded
    assert one["state"] == {} and list(zero["state"]) == list(zero["full"])
    assert all(torch.equal(zero["state"][k], zero["full"][k]) for k in zero["full"])


def test_half_precision_base_under_a_mixed_precision_policy_is_allowed():
    # consolidation rebuilds the frozen base from rank 0's pre-wrap tensors instead of FSDP's gathered
    # state (which misses them after backward under bf16-mixed); adapters that read their fp32
    # weights outside their own unit still need an fp32 base
    cfg = compose("hardware=fsdp", "hardware.devices=1", "adapter=lora", "model.dtype=bfloat16")
    assert fsdp_problem(cfg) is None and fsdp_problem(compose(*CPU_FSDP, "adapter=lora", "model.dtype=bfloat16")) is None
    with pytest.raises(ConfigError, match=r"model.dtype='bfloat16' is invalid: float32 with adapter=dora"):
        check_fsdp_config(compose("hardware=fsdp", "hardware.devices=1", "adapter=dora", "model.dtype=bfloat16"))
