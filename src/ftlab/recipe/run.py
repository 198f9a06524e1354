"""The recipe: one run, top to bottom, in the shape docs/architecture.md describes

    config -> plan of steps -> steps executed or fetched -> outputs

    plan     StepRunner(cfg): model -> base -> mask -> train root -> stage 1..n, each with its key
             and whether it is cached here (ftlab/reuse/steps.py), computed once
    model    tokenizer + base model; base pre-training is a cached step       prepare_model
    mask     optional pruned base W <- W * M, a cached step                   ftlab.sparsity.sparse_base
    data     the task's splits                                                prepare_data
    adapter  the adapter family over the base (ftlab/adapters)                adapt
    train    Lightning module + callbacks; stage prefixes cached              fit
    outputs  the adapter's final model, evaluation, export, metrics.json     outputs

DDP: :func:`rank_zero` is the one rule (every rank trains; rank 0 writes, evaluates, exports).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from ftlab.adapters.base import AdaptedModel
from ftlab.adapters.inits import init_spec
from ftlab.adapters.registry import get_adapter
from ftlab.callbacks import LossLog, PeriodicCheckpoint, TrainingHistory
from ftlab.callbacks.best_state import BestState
from ftlab.callbacks.eval_log import EvalLog
from ftlab.callbacks.history import empty_history, fill_final_val_loss
from ftlab.callbacks.sparsity_log import gated_callbacks
from ftlab.callbacks.stop_on_signal import StopOnSignal
from ftlab.core.io import write_json
from ftlab.core.signals import Interrupted
from ftlab.data.checks import check_train_batches, data_facts
from ftlab.data.datamodule import TaskDataModule
from ftlab.data.packing import padding_fraction
from ftlab.evaluation.metrics import final_evaluate, training_scorer
from ftlab.launchers.slurm import resume_setting
from ftlab.models import build_model, build_tokenizer
from ftlab.models.attention import resolve_attention
from ftlab.models.memory import prepare_for_training, upcast_trainable_
from ftlab.preflight.fsdp_rules import check_fsdp
from ftlab.reuse.cached import cached_base_model, cached_init_fn, cached_mask_fn
from ftlab.reuse.records import write_record
from ftlab.reuse.runner import StepRunner
from ftlab.reuse.stages import StageRun
from ftlab.sparsity.calibration import calibration_batches
from ftlab.sparsity.compute import compute_pruned
from ftlab.sparsity.pipeline import SparseBase, sparse_base
from ftlab.training.base_model import pretrain_base
from ftlab.training.foundation import foundation
from ftlab.training.fsdp import ShardedStrategy
from ftlab.training.loggers import get_logger
from ftlab.training.module import FtlabModule
from ftlab.training.packing_check import check_packing
from ftlab.training.progress import header, peak_memory_mb
from ftlab.training.resume import note_rebuilt_base, resume_checkpoint
from ftlab.training.state import check_resumable, checkpoint_step, read_meta
from ftlab.training.trainer import build_logger, build_trainer

log = logging.getLogger("ftlab")


def run(cfg: DictConfig, run_dir: Path | None = None, extra_callbacks: list | None = None) -> float | None:
    """Train (unless the adapter is an eval-only control), evaluate, export; returns the task metric."""
    check_fsdp(cfg)  # what the sharded path does not train: one line, before anything is built
    run_dir = Path(run_dir) if run_dir is not None else run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    runner = StepRunner(cfg)  # the plan of steps (computed once) and the runner of its cached steps
    # checked before anything is written or built: a refused checkpoint leaves the run dir as it was
    ckpt = resume_checkpoint(resume_setting(cfg.resume), run_dir, foundation(runner.steps))
    write_config_and_seed(cfg, run_dir)

    tokenizer, model = prepare_model(cfg, runner)  # model step (+ the cached base pre-training)
    if cfg.train.packing:  # one line before training if this architecture cannot pack exactly
        check_packing(model, cfg.task.max_length)
    # mask step, cached: W <- W * M (a dense run has none and never enters ftlab.sparsity)
    sparse = (sparse_base(cfg, model, tokenizer, cached_mask_fn(compute_pruned, runner=runner))
              if runner.steps.mask is not None else None)
    dm = prepare_data(cfg, tokenizer, runner)
    control = control_metrics(cfg, model, tokenizer, dm)  # eval.control: the base before tuning
    adapted = adapt(cfg, model, dm, sparse, runner)
    if adapted.trains:
        facts = fit(cfg, adapted, dm, run_dir, extra_callbacks, runner=runner, ckpt=ckpt)
    else:
        facts = skip_training(run_dir, adapted)
    if not rank_zero():
        return None  # DDP: rank 0 evaluates and writes the outputs
    leave_process_group()  # rank 0 evaluates alone: its metrics must not sync
    write_record(run_dir, runner.record())  # aggregated into the sweep's stage_log.csv / reuse_summary.json

    metrics = outputs(cfg, adapted, tokenizer, dm, run_dir, control, facts)
    key = next((k for k in ("eval_exact_match", "eval_accuracy") if k in metrics), "val_loss")
    log.info("%s", summary_line(metrics, key, run_dir))
    return metrics.get(key)


def rank_zero() -> bool:
    """The one DDP rule of the recipe: Lightning's launcher runs this recipe once per rank (the
    rank comes from the launcher's environment before the trainer exists); every rank trains, rank
    0 alone writes the run's files, logs the header, evaluates and exports. Callbacks that write
    files during the fit guard themselves with the trainer's ``is_global_zero``."""
    return rank_zero_only.rank == 0


