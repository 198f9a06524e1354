"""Hardware targets are registered specs: composition checks, the launch preflight, fused grouping
and the adapters' sharding rules read their flags, so a target registered from outside composes
and is checked like a built-in one."""

from __future__ import annotations

import pytest

from ftlab.core.errors import ConfigError, fail
from ftlab.fused.grouping import why_not_fused
from ftlab.hardware import HardwareSpec, all_targets, get_target, register_target, shards_parameters
from ftlab.models import memory
from ftlab.preflight.compose import compose_run
from ftlab.preflight.launch import _local_job_checks
from ftlab.training.trainer import strategy as trainer_strategy


def _no_dora(run_cfg) -> None:
    if run_cfg.adapter.name == "dora":
        fail("adapter", "dora", "lora or full on h23_sim (its kernels have no magnitude vector)")


#: an accelerator whose jobs run through its own Hydra launcher (as a plugin package would add one)
SIM = register_target(HardwareSpec("h23_sim", in_process=False, launcher="h23_sim", counts_epochs=False,
                                   fuses=False, validate=_no_dora, label="simulator"))
#: an in-process accelerator with a sharding strategy of its own
NPU = register_target(HardwareSpec("h23_npu", sharding_strategies=("h23_shard",), label="NPU"))


def test_builtin_targets_state_their_capabilities():
    flags = {t.name: (t.in_process, t.launcher, t.counts_epochs, t.fuses, t.sharding_strategies)
             for t in all_targets() if not t.name.startswith("h23_")}
    assert flags == {"cpu": (True, None, True, True, ("fsdp",)), "gpu": (True, None, True, True, ("fsdp",)),
                     "auto": (True, None, True, True, ("fsdp",)),
                     "cerebras": (False, "cerebras", False, False, ())}
    with pytest.raises(ConfigError, match=r"hardware.accelerator='tpu' is invalid: one of \[.*'cerebras', 'cpu'"):
        get_target("tpu")
    with pytest.raises(ValueError, match="a launcher"):
        HardwareSpec("bad", in_process=False)


def test_an_outside_target_composes_and_its_flags_are_read_everywhere():
    sim = ["hardware.accelerator=h23_sim", "hardware.name=h23_sim", "hardware.precision=fp8"]
    cfg = compose_run(sim)  # fp8 is the launcher's business, not checked against Lightning's precisions
    assert cfg.hardware.accelerator == "h23_sim"
    with pytest.raises(ConfigError, match="hardware.precision='fp8' is invalid: one of"):
        compose_run(["hardware.precision=fp8"])  # an in-process target's precision is Lightning's
    with pytest.raises(ConfigError, match=r"adapter='dora' is invalid: lora or full on h23_sim"):
        compose_run([*sim, "adapter=dora"])  # the target's own validate
    with pytest.raises(ConfigError, match=r"train.max_epochs=1 is invalid: null with hardware.accelerator=h23_sim \(its simulator"):
        compose_run([*sim, "train.max_epochs=1", "train.max_steps=null"])
    assert why_not_fused(cfg) == "hardware=h23_sim: fused groups run in one single-device process"
    with pytest.raises(ConfigError, match="hardware='h23_sim' is invalid: a local hardware option for a single run; "
                                          "simulator jobs run through --multirun hydra/launcher=h23_sim"):
        _local_job_checks([cfg], multirun=False, launcher_name="basic")
    _local_job_checks([cfg], multirun=True, launcher_name="h23_sim")  # sent through its own launcher: fine


def test_a_targets_sharding_strategy_is_refused_where_whole_tensors_are_needed():
    npu = ["hardware.accelerator=h23_npu", "hardware.strategy=h23_shard"]
    cfg = compose_run(npu)
    assert shards_parameters(cfg.hardware) and not shards_parameters(compose_run([]).hardware)
    with pytest.raises(ConfigError, match=r"adapter.lora_plus_ratio=2.0 is invalid: null with "
                                          r"hardware.strategy=h23_shard"):
        compose_run([*npu, "adapter.lora_plus_ratio=2"])
    assert why_not_fused(cfg) == "hardware=cpu: fused groups run in one single-device process"


#: an in-process CUDA target under another name than ``gpu``
CUDA_NPU = register_target(HardwareSpec("h23_cuda", cuda=True, sharding_strategies=("h23_shard",), label="CUDA NPU"))


def test_flags_not_names_decide_sharding_cuda_and_cpu_kernels(monkeypatch):
    npu = ["hardware.accelerator=h23_npu", "hardware.strategy=h23_shard"]
    with pytest.raises(ConfigError, match=r"adapter='peft' is invalid: lora or dora with hardware.strategy=h23_shard"):
        compose_run([*npu, "adapter=peft"])  # the target's sharding strategy, not the word "fsdp"
    assert trainer_strategy(compose_run(["hardware.accelerator=h23_npu", "hardware.strategy=fsdp"])) == "fsdp"
    loftq = ["adapter.init=loftq", "adapter.loftq_bits=4"]
    with pytest.raises(ConfigError, match=r"adapter.init='loftq' is invalid: another init with "
                                          r"hardware.accelerator=h23_npu"):
        compose_run([*loftq, "hardware.accelerator=h23_npu"])
    assert compose_run([*loftq, "hardware.accelerator=h23_cuda"]).adapter.init == "loftq"  # cuda=True: accepted
    assert get_target("cpu").host_cpu and not any(get_target(n).host_cpu for n in ("gpu", "auto", "cerebras"))
    monkeypatch.setattr(memory, "is_flash_attn_2_available", lambda: True)  # as on a machine with flash-attn
    cfg = compose_run(["hardware.accelerator=h23_cuda"])
    cfg.model.attn_implementation = "flash_attention_2"
    memory.validate_attention(cfg, host_cpu=get_target("h23_cuda").host_cpu)  # a CUDA target: accepted
    cfg.hardware.accelerator = "cpu"
    with pytest.raises(ConfigError, match=r"model.attn_implementation='flash_attention_2' is invalid: sdpa or eager "
                                          r"with hardware.accelerator=cpu"):
        memory.validate_attention(cfg, host_cpu=get_target("cpu").host_cpu)
