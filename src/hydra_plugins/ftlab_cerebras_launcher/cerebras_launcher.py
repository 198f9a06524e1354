"""``hydra/launcher=cerebras``: every job of a sweep becomes one ``cszoo fit`` run.

For each job the launcher composes the job's config exactly as the other launchers do, then,
instead of training locally, translates it into a ModelZoo trainer YAML, writes it with the
preparation steps (task data -> ModelZoo HDF5, HF base -> Cerebras checkpoint) and the command
script into the job dir and (unless ``dry_run``) runs the script (steps not done yet, then
``cszoo fit``) and converts its logs.
All jobs are translated and checked before the first one is launched, so an option Cerebras
cannot run stops the sweep with one line and nothing half-launched.
"""


import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from ftlab.core.errors import FtlabError, report_error
from ftlab.launchers.cerebras_options import CEREBRAS_TARGET, CerebrasOptions

log = logging.getLogger(__name__)


@dataclass
class CerebrasLauncherConf(CerebrasOptions):
    _target_: str = CEREBRAS_TARGET


ConfigStore.instance().store(group="hydra/launcher", name="cerebras", node=CerebrasLauncherConf, provider="ftlab")


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


class CerebrasLauncher(Launcher):
    def __init__(self, **params: Any) -> None:
        self.options = CerebrasOptions(**{k: _plain(v) for k, v in params.items()})
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        # task_function (local training) is not used: the job runs on the appliance.
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def _num_csx(self, cfg: DictConfig) -> int:
        return int(self.options.num_csx if self.options.num_csx is not None else cfg.hardware.num_csx)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
        from hydra.core.utils import configure_log, filter_overrides, run_job, setup_globals

        from ftlab.launchers.cerebras_job import check_executable
        from ftlab.launchers.cerebras_params import base_mask, check_supported, cszoo_params
        from ftlab.launchers.cerebras_steps import job_plan
        from ftlab.launchers.sweep_jobs import job_dir as job_dir_of
        from ftlab.launchers.sweep_jobs import sweep_job_config

        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        opts = self.options
        # 1. compose, check and translate every job before launching any
        jobs = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            sweep_config = sweep_job_config(self.hydra_context, self.config, overrides, idx)
            check_supported(sweep_config, opts)
            # Hydra's run_job puts the job in abspath(<sweep.dir>/<sweep.subdir>); the plan needs it now.
            sweep_dir = Path(os.path.abspath(str(sweep_config.hydra.sweep.dir)))
            job_dir = job_dir_of(sweep_config)
            plan = job_plan(sweep_config, opts, job_dir, sweep_dir, base_mask(sweep_config, opts))
            params = cszoo_params(sweep_config, opts, self._num_csx(sweep_config), plan)
            jobs.append((idx, overrides, sweep_config, params, plan, job_dir))
        if not opts.dry_run:
            check_executable(opts)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        verb = "Writing (dry run)" if opts.dry_run else "Launching"
        log.info(f"{verb} {len(jobs)} Cerebras jobs with {opts.executable}")
        # 2. run them (cszoo blocks until its appliance job ends); a failed job's FtlabError is kept
        # and reported once all ran, as ftlab's one line (raised inside Hydra's run_job it would
        # end the sweep in Hydra's traceback)
        self._failures: list[FtlabError] = []
        runs = []
        for idx, overrides, sweep_config, params, plan, job_dir in jobs:
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            task = self._job(params, plan, job_dir, sweep_config)
            runs.append(run_job(hydra_context=self.hydra_context, task_function=task,
                                config=sweep_config, job_dir_key="hydra.sweep.dir",
                                job_subdir_key="hydra.sweep.subdir"))
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        if self._failures:
            first = self._failures[0]
            more = f" ({len(self._failures)} of {len(jobs)} Cerebras jobs failed)" if len(self._failures) > 1 else ""
            sys.exit(report_error(FtlabError(f"{first}{more}")))
        return runs

    def _job(self, params: dict, plan, planned_dir: Path, sweep_config: DictConfig):
        opts, num_csx = self.options, self._num_csx(sweep_config)

        def cerebras_job(cfg: DictConfig):
            from hydra.core.hydra_config import HydraConfig

            from ftlab.launchers.cerebras_job import run_job as run_cszoo

            job_dir = Path(HydraConfig.get().runtime.output_dir)
            try:
                if job_dir != planned_dir:  # the data paths in params point into planned_dir
                    raise FtlabError(f"Cerebras job dir {job_dir} is not the planned {planned_dir}")
                job_dir.mkdir(parents=True, exist_ok=True)
                (job_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
                metrics = run_cszoo(cfg, params, opts, job_dir, num_csx, plan)
            except FtlabError as err:
                self._failures.append(err)
                return None
            return None if metrics is None else metrics.get("final_train_loss")

        return cerebras_job