def run_dir_of(cfg: DictConfig) -> Path:
    """Hydra's job output dir (``experiments/<name>/<ts>`` or the sweep's job dir)."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path("experiments") / cfg.name / time.strftime("%Y-%m-%d_%H-%M-%S")


def write_config_and_seed(cfg: DictConfig, run_dir: Path) -> None:
    """``config.yaml`` (rank 0), the seeds of every RNG, deterministic kernels when asked."""
    if rank_zero():
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def prepare_model(cfg: DictConfig, runner: StepRunner | None = None):
    """Tokenizer and base model, pre-trained on the task corpus when ``base.enabled``: a cached
    step, built once per base key and shared by every run that has that key (``ftlab.reuse``)."""
    runner = runner or StepRunner(cfg)
    tokenizer = build_tokenizer(cfg.model)
    seed = cfg.model.init_seed if cfg.model.init_seed is not None else cfg.seed
    if runner.steps.base is not None:
        model = cached_base_model(
            cfg, lambda: pretrain_base(cfg, build_model(cfg.model, tokenizer, seed=seed), tokenizer), runner=runner)
        # the cache loads with the default; the configured one where the class has it (ftlab.models.attention)
        model.set_attn_implementation(resolve_attention(model.config, cfg.model.attn_implementation))
    else:
        model = build_model(cfg.model, tokenizer, seed=seed)
    return tokenizer, model


def prepare_data(cfg: DictConfig, tokenizer, runner: StepRunner | None = None) -> TaskDataModule:
    """The task's train/val/test splits, read and tokenised once (task=instruct: the plan's cached
    ``data`` step, ``ftlab.data.tokenized``)."""
    dm = TaskDataModule(cfg, tokenizer, runner=runner)
    dm.setup()
    return dm


def control_metrics(cfg: DictConfig, model, tokenizer, dm: TaskDataModule) -> dict[str, Any]:
    """``eval.control``: the base evaluated before any tuning (``control_*`` in ``metrics.json``)."""
    if not (cfg.eval.control and cfg.eval.enabled):
        return {}
    return {f"control_{k}": v for k, v in final_evaluate(model, tokenizer, dm.splits, cfg).items()}


def adapt(cfg: DictConfig, model, dm: TaskDataModule, sparse: SparseBase | None,
          runner: StepRunner | None = None) -> AdaptedModel:
    """The adapter family (``ftlab.adapters`` registry) over the prepared base; over a sparse
    base the masks go with it (enforced while training, kept at the merge). A LoRA init that is a
    step of the plan (PiSSA, OLoRA) is looked up in / stored through ``runner``."""
    spec = get_adapter(cfg.adapter.name)
    model = prepare_for_training(model, cfg)  # k-bit preparation / gradient checkpointing
    init = {}
    if runner is not None and runner.steps.init is not None:
        init["init_store"] = cached_init_fn(runner)
        if init_spec(cfg.adapter.get("init")).data:
            init["init_batches"] = lambda: calibration_batches(cfg, dm.tokenizer, cfg.adapter.calibration,
                                                               "adapter.calibration")
    adapted: AdaptedModel = spec.build(model, cfg.adapter, cfg, **init)
    upcast_trainable_(adapted.model)  # a half-precision base stays frozen; what trains is fp32
    if adapted.trains:
        check_train_batches(cfg, len(dm.train_data))  # >= 1 optimiser step (the CLI's preflight checks it too)
    return sparse.attach(adapted) if sparse is not None else adapted


def fit(cfg: DictConfig, adapted: AdaptedModel, dm: TaskDataModule, run_dir: Path,
        extra_callbacks: list | None = None, runner: StepRunner | None = None, ckpt: Path | None = None,
        module: FtlabModule | None = None) -> dict[str, Any]:
    """Train with the run's callbacks, from ``ckpt`` (:func:`resume_checkpoint`) when given, or
    from the deepest cached stage of ``schedule=stages``; returns throughput facts for ``metrics.json``.
    ``module``: a trial of a fused group brings its own (``ftlab.fused``); else the run's FtlabModule."""
    module = module if module is not None else FtlabModule(adapted, cfg, train_items=len(dm.train_items))
    steps = module.max_steps  # train.max_epochs: x steps/epoch; stages: their total
    runner = runner or StepRunner(cfg)
    module.foundation = foundation(runner.steps, runner.digests())  # recorded in every state this fit writes
    callbacks = run_callbacks(cfg, adapted, run_dir, extra_callbacks)
    start_step = 0
    if ckpt is not None:
        check_resumable(ckpt, read_meta(ckpt), module, module.foundation, f"checkpoint {ckpt.parent}")
        note_rebuilt_base(runner.records)
        start_step = checkpoint_step(ckpt)
    # schedule=stages: resume from the deepest cached stage, hold the build locks of the others,
    # publish each at its last step; whatever is still locked is released on any exit
    stages = StageRun(runner, run_dir, cfg.schedule) if runner.steps.stages else None
    with stages or contextlib.nullcontext():
        if stages is not None:
            ckpt, start_step = resume_from_stage(stages, module, ckpt, start_step)
            callbacks += stages.callbacks()
        # eval.enabled=false: no evaluation at all, epoch-end validation passes included
        trainer = build_trainer(cfg, max_steps=steps, callbacks=callbacks, logger=build_logger(cfg, run_dir),
                                run_dir=run_dir, validate=bool(cfg.eval.enabled), model=adapted.model,
                                epochs=cfg.train.get("max_epochs"))
        if rank_zero():
            log.info("%s", header(cfg, adapted, steps, start_step, run_dir, runner.record(),
                                   stages is not None and stages.resume_path is not None))
        t0 = time.perf_counter()
        try:
            trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt) if ckpt else None, weights_only=True)
        except SIGTERMException as err:  # Lightning's own exit (status 0) for a SIGTERM mid-validation
            raise Interrupted(signal.SIGTERM, trainer.global_step) from err
        train_time = time.perf_counter() - t0
        best_step = restore_best(cfg, callbacks, adapted)
        if isinstance(trainer.strategy, ShardedStrategy):
            trainer.strategy.consolidate()  # FSDP: rank 0 gets the whole trained model back
    if stages is None:  # the whole training, recorded as one uncached stage
        runner.record_training(steps, float(cfg.schedule.lr), train_time)
    # examples and real tokens this rank trained on (counted per batch; packed rows hold several)
    samples = module.examples * trainer.world_size
    tokens = module.real_tokens * trainer.world_size
    finish = get_logger(cfg.logger.name).finish
    if finish is not None and rank_zero():
        finish()
    return {
        "train_time_s": train_time,
        "train_steps": trainer.global_step,
        "resumed_from_step": start_step,
        "samples_per_sec": samples / train_time if train_time > 0 else 0.0,
        "tokens_per_sec": tokens / train_time if train_time > 0 else 0.0,
        "padding_fraction": padding_fraction(module.real_tokens, module.token_slots),
        **({"exported_step": best_step} if best_step is not None else {}),
    }


