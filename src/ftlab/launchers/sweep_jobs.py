"""One job of a Hydra sweep as ftlab's own launchers compose it before running it.

The fused and the Cerebras launcher both plan over every job's config before launching any (a
group, a ModelZoo translation), so both compose the jobs themselves the way Hydra's basic launcher
does inside ``run_job``: the sweep config of the job's overrides, with its job id and number set.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from hydra.types import HydraContext
from omegaconf import DictConfig, open_dict


def sweep_job_config(hydra_context: HydraContext, config: DictConfig, overrides: Sequence[str],
                     idx: int) -> DictConfig:
    """Job ``idx``'s sweep config (its ``hydra`` node included), as the basic launcher loads it."""
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = idx
        sweep_config.hydra.job.num = idx
    return sweep_config


def job_dir(sweep_config: DictConfig) -> Path:
    """Where Hydra's ``run_job`` will put the job: ``abspath(<sweep.dir>/<sweep.subdir>)``, known
    before the job runs (plans and groups need it first)."""
    return Path(os.path.abspath(str(sweep_config.hydra.sweep.dir))) / str(sweep_config.hydra.sweep.subdir)
