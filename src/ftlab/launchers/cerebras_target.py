"""``hardware.accelerator=cerebras``: the Cerebras target's flags and its composition-time checks.

Its facts live here, with the launcher: jobs run through ``hydra/launcher=cerebras`` (``cszoo
fit`` on the appliance), never in-process; ModelZoo counts steps, not epochs; a job is a whole
cszoo run, so it joins no fused group; its precision is ModelZoo's (checked by the launcher, not
against Lightning's). The adapter settings it cannot honour are the launcher's table
(:data:`ftlab.launchers.cerebras_adapters.SETTING_REFUSALS`). Registered when the hardware
registry is first read (:data:`ftlab.hardware.targets.BUILTIN_MODULES`).
"""

from __future__ import annotations

from typing import Any

from ftlab.hardware.targets import HardwareSpec, register_target
from ftlab.launchers.cerebras_adapters import check_adapter_settings


def validate(run_cfg: Any) -> None:
    """What a Cerebras job refuses at composition (the launcher's preflight checks the rest)."""
    check_adapter_settings(run_cfg.adapter)


CEREBRAS = register_target(HardwareSpec(
    "cerebras", in_process=False, launcher="cerebras", counts_epochs=False, fuses=False, validate=validate,
    label="Cerebras", doc="a Cerebras CS-X cluster through ModelZoo (cszoo fit), --multirun hydra/launcher=cerebras"))