def run_callbacks(cfg: DictConfig, adapted: AdaptedModel, run_dir: Path, extra: list | None) -> list[L.Callback]:
    """Loss log, history, gate logs (gated adapters), periodic checkpoints, then the caller's."""
    checkpoints = PeriodicCheckpoint(run_dir, cfg.train.save_every_n_steps, cfg.train.save_epoch_checkpoints,
                                     cfg.train.keep_checkpoints)
    return [
        LossLog(run_dir, cfg.train.log_every_n_steps, cfg.train.log_measurements),
        TrainingHistory(run_dir),
        *(gated_callbacks(cfg, run_dir) if adapted.gated else []),  # before checkpoints: rows precede state
        checkpoints,
        StopOnSignal(checkpoints),  # SIGTERM/SIGINT: a step checkpoint, then exit 128 + signal
        *training_eval_callbacks(cfg, run_dir, extra),
    ]


def training_eval_callbacks(cfg: DictConfig, run_dir: Path, extra: list | None) -> list[L.Callback]:
    """``eval.every_n_steps``: eval_log.csv (+ the benchmark subset); the caller's callbacks; then
    what reads the logged metrics: the best-state copy (``export.checkpoint=best``) and Lightning's
    EarlyStopping (``train.early_stopping``), whose counters travel in every checkpoint."""
    out: list[L.Callback] = []
    if cfg.eval.enabled and cfg.eval.every_n_steps:
        tasks = list(cfg.eval.during_training.benchmarks)
        out.append(EvalLog(run_dir, tasks, training_scorer(cfg) if tasks else None))
    out += list(extra or [])
    stop = cfg.train.early_stopping
    if cfg.export.checkpoint == "best":
        out.append(BestState(stop.metric or "val_loss", stop.mode if stop.metric else "min"))
    if stop.metric:
        out.append(EarlyStopping(monitor=stop.metric, mode=stop.mode, patience=stop.patience,
                                 min_delta=stop.min_delta, check_on_train_epoch_end=False, strict=True))
    return out


