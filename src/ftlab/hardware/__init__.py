"""Hardware targets (``hardware.accelerator``): what each can run, as flags the rest of ftlab reads.

A ground-floor package: it imports nothing of ftlab but :mod:`ftlab.core.plugins` and
:mod:`ftlab.core.errors`, so every package (adapters, fused groups, the planner, the launchers) may read
a target's flags. A target whose facts belong to a launcher (Cerebras) is defined in that
launcher's package and found through :data:`ftlab.hardware.targets.BUILTIN_MODULES`.
"""

from ftlab.hardware.targets import HardwareSpec, all_targets, get_target, register_target, shards_parameters

__all__ = ["HardwareSpec", "all_targets", "get_target", "register_target", "shards_parameters"]
