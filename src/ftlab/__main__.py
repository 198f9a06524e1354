"""``python -m ftlab +experiment=NAME [--multirun] [overrides]``: one run or a sweep."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from ftlab.core.console import configure_run_console
from ftlab.core.errors import FtlabError, report_error
from ftlab.core.signals import Interrupted, job_guard
from ftlab.core.writefail import write_failure
from ftlab.preflight.compose import config_dir, translate_hydra_error
from ftlab.preflight.launch import base_config, output_dir, preflight
from ftlab.preflight.store import register_configs
from ftlab.recipe.rundir import discard_if_empty
from ftlab.recipe.runlock import job_lock, lock_run_dir, release_run_dirs

# Hydra flags that take the next argument as their value.
_FLAGS_WITH_VALUE = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
                     "--experimental-rerun", "--package", "-p", "--info", "-i"}
# Flags that only inspect (no job runs): skip the preflight.
_INSPECT_FLAGS = {"--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i",
                  "--shell-completion", "-sc", "--resolve"}


_INFO_CHOICES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def split_argv(argv: list[str]) -> tuple[list[str], list[str], set[str], str]:
    """(overrides, flag tokens with their values, flag names, config name) of a Hydra command line."""
    overrides, tokens, flags, config_name = [], [], set(), "config"
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-"):
            overrides.append(arg)
            continue
        tokens.append(arg)
        flag, _, value = arg.partition("=")
        flags.add(flag)
        takes_value = flag in _FLAGS_WITH_VALUE and not value and i < len(argv)
        if flag in ("--info", "-i"):  # optional value
            takes_value = takes_value and argv[i] in _INFO_CHOICES
        if takes_value:
            value = argv[i]
            tokens.append(value)
            i += 1
        if flag in ("--config-name", "-cn"):
            config_name = value
    return overrides, tokens, flags, config_name


def die(err: FtlabError) -> None:
    sys.exit(report_error(err))


def discard_run_dir() -> None:
    """After a failed job: remove the run dir Hydra made if it holds nothing of value yet."""
    hc = HydraConfig.get()
    sweep = hc.sweep.dir if hc.mode == RunMode.MULTIRUN else None
    release_run_dirs()
    discard_if_empty(hc.runtime.output_dir, sweep)


@hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> float | None:
    from ftlab.recipe.run import run  # Lightning + transformers: loaded once a job runs, not for --help/--cfg

    hc = HydraConfig.get()
    configure_run_console(bool(hc.verbose))  # after Hydra's logging setup: once per line
    try:
        key = "hydra.sweep.dir" if hc.mode == RunMode.MULTIRUN else "hydra.run.dir"
        # SIGTERM/SIGINT: checkpoint at the step's end, then exit 128 + signal; the job's own dir
        # locked (a sweep's job, or a run dir only Hydra could resolve, e.g. a timestamp)
        with job_guard(), job_lock(hc.runtime.output_dir, key):
            return run(cfg)
    except Interrupted as err:
        release_run_dirs()
        print(f"ftlab: {err} (run dir {hc.runtime.output_dir})", file=sys.stderr)
        sys.exit(err.status)
    except (FtlabError, OmegaConfBaseException) as err:
        discard_run_dir()
        die(err if isinstance(err, FtlabError) else translate_hydra_error(err))
    except Exception as err:
        failure = write_failure(err)  # disk full, quota, read-only: one line naming the path
        if failure is None:
            raise
        discard_run_dir()
        die(failure)


def main(argv: list[str] | None = None) -> None:
    register_configs()
    argv = sys.argv[1:] if argv is None else argv
    overrides, flag_tokens, flags, config_name = split_argv(argv)
    if not flags & _INSPECT_FLAGS:
        multirun = bool(flags & {"--multirun", "-m"})
        try:
            cfgs = preflight(overrides, multirun=multirun, config_name=config_name)
            lock_output_dir(cfgs[0] if not multirun else base_config(overrides, config_name), multirun)
        except FtlabError as err:
            die(err)
    # Hydra's argparse takes overrides as one positional run: flags go first, so that
    # ``python -m ftlab +experiment=X --multirun k=v1,v2`` works as the README writes it.
    sys.argv = [sys.argv[0], *flag_tokens, *overrides]
    try:
        hydra_main()
    finally:
        release_run_dirs()


def lock_output_dir(base: DictConfig, multirun: bool) -> None:
    """Before Hydra writes anything: hold the lock of the run dir (the sweep dir of a --multirun)
    when the config names it; one named by a runtime interpolation is locked by its job."""
    key, out = output_dir(base, multirun)
    if out is not None:
        lock_run_dir(out, key)


if __name__ == "__main__":
    main()
