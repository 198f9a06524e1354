"""``python -m ftlab +experiment=NAME [--multirun] [overrides]``: one run or a sweep."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from ftlab.config.compose import config_dir, preflight
from ftlab.config.store import register_configs
from ftlab.errors import FtlabError, report_error

# Hydra flags that take the next argument as their value.
_FLAGS_WITH_VALUE = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
                     "--experimental-rerun", "--package", "-p", "--info", "-i"}
# Flags that only inspect (no job runs): skip the preflight.
_INSPECT_FLAGS = {"--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i",
                  "--shell-completion", "-sc", "--resolve"}


def split_argv(argv: list[str]) -> tuple[list[str], set[str], str]:
    """(overrides, flags, config name) of a Hydra command line."""
    overrides, flags, config_name = [], set(), "config"
    it = iter(argv)
    for arg in it:
        if arg.startswith("-"):
            flag, _, value = arg.partition("=")
            flags.add(flag)
            if flag in _FLAGS_WITH_VALUE and not value and flag not in ("--info", "-i"):
                value = next(it, "")
            if flag in ("--config-name", "-cn"):
                config_name = value
        else:
            overrides.append(arg)
    return overrides, flags, config_name


def die(err: FtlabError) -> None:
    sys.exit(report_error(err))


@hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> float | None:
    from ftlab.run import run

    try:
        return run(cfg)
    except FtlabError as err:
        die(err)


def main(argv: list[str] | None = None) -> None:
    register_configs()
    argv = sys.argv[1:] if argv is None else argv
    overrides, flags, config_name = split_argv(argv)
    if not flags & _INSPECT_FLAGS:
        try:
            preflight(overrides, multirun=bool(flags & {"--multirun", "-m"}), config_name=config_name)
        except FtlabError as err:
            die(err)
    hydra_main()


if __name__ == "__main__":
    main()
