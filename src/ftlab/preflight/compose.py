"""Compose run configs outside ``@hydra.main``: composition, validation, sweep expansion.

``python -m ftlab`` composes and validates every job of a sweep *before* Hydra launches any of
them (:func:`ftlab.preflight.launch.preflight`), so a bad value in the third job of a sweep fails
the whole command up front with one line. The planner uses the same expansion to list a sweep's
jobs without running them.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from ftlab.core.errors import ConfigError, FtlabError, UnknownKeyError
from ftlab.preflight.store import register_configs
from ftlab.preflight.validate import validate_config


def config_dir() -> Path:
    """``$FTLAB_CONFIG_DIR`` or the repository's ``conf/`` (src layout, editable install)."""
    env = os.environ.get("FTLAB_CONFIG_DIR")
    if env:
        return Path(env).resolve()
    return (Path(__file__).resolve().parents[3] / "conf").resolve()


def _allowed_keys(err: OmegaConfBaseException) -> str:
    cls = getattr(err, "object_type", None)
    fields = getattr(cls, "__dataclass_fields__", None)
    if fields:
        return ", ".join(sorted(fields))
    parent = getattr(err, "parent_node", None)  # a free-form dict (model.config, task.options)
    keys = ", ".join(sorted(str(k) for k in parent)) if OmegaConf.is_dict(parent) else "the keys of this config node"
    key = getattr(err, "full_key", None)
    return f"{keys}; add a new key with +{key}=VALUE" if key else keys


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def translate_hydra_error(err: Exception) -> FtlabError:
    """Turn Hydra/OmegaConf composition errors into one :class:`ConfigError` line."""
    if isinstance(err, MissingConfigException) and err.missing_cfg_file:
        group, _, option = err.missing_cfg_file.rpartition("/")
        options = sorted(o for o in (err.options or []) if not o.startswith("_schema"))
        if group:
            return ConfigError(group.replace("/", "."), option, f"one of {options}")
        return ConfigError("config", err.missing_cfg_file, "an existing config")
    cause = err
    while cause.__cause__ is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
        key = cause.full_key or str(getattr(cause, "key", "?"))
        node = getattr(getattr(cause, "object_type", None), "__name__", "this config node")
        return UnknownKeyError(key, node, _allowed_keys(cause))
    if isinstance(cause, ValidationError):
        key = cause.full_key or str(getattr(cause, "key", "?"))
        return ConfigError(key, getattr(cause, "value", None), _first_line(cause.msg or str(cause)))
    if isinstance(cause, OmegaConfBaseException):
        key = getattr(cause, "full_key", None) or "config"
        return ConfigError(key, getattr(cause, "value", None), _first_line(str(cause)))
    if isinstance(err, OverrideParseException):
        return FtlabError(f"bad override: {_first_line(str(err))}")
    return FtlabError(_first_line(str(err)))


def compose_config(overrides: list[str], *, with_hydra: bool = False, config_name: str = "config") -> DictConfig:
    """Compose one job's config; raises :class:`FtlabError` with a one-line message."""
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=with_hydra)
    except (ConfigCompositionException, OverrideParseException, OmegaConfBaseException) as err:
        raise translate_hydra_error(err) from err
    finally:
        GlobalHydra.instance().clear()
    return cfg


def sweep_params(overrides: list[str], config_name: str = "config", cfg: DictConfig | None = None) -> list[str]:
    """``hydra.sweeper.params`` of the composed config as override strings (what BasicSweeper adds);
    ``cfg``: that config when the caller has composed it (with its ``hydra`` node) already."""
    if cfg is None:
        cfg = compose_config(overrides, with_hydra=True, config_name=config_name)
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    return [f"{k}={v}" for k, v in params.items()]


def expand_sweep(overrides: list[str], config_name: str = "config", base: DictConfig | None = None) -> list[list[str]]:
    """The override lists of every job of ``--multirun overrides`` (Hydra's basic sweeper order);
    ``base``: the sweep's base config, if composed already (saves a composition)."""
    # Sweep values of the composed config's hydra.sweeper.params come first, CLI after (Hydra's order).
    plain = [o for o in overrides if "," not in o.partition("=")[2]]
    args = sweep_params(plain, config_name, cfg=base) + list(overrides)
    try:
        parsed = OverridesParser.create().parse_overrides(args)
        (batch,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    except (OverrideParseException, ConfigCompositionException) as err:
        raise translate_hydra_error(err) from err
    return batch


def checked(cfg: DictConfig) -> DictConfig:
    """``cfg`` after :func:`validate_config` (OmegaConf errors of the values it reads, one line)."""
    try:
        validate_config(cfg)
    except OmegaConfBaseException as err:  # a value only the checks read (e.g. a missing stage lr)
        raise translate_hydra_error(err) from err
    return cfg


def compose_run(overrides: list[str], config_name: str = "config") -> DictConfig:
    """Compose and validate one run (no ``hydra`` node)."""
    return checked(compose_config(overrides, config_name=config_name))
