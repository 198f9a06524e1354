"""Hardware-target registry: ``hardware.accelerator`` -> its :class:`HardwareSpec`.

Why a registry: whether a target trains in-process with Lightning or through an external
launcher, whether it counts epochs, joins fused groups or shards parameters, and what it refuses
decide the composition checks, the launch preflight, fused grouping and the planner. The spec
states them once and those call sites read its flags, never accelerator names, so a target added
from outside (entry-point group ``ftlab.hardware``) is composed, checked and launched like a
built-in one. Adding one = one spec plus one YAML option under ``conf/hardware/``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ftlab.core.plugins import Registry


@dataclass(frozen=True)
class HardwareSpec:
    name: str
    #: trained in this process by Lightning's Trainer (accelerator, devices, strategy and precision
    #: are Lightning's); ``False``: jobs run through the external launcher named by ``launcher``
    in_process: bool = True
    #: the ``hydra/launcher`` option its jobs must be sent through (``--multirun``), for a target
    #: that is not ``in_process``
    launcher: str | None = None
    #: counts training by ``train.max_epochs`` as well as by ``train.max_steps``
    counts_epochs: bool = True
    #: may join a fused group (several trials in one single-device process)
    fuses: bool = True
    #: its devices are CUDA devices: a machine running it must have ``hardware.devices`` of them, and
    #: a SLURM job must be granted them
    cuda: bool = False
    #: its devices are this host's CPU cores: CUDA-only kernels (``model.attn_implementation=
    #: flash_attention_2``) are refused at composition
    host_cpu: bool = False
    #: ``hardware.strategy`` values that shard weights, gradients and optimiser state over the ranks
    #: (FSDP-like): the planner divides memory by the devices, and features that need whole
    #: tensors refuse them
    sharding_strategies: tuple[str, ...] = ()
    #: validate(run_cfg) raises ConfigError: the target's own refusals (a launcher's table of what
    #: it cannot run), called at composition for every job
    validate: Callable[[Any], None] | None = None
    #: for messages ("Cerebras")
    label: str = ""
    doc: str = ""

    def __post_init__(self):
        if not self.in_process and not self.launcher:
            raise ValueError(f"hardware target {self.name!r}: not in_process, so a launcher its jobs run through")


#: Modules defining built-in targets in higher packages (a launcher's own target), imported on the
#: registry's first lookup so that no lower package has to import a launcher to know its flags.
BUILTIN_MODULES = ("ftlab.launchers.cerebras_target",)

_REGISTRY: Registry[HardwareSpec] = Registry("hardware target", "hardware.accelerator", HardwareSpec,
                                             "ftlab.hardware", builtin_modules=BUILTIN_MODULES)
register_target = _REGISTRY.register
all_targets = _REGISTRY.all
#: the spec of ``hardware.accelerator``; one line naming the registered targets otherwise
get_target = _REGISTRY.get


def shards_parameters(hardware_cfg: Any) -> bool:
    """The run shards its parameters over the ranks (``hardware.strategy`` is one of the target's
    ``sharding_strategies``, e.g. FSDP)."""
    return hardware_cfg.strategy in get_target(hardware_cfg.accelerator).sharding_strategies


_LIGHTNING = dict(sharding_strategies=("fsdp",))
CPU = register_target(HardwareSpec("cpu", host_cpu=True, label="CPU", doc="Lightning on CPU (devices > 1: DDP over gloo)",
                                   **_LIGHTNING))
GPU = register_target(HardwareSpec("gpu", cuda=True, label="GPU", doc="Lightning on CUDA devices", **_LIGHTNING))
AUTO = register_target(HardwareSpec("auto", label="auto", doc="Lightning picks the accelerator", **_LIGHTNING))