def restore_best(cfg: DictConfig, callbacks: list, adapted: AdaptedModel) -> int | None:
    """``export.checkpoint=best``: the best evaluated step's tensors back into the model."""
    best = next((c for c in callbacks if isinstance(c, BestState)), None)
    return best.restore(adapted.model) if best is not None else None


def resume_from_stage(stages: StageRun, module: FtlabModule, ckpt: Path | None, start_step: int) -> tuple[Path | None, int]:
    """``schedule=stages``: the deepest cached stage wins over the run's own checkpoint unless
    that one stands later; a stage entry is checked like a checkpoint and its logs copied in."""
    stages.plan(own_step=start_step if ckpt is not None else None)
    if stages.resume_path is None:
        return ckpt, start_step
    check_resumable(stages.resume_path, read_meta(stages.resume_path), module, module.foundation,
                    f"stage entry {stages.resume_entry.root}")
    stages.prefill_logs()
    return stages.resume_path, stages.start_step


def skip_training(run_dir: Path, adapted: AdaptedModel) -> dict[str, Any]:
    """An eval-only control: an empty history and zero throughput."""
    write_json(run_dir / "training_history.json", empty_history(adapted.gated))
    return {"train_time_s": 0.0, "samples_per_sec": 0.0, "tokens_per_sec": 0.0, "train_steps": 0}


