"""A fused group, top to bottom: ``ftlab.recipe.run``'s phases, once for the shared part and once per trial.

    shared   plan, tokenizer + base model (model/base steps, cached as in a solo run)  once
    trial    resume check, config.yaml + seeds, data, control, adapter (its family)    per trial, in order
    fused    fused layers over the base, one thread per trial running the solo fit    together
    outputs  the trial's evaluation, export, metrics.json (ftlab.recipe.run.outputs)           per trial, on leaving

Each trial thread calls :func:`ftlab.recipe.run.fit` with its own config, run dir, callbacks and trainer;
only its LightningModule differs (:class:`~ftlab.fused.module.FusedTrialModule`). A trial that
ends (its steps done, diverged, failed) leaves the fused step at once and writes its outputs
while the others train on. Each trial's data comes from its own runner as in a solo run: for
``task=instruct`` the cached tokenized-data step (``ftlab.data.tokenized``), which trials of one
seed share (the first builds it, the others read the memory-mapped arrays); other tasks tokenise
their (seeded) split in memory.
"""

from __future__ import annotations

import copy
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ftlab.core.errors import ConfigError
from ftlab.data.checks import check_train_batches
from ftlab.data.datamodule import TaskDataModule
from ftlab.fused.build import TrialAdapter, adapt_trial, install
from ftlab.fused.coordinator import FusedStep
from ftlab.fused.module import FusedTrialModule
from ftlab.launchers.slurm import resume_setting
from ftlab.models.memory import prepare_for_training, upcast_trainable_
from ftlab.models.noise import base_noise, describe
from ftlab.recipe.run import (
    control_metrics,
    fit,
    outputs,
    prepare_data,
    prepare_model,
    summary_line,
    write_config_and_seed,
)
from ftlab.reuse.records import write_record
from ftlab.reuse.runner import StepRunner
from ftlab.training.foundation import foundation
from ftlab.training.resume import resume_checkpoint

log = logging.getLogger("ftlab")


@dataclass
class Trial:
    cfg: DictConfig
    run_dir: Path
    runner: StepRunner
    ckpt: Path | None
    dm: TaskDataModule
    control: dict[str, Any]
    adapter: TrialAdapter
    rng: torch.Tensor


def trainer_config(cfg: DictConfig) -> DictConfig:
    """The trial's config for its Trainer: no automatic clipping (the module clips, see
    :mod:`ftlab.fused.module`)."""
    out = copy.deepcopy(cfg)
    OmegaConf.update(out, "train.gradient_clip_val", None, force_add=True)
    return out


def prepare_trial(cfg: DictConfig, run_dir: Path, shared: torch.nn.Module, tokenizer,
                  runner: StepRunner | None = None) -> Trial:
    """A solo run's phases up to its adapter, in its order, on the group's base. ``runner``: the
    trial's, when the group made it already (the lead's prepared the shared base)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    runner = runner or StepRunner(cfg)
    ckpt = resume_checkpoint(resume_setting(cfg.resume), run_dir, foundation(runner.steps))
    write_config_and_seed(cfg, run_dir)
    dm = prepare_data(cfg, tokenizer, runner)  # task=instruct: the cached data step, as in a solo run
    control = control_metrics(cfg, shared, tokenizer, dm)
    adapter = adapt_trial(shared, cfg.adapter, cfg)
    upcast_trainable_(adapter.adapted.model)
    check_train_batches(cfg, len(dm.train_data))
    return Trial(cfg, run_dir, runner, ckpt, dm, control, adapter, torch.get_rng_state())


def run_group(cfgs: list[DictConfig], run_dirs: list[Path], jobs: list[dict[str, Any]] | None = None) -> list[Any]:
    """Train the group; per trial its task metric (as :func:`ftlab.recipe.run.run` returns it) or the
    exception that ended it. ``jobs``: per trial its Hydra ``job_num`` and ``overrides`` for its
    ``reuse_record.json`` (the group runs inside one Hydra job, whose identity is the first's)."""
    lead = cfgs[0]
    runners = [StepRunner(cfg) for cfg in cfgs]  # each trial's plan, computed once
    tokenizer, shared = prepare_model(lead, runners[0])
    check_no_base_noise(shared)
    shared = prepare_for_training(shared, lead)
    trials = [prepare_trial(cfg, Path(d), shared, tokenizer, runner)
              for cfg, d, runner in zip(cfgs, run_dirs, runners)]
    state = install(shared, [t.adapter for t in trials])
    state.rng = [t.rng for t in trials]
    shared.train()
    fused = FusedStep(shared, state, [t.adapter for t in trials], tokenizer.pad_token_id)
    results: list[Any] = [None] * len(trials)
    export_lock = threading.Lock()  # one merged copy of the base at a time

    def train(k: int) -> None:
        t = trials[k]
        try:
            module = FusedTrialModule(t.adapter.adapted, t.cfg, fused, k, train_items=len(t.dm.train_items))
            try:
                facts = fit(trainer_config(t.cfg), t.adapter.adapted, t.dm, t.run_dir, runner=t.runner,
                            ckpt=t.ckpt, module=module)
            finally:
                fused.leave(k)
            write_record(t.run_dir, {**t.runner.record(), **(jobs[k] if jobs else {})})
            with export_lock:
                metrics = outputs(t.cfg, exportable(t), tokenizer, t.dm, t.run_dir, t.control, facts)
            key = next((m for m in ("eval_exact_match", "eval_accuracy") if m in metrics), "val_loss")
            log.info("trial %d: %s", k, summary_line(metrics, key, t.run_dir))
            results[k] = metrics.get(key)
        except Exception as err:  # noqa: BLE001 - this trial failed; the group goes on, the launcher reports it
            log.error("trial %d (%s) failed: %s", k, t.run_dir, err)
            results[k] = err

    threads = [threading.Thread(target=train, args=(k,), name=f"fused-trial-{k}") for k in range(len(trials))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    fused.close()
    log.info("fused group of %d trials: %d fused steps", len(trials), fused.steps)
    return results


def check_no_base_noise(shared: torch.nn.Module) -> None:
    """One line, before any trial is prepared, if the shared base draws noise of its own in
    training (the launcher runs such jobs alone; this guards every other caller)."""
    noise = base_noise(shared)
    if noise:
        raise ConfigError("model.config", describe(noise), "0 for fused trials: one forward of the shared base "
                          "over every trial's rows cannot give each trial the draws of its solo run")


def exportable(trial: Trial):
    """The trial's adapted model for :func:`ftlab.recipe.run.outputs`: a merged export folds the update
    into the base's weights in place, so it gets its own copy of the view (the others train on)."""
    adapted = trial.adapter.adapted
    if trial.cfg.train.save_merged_model:
        return copy.deepcopy(adapted)
    return adapted
