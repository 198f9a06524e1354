"""``hydra/launcher=fused``: the jobs of a sweep that share a frozen base train together.

Every job is composed as the basic launcher composes it; :func:`ftlab.plan.fused.launcher_plan`
puts the jobs that share the model, base, data and hardware settings into groups of up to
``group_size``, capped by the planner's K per device (null: K, or every job that can share where
the hardware names no memory), and each group runs in this process through
:func:`ftlab.fused.recipe.run_group` (one base in memory, one forward for all trials). A job that
cannot be fused runs exactly as under the basic launcher, after one line saying why.

Each job of a group gets the job dir, ``.hydra/`` files and ``JobReturn`` it would get alone; the
group runs inside the first member's Hydra job (its logging and ``HydraConfig``).
"""

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    _save_config,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict, read_write

log = logging.getLogger(__name__)

TARGET = "hydra_plugins.ftlab_fused_launcher.fused_launcher.FusedLauncher"


@dataclass
class FusedLauncherConf:
    _target_: str = TARGET
    #: trials per fused group; null = as many as the planner's K per device (every job that can
    #: share where the hardware names no memory); a larger value is clipped to K with one line
    #: (check with python -m ftlab.plan)
    group_size: int | None = None


ConfigStore.instance().store(group="hydra/launcher", name="fused", node=FusedLauncherConf, provider="ftlab")


def task_config(sweep_config: DictConfig) -> DictConfig:
    """The job's config without its ``hydra`` node, as Hydra's ``run_job`` hands it to the task."""
    cfg = copy.deepcopy(sweep_config)
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
    return cfg


class FusedLauncher(Launcher):
    def __init__(self, group_size: int | None = None) -> None:
        from ftlab.core.errors import ConfigError  # ftlab loads with its package, not at plugin discovery

        if group_size is not None and group_size < 2:
            raise ConfigError("hydra.launcher.group_size", group_size, "an integer >= 2, or null (every job that can share)")
        self.group_size = group_size
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from ftlab.launchers.sweep_jobs import sweep_job_config
        from ftlab.plan.fused import launcher_plan  # Lightning + transformers: only once jobs launch

        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        jobs = [(idx, list(overrides), sweep_job_config(self.hydra_context, self.config, overrides, idx))
                for idx, overrides in enumerate(job_overrides, start=initial_job_idx)]
        plan, notes = launcher_plan([task_config(j[2]) for j in jobs], self.group_size)
        for note in notes:
            log.info(note)
        log.info(f"Launching {len(jobs)} jobs: {len(plan.groups)} fused group(s), {len(plan.alone)} alone")
        runs: dict[int, JobReturn] = {}
        for members in plan.groups:
            log.info("\tfused: " + ", ".join(f"#{jobs[m][0]}" for m in members))
            runs.update(zip(members, self._group([jobs[m] for m in members])))
        for i, why in plan.alone.items():
            idx, overrides, sweep_config = jobs[i]
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))} (alone: {why})")
            runs[i] = run_job(hydra_context=self.hydra_context, task_function=self.task_function,
                              config=sweep_config, job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return [runs[i] for i in range(len(jobs))]

    def _group(self, members: list[tuple[int, list[str], DictConfig]]) -> list[JobReturn]:
        from ftlab.fused.recipe import run_group
        from ftlab.launchers.sweep_jobs import job_dir as job_dir_of

        dirs = [job_dir_of(sc) for _, _, sc in members]
        cfgs = [task_config(sc) for _, _, sc in members]
        results: list[Any] = []

        def group_task(_cfg: DictConfig) -> Any:
            jobs = [{"job_num": idx, "overrides": list(sc.hydra.overrides.task)} for idx, _, sc in members]
            results.extend(run_group(cfgs, dirs, jobs))
            if isinstance(results[0], BaseException):
                raise results[0]
            return results[0]

        lead = run_job(hydra_context=self.hydra_context, task_function=group_task, config=members[0][2],
                       job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        out = [lead]
        for (_, overrides, sweep_config), cfg, job_dir, result in zip(members[1:], cfgs[1:], dirs[1:], results[1:]):
            if sweep_config.hydra.output_subdir is not None:
                hydra_dir = job_dir / str(sweep_config.hydra.output_subdir)
                _save_config(cfg, "config.yaml", hydra_dir)
                _save_config(sweep_config.hydra, "hydra.yaml", hydra_dir)
                _save_config(sweep_config.hydra.overrides.task, "overrides.yaml", hydra_dir)
            failed = isinstance(result, BaseException)
            out.append(JobReturn(overrides=overrides, cfg=cfg, hydra_cfg=sweep_config, working_dir=str(job_dir),
                                 task_name=str(sweep_config.hydra.job.name),
                                 status=JobStatus.FAILED if failed else JobStatus.COMPLETED, _return_value=result))
        if len(results) < len(members):  # the group failed before its trials ran: every member failed with it
            err = lead._return_value if lead.status == JobStatus.FAILED else RuntimeError("fused group did not run")
            for r in out[1:]:
                r.status, r._return_value = JobStatus.FAILED, err
        return out