def leave_process_group() -> None:
    """After a DDP fit rank 0 evaluates alone: its metrics must not wait for the other ranks."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def outputs(cfg: DictConfig, adapted: AdaptedModel, tokenizer, dm: TaskDataModule, run_dir: Path,
            control: dict[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    """Rank 0, after training: the adapter's final model (a sparse base merges, re-masks and
    validates first), evaluation, export; writes and returns ``metrics.json``."""
    metrics: dict[str, Any] = dict(adapted.finish(run_dir, tokenizer, dm.splits.val if cfg.eval.enabled else None))
    if cfg.eval.enabled:
        metrics.update(final_evaluate(adapted.model, tokenizer, dm.splits, cfg))
        fill_final_val_loss(run_dir / "training_history.json", metrics["val_loss"])
    metrics.update(control)
    metrics.update(facts)
    metrics.update(data_facts(cfg).report())  # what task.max_length cut (the preflight measured it)
    if getattr(dm.task, "source_counts", None):  # task.sources: realised train examples per source
        metrics["data_source_counts"] = dict(dm.task.source_counts)
    metrics.update({
        "peak_memory_mb": peak_memory_mb(),
        "trainable_params": adapted.trainable_params() if adapted.trains else 0,
        "effective_params": adapted.effective_params() if adapted.trains else 0,
        "total_params": sum(p.numel() for p in adapted.model.parameters()),
    })
    if adapted.gated:
        metrics["sparsity"] = adapted.sparsity()
    if adapted.trains:
        metrics.update(export(adapted, tokenizer, cfg, run_dir))
    write_json(run_dir / "metrics.json", metrics)
    return metrics


def export(adapted: AdaptedModel, tokenizer, cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """The adapter in peft format and/or the merged model with its tokenizer."""
    out: dict[str, Any] = {}
    if cfg.train.save_adapter and adapted.save_adapter(run_dir / "adapter"):
        out["adapter_dir"] = "adapter"
    if cfg.train.save_merged_model:
        merged = adapted.merged_model()
        merged.save_pretrained(str(run_dir / "model"), safe_serialization=True)
        tokenizer.save_pretrained(str(run_dir / "model"))
        out["model_dir"] = "model"
    return out


def summary_line(metrics: dict[str, Any], key: str, run_dir: Path) -> str:
    """The run's last console line: only a metric that was computed (no ``val_loss=nan`` for a run
    without evaluation), and what ``task.max_length`` cut when it cut anything."""
    value = metrics.get(key)
    cut = cut_report(metrics)
    if not isinstance(value, int | float) or value != value:
        return (f"trained {metrics.get('train_steps', 0)} steps, no evaluation (eval.enabled=false)"
                f"{cut}; outputs in {run_dir}")
    text = f"{key}={value:.4f}"
    if f"control_{key}" in metrics:
        text += f" (base model before tuning: {metrics[f'control_{key}']:.4f})"
    return f"{text}{cut}; outputs in {run_dir}"


def cut_report(metrics: dict[str, Any]) -> str:
    """``; task.max_length cut ...`` for train and val (the splits a run encodes to that length;
    train keys carry no split name), and how many test examples are longer (a generation scorer
    reads a test prompt whole, so the test split is not said to be cut), or ""."""
    parts = []
    for split, prefix in (("train", "data_"), ("val", "data_val_")):
        if metrics.get(f"{prefix}truncated_examples"):
            total = metrics["data_train_examples"] if split == "train" else metrics[f"{prefix}examples"]
            parts.append(f"{metrics[f'{prefix}truncated_examples']} of {total} {split} examples "
                         f"({metrics[f'{prefix}truncated_tokens']} tokens; "
                         f"{metrics[f'{prefix}no_target_examples']} left with no target token)")
    text = f"; task.max_length cut {', '.join(parts)}" if parts else ""
    if metrics.get("data_test_truncated_examples"):
        text += (f"; {metrics['data_test_truncated_examples']} of {metrics['data_test_examples']} test examples "
                 "are longer than task.max_length")
    return text
