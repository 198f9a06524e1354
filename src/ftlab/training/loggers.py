"""Logger registry: ``logger=NAME`` -> its :class:`LoggerSpec` (Lightning's own loggers).

Why a registry: the trainer builds whatever logger the spec builds and the composition checks
run the spec's own checks, so adding a logger (MLflow, TensorBoard, ...) is one ``register_logger``
call (or an ``ftlab.loggers`` entry point) plus ``conf/logger/NAME.yaml``, with no if/elif to extend.
Lightning is imported when a logger is built, not here: composition checks read this module and
must stay free of Lightning's import time.
"""

from __future__ import annotations

import importlib.util
import netrc
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from omegaconf import OmegaConf

from ftlab.core.errors import fail
from ftlab.core.plugins import Registry

WANDB_MODES = ("offline", "online", "disabled")
#: where wandb looks for its key: the env var, then ``~/.netrc`` (or ``$NETRC``) for its host
WANDB_DEFAULT_HOST = "https://api.wandb.ai"


@dataclass(frozen=True)
class LoggerSpec:
    name: str
    #: build(run_cfg, run_dir) -> a Lightning logger
    build: Callable[[Any, Path], Any]
    #: validate(logger_cfg) raises ConfigError: checks of its own keys
    validate: Callable[[Any], None] | None = None
    #: finish() on rank 0 after the fit: what the logger's library must close (wandb's run)
    finish: Callable[[], None] | None = None
    #: local_store(logger_cfg) -> (key, directory, what) of a store outside the run dir the logger
    #: writes to, or None: the launch preflight checks that this machine can write it
    local_store: Callable[[Any], tuple[str, str, str] | None] | None = None
    #: check_machine(logger_cfg) raises ConfigError: what else the logger needs from the machine a
    #: run starts on (credentials of an online service), checked by the launch preflight
    check_machine: Callable[[Any], None] | None = None


_LOGGERS: Registry[LoggerSpec] = Registry("logger", "logger.name", LoggerSpec, "ftlab.loggers")


register_logger = _LOGGERS.register
all_loggers = _LOGGERS.all
#: the spec of ``logger.name``; one line naming the registered loggers otherwise
get_logger = _LOGGERS.get


def _csv(cfg: Any, run_dir: Path):
    from lightning.pytorch.loggers import CSVLogger  # Lightning (heavy): only when a run builds its logger

    return CSVLogger(save_dir=str(run_dir), name="lightning_logs", version="")


def _wandb(cfg: Any, run_dir: Path):
    from lightning.pytorch.loggers import WandbLogger  # Lightning (heavy): only when a run builds its logger

    os.environ["WANDB_MODE"] = cfg.logger.mode
    os.environ.setdefault("WANDB_SILENT", "true")
    return WandbLogger(project=cfg.logger.project, entity=cfg.logger.entity, save_dir=str(run_dir),
                       name=cfg.name, tags=list(cfg.logger.tags), offline=cfg.logger.mode == "offline")


def _check_wandb(logger_cfg: Any) -> None:
    if logger_cfg.mode not in WANDB_MODES:
        fail("logger.mode", logger_cfg.mode, f"one of {list(WANDB_MODES)}")


def wandb_key_source(env: dict[str, str] | None = None) -> str | None:
    """Where wandb would find an API key (``None``: nowhere), without importing wandb."""
    env = dict(os.environ) if env is None else env
    if env.get("WANDB_API_KEY"):
        return "WANDB_API_KEY"
    host = urlparse(env.get("WANDB_BASE_URL") or WANDB_DEFAULT_HOST).hostname
    rc = Path(env.get("NETRC") or Path.home() / ".netrc")
    try:
        if rc.is_file() and netrc.netrc(str(rc)).authenticators(host):
            return str(rc)
    except (netrc.NetrcParseError, OSError):
        return None
    return None


def _wandb_key(logger_cfg: Any) -> None:
    if logger_cfg.mode == "online" and wandb_key_source() is None:
        fail("logger.mode", "online", "'offline' or 'disabled' here: wandb online needs an API key (set "
             "WANDB_API_KEY or run `wandb login`, which writes ~/.netrc)")


def _tensorboard(cfg: Any, run_dir: Path):
    from lightning.pytorch.loggers import (
        TensorBoardLogger,  # Lightning (heavy): only when a run builds its logger
    )

    # event files under <run_dir>/tensorboard/ (tensorboardX writes them; no TensorFlow needed)
    return TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False)


def mlflow_uri(cfg: Any, run_dir: Path) -> str:
    """``logger.tracking_uri``, else a file store under the run dir: nothing leaves the machine
    unless a server is named."""
    return cfg.logger.tracking_uri or (Path(run_dir) / "mlruns").resolve().as_uri()


def _mlflow(cfg: Any, run_dir: Path):
    from lightning.pytorch.loggers import MLFlowLogger  # Lightning (heavy): only when a run builds its logger

    uri = mlflow_uri(cfg, run_dir)
    if uri.startswith("file:"):
        # MLflow 3 refuses its file store unless asked for it (it wants a database); a run dir
        # holding its own tracking files is what the local default is for
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    logger = MLFlowLogger(experiment_name=cfg.logger.experiment or cfg.name,
                          run_name=cfg.logger.run_name or Path(run_dir).name, tracking_uri=uri)
    # the resolved config as the run's params (Lightning flattens nested keys as adapter/r)
    logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return logger


def _mlflow_store(logger_cfg: Any) -> tuple[str, str, str] | None:
    """A ``file:`` tracking URI is a local store, created on first write (a server is not checked)."""
    uri = logger_cfg.get("tracking_uri")
    if uri and str(uri).startswith("file:"):
        return "logger.tracking_uri", url2pathname(urlparse(str(uri)).path), "MLflow's file store"
    return None


def _check_mlflow(logger_cfg: Any) -> None:
    if importlib.util.find_spec("mlflow") is None:
        fail("logger", "mlflow", "a logger whose library is installed: pip install 'ftlab[mlflow]' (mlflow-skinny)")


register_logger(LoggerSpec("csv", _csv))
register_logger(LoggerSpec("tensorboard", _tensorboard))
def _finish_wandb() -> None:
    import wandb  # optional dependency: logger=wandb only

    wandb.finish()


register_logger(LoggerSpec("wandb", _wandb, _check_wandb, finish=_finish_wandb, check_machine=_wandb_key))
register_logger(LoggerSpec("mlflow", _mlflow, _check_mlflow, local_store=_mlflow_store))
