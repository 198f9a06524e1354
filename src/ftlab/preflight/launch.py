"""Launcher checks that ``python -m ftlab`` runs after every job's config validated and before
Hydra launches anything: a sweep that cannot run where it is sent fails in seconds, with one line.

The launcher's config is read from the sweep's *base* config (the command's overrides without
the swept ones), because that is the one Hydra instantiates the launcher from: e.g. submitit
resolves ``tasks_per_node: ${hardware.devices}`` once, against the base config's hardware.
"""

from __future__ import annotations

from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, OmegaConf

from ftlab.adapters.registry import get_adapter
from ftlab.core.errors import ConfigError
from ftlab.data.checks import check_data
from ftlab.data.tasks import checked_rows, harness_task
from ftlab.hardware import get_target
from ftlab.harness.benchmark_checks import check_evaluation
from ftlab.launchers.cerebras_job import check_executable
from ftlab.launchers.cerebras_options import CEREBRAS_TARGET, CerebrasOptions
from ftlab.launchers.cerebras_params import check_supported
from ftlab.launchers.slurm import check_cluster, check_resources, is_slurm_launcher
from ftlab.preflight.compose import checked, compose_config, compose_run, expand_sweep, translate_hydra_error
from ftlab.preflight.environment import check_hardware, check_logger, check_writable
from ftlab.preflight.fsdp_rules import check_fsdp_config
from ftlab.preflight.model_checks import check_model_dir


def base_overrides(overrides: list[str]) -> list[str]:
    """The overrides Hydra composes a multirun's base config from (sweeps dropped)."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException as err:
        raise translate_hydra_error(err) from err
    return [o.input_line for o in parsed if not o.is_sweep_override()]


def base_config(overrides: list[str], config_name: str = "config") -> DictConfig:
    return compose_config(base_overrides(overrides), with_hydra=True, config_name=config_name)


def cerebras_options(launcher: Any) -> CerebrasOptions:
    plain = OmegaConf.to_container(launcher, resolve=True)
    plain.pop("_target_", None)
    return CerebrasOptions(**plain)


def _local_job_checks(cfgs: list[DictConfig], multirun: bool, launcher_name: str) -> None:
    for i, cfg in enumerate(cfgs):
        h = cfg.hardware
        target = get_target(h.accelerator)
        if not target.in_process and not (multirun and launcher_name == target.launcher):
            how = f"with hydra/launcher={launcher_name}" if multirun else "for a single run"
            raise ConfigError("hardware", h.name, f"a local hardware option {how}; {target.label or target.name} "
                              f"jobs run through --multirun hydra/launcher={target.launcher}")
        if multirun and h.devices * h.num_nodes > 1:
            # Lightning's DDP re-executes the command line per rank; under a local multirun that
            # would re-launch the whole sweep.
            raise ConfigError("hardware.devices", h.devices,
                              f"1 in a --multirun with hydra/launcher={launcher_name} (job #{i}): run multi-process "
                              "jobs as single runs, or sweep them with hydra/launcher=slurm")


def check_launch(overrides: list[str], cfgs: list[DictConfig], *, multirun: bool,
                 config_name: str = "config", base: DictConfig | None = None) -> None:
    """Raise :class:`ftlab.core.errors.FtlabError` if the jobs cannot run where they are sent
    (``base``: the sweep's base config with its ``hydra`` node, when the caller has composed it)."""
    if not multirun:
        _local_job_checks(cfgs, multirun=False, launcher_name="basic")
        return
    base = base_config(overrides, config_name) if base is None else base
    launcher = base.hydra.launcher
    target = OmegaConf.select(launcher, "_target_", default="")
    if is_slurm_launcher(launcher):
        for i, cfg in enumerate(cfgs):
            check_resources(launcher, cfg.hardware, where=f"job #{i}")
        check_cluster(launcher.partition)
    elif target == CEREBRAS_TARGET:

        opts = cerebras_options(launcher)
        for cfg in cfgs:
            check_supported(cfg, opts)
        if not opts.dry_run:
            check_executable(opts)
    else:
        name = OmegaConf.select(base, "hydra.runtime.choices", default={}).get("hydra/launcher", target)
        _local_job_checks(cfgs, multirun=True, launcher_name=name)


def runs_here(base: DictConfig, multirun: bool) -> bool:
    """Whether the jobs run on this machine (a single run or a local sweep), not on a cluster."""
    if not multirun:
        return True
    launcher = OmegaConf.select(base, "hydra.launcher", default=None)
    target = OmegaConf.select(launcher, "_target_", default="") if launcher is not None else ""
    return not is_slurm_launcher(launcher) and target != CEREBRAS_TARGET


def output_dir(base: DictConfig, multirun: bool) -> tuple[str, str | None]:
    """``(key, dir)`` Hydra will create: ``hydra.sweep.dir`` of a sweep, else ``hydra.run.dir``."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    try:
        value = OmegaConf.select(base, key, throw_on_resolution_failure=True)
    except Exception:  # noqa: BLE001 - interpolations only Hydra's runtime can resolve: checked by Hydra
        value = None
    return key, None if value is None else str(value)


def check_jobs(cfgs: list[DictConfig], base: DictConfig, *, multirun: bool) -> None:
    """What each job needs before Hydra creates anything: a writable output dir, data that gives at
    least one optimiser step, logger credentials, and (where the jobs run here) the hardware.
    ``base``: the command's config with its ``hydra`` node (a sweep's base config)."""

    key, out = output_dir(base, multirun)
    if out is not None:
        check_writable(key, out, "the run's outputs")
    local = runs_here(base, multirun)
    seen_hw: set[str] = set()
    for cfg in cfgs:
        check_model_dir(cfg.model)
        check_logger(cfg)
        check_data(cfg, trains=get_adapter(cfg.adapter.name).trains)
        check_side_files(cfg)
        check_fsdp_config(cfg)  # adapters/bases the sharded path does not train, wherever the job runs
        check_evaluation(cfg)
        hw = OmegaConf.to_yaml(cfg.hardware) + OmegaConf.to_yaml(cfg.train)
        if local and hw not in seen_hw:
            check_hardware(cfg)
            seen_hw.add(hw)


def check_side_files(cfg: DictConfig) -> None:
    """Files a run reads only after training (the few-shot pool of a harness task) are opened and
    every row validated now: a broken one would otherwise end the run after the training."""
    t = cfg.task
    if harness_task(t.name) is None or not cfg.eval.enabled:
        return
    from ftlab.harness.data import fewshot_path  # loads datasets (~2 s): harness tasks only

    path = fewshot_path(t)
    if path is not None:  # the few-shot pool is read whenever it is set
        checked_rows(t.name, path)


def preflight(overrides: list[str], *, multirun: bool, config_name: str = "config") -> list[DictConfig]:
    """Compose and validate every job, then check what each needs from its files and this machine;
    nothing is launched (and no run dir created) if any job is invalid.

    A single run is composed once, with its ``hydra`` node (output dir, launcher): the preflight of
    a bad value that needs no file costs one composition plus the checks.
    """
    if multirun:
        base = base_config(list(overrides), config_name)
        cfgs = [compose_run(job, config_name) for job in expand_sweep(overrides, config_name, base=base)]
    else:
        base = checked(compose_config(list(overrides), with_hydra=True, config_name=config_name))
        cfgs = [base]
    check_launch(list(overrides), cfgs, multirun=multirun, config_name=config_name, base=base)
    check_jobs(cfgs, base, multirun=multirun)  # what each job needs: output dir, data, ...
    return cfgs
