"""Build the Lightning Trainer from the ``hardware``, ``train`` and ``logger`` groups."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ProgressBar

from ftlab.core.errors import ConfigError
from ftlab.hardware import shards_parameters
from ftlab.training.fsdp import fsdp_strategy
from ftlab.training.loggers import get_logger
from ftlab.training.progress import StepProgressBar


def build_logger(cfg: Any, run_dir: Path):
    """The Lightning logger ``logger.name``'s spec builds (:mod:`ftlab.training.loggers`)."""
    return get_logger(cfg.logger.name).build(cfg, run_dir)


def strategy(cfg: Any, model: Any = None) -> Any:
    """Lightning's strategy name, or for a strategy the hardware target shards parameters with
    (its spec's ``sharding_strategies``: ``fsdp``) ftlab's FSDP strategy wrapping ``model``'s
    decoder blocks (:mod:`ftlab.training.fsdp`)."""
    h = cfg.hardware
    if shards_parameters(h):
        return fsdp_strategy(cfg, model)
    if h.strategy != "auto":
        return h.strategy
    if h.devices * h.num_nodes > 1:
        return "ddp"
    return "auto"


def build_trainer(cfg: Any, *, max_steps: int, callbacks: list, logger=False, run_dir: Path | None = None,
                  validate: bool = True, accumulate: int | None = None, progress_label: str = "train",
                  model: Any = None, epochs: int | None = None) -> L.Trainer:
    """The Trainer of one fit; its progress bar is ftlab's step bar (``ftlab.training.progress``).
    ``model``: the module the fit trains, which ``hardware.strategy=fsdp`` reads its wrap units from.
    ``epochs``: the run's ``train.max_epochs`` (the bar shows epoch k/n)."""
    h = cfg.hardware
    if not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks = [*callbacks, StepProgressBar(progress_label, epochs=epochs)]
    try:
        return _trainer(cfg, max_steps=max_steps, callbacks=callbacks, logger=logger, run_dir=run_dir,
                        validate=validate, accumulate=accumulate, model=model)
    except (MisconfigurationException, ValueError, ImportError) as err:  # Lightning's refusals of h
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError("hardware", f"{h.name} (accelerator={h.accelerator}, devices={h.devices}, "
                          f"strategy={h.strategy if shards_parameters(h) else strategy(cfg)}, precision={h.precision})",
                          f"settings Lightning accepts on this machine: {first[:200]}") from err


def _trainer(cfg: Any, *, max_steps: int, callbacks: list, logger, run_dir: Path | None, validate: bool,
             accumulate: int | None, model: Any) -> L.Trainer:
    h, t = cfg.hardware, cfg.train
    return L.Trainer(
        accelerator=h.accelerator,
        devices=h.devices,
        num_nodes=h.num_nodes,
        strategy=strategy(cfg, model),
        precision=h.precision,
        max_steps=max_steps,
        max_epochs=-1,
        accumulate_grad_batches=t.accumulate_grad_batches if accumulate is None else accumulate,
        gradient_clip_val=t.gradient_clip_val,
        deterministic=t.deterministic,
        callbacks=callbacks,
        logger=logger,
        log_every_n_steps=t.log_every_n_steps,
        enable_checkpointing=False,  # ftlab's PeriodicCheckpoint writes the checkpoint dirs
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if validate else 0,
        # eval.every_n_steps: validate every N training batches across epochs (Lightning counts batches)
        val_check_interval=cfg.eval.get("every_n_steps") or 1.0,
        check_val_every_n_epoch=None if cfg.eval.get("every_n_steps") else 1,
        default_root_dir=str(run_dir) if run_dir else None,
        use_distributed_sampler=False,  # ResumableSampler shards by rank itself
    )
