"""The recipe: one run from config to outputs, top to bottom.

    config -> tokenizer + base model (-> optional base pre-training) -> adapter -> data
           -> fit (callbacks write logs and checkpoints) -> evaluate -> export -> metrics.json
"""

from __future__ import annotations

import contextlib
import logging
import resource
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from ftlab.adapters.base import AdaptedModel
from ftlab.adapters.registry import get_adapter
from ftlab.base_model import pretrain_base
from ftlab.callbacks import LossLog, PeriodicCheckpoint, TrainingHistory
from ftlab.callbacks.checkpoints import STATE_FILE, checkpoint_step, checkpoints_newest_first, read_meta
from ftlab.callbacks.history import empty_history, fill_final_val_loss
from ftlab.callbacks.sparsity_log import gated_callbacks
from ftlab.data.checks import check_train_batches
from ftlab.data.datamodule import TaskDataModule
from ftlab.data.packing import padding_fraction
from ftlab.errors import ConfigError
from ftlab.evaluation import final_evaluate
from ftlab.io import write_json
from ftlab.launchers.slurm import resume_setting
from ftlab.models import build_model, build_tokenizer
from ftlab.models.memory import prepare_for_training, upcast_trainable_
from ftlab.reuse.cached import cached_base_model, cached_mask_fn
from ftlab.reuse.foundation import foundation, foundation_mismatch
from ftlab.reuse.records import write_record
from ftlab.reuse.runner import StepRunner
from ftlab.reuse.stages import StageRun
from ftlab.sparsity.compute import compute_pruned
from ftlab.sparsity.pipeline import attach_masks, finish_sparse, prepare_masks
from ftlab.training.fsdp import ShardedStrategy
from ftlab.training.fsdp_rules import check_fsdp
from ftlab.training.module import FtlabModule
from ftlab.training.progress import header
from ftlab.training.schedules import total_steps
from ftlab.training.state import STATE_KEY, check_resumable, state_problem
from ftlab.training.trainer import build_logger, build_trainer

log = logging.getLogger("ftlab")


def run_dir_of(cfg: DictConfig) -> Path:
    """Hydra's job output dir (``experiments/<name>/<ts>`` or the sweep's job dir)."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path("experiments") / cfg.name / time.strftime("%Y-%m-%d_%H-%M-%S")


def resume_checkpoint(cfg: DictConfig, run_dir: Path, found: dict[str, Any] | None = None) -> Path | None:
    """The state file to resume from (``None``: start at step 0), checked before anything runs:
    intact (``resume=auto`` falls back past an incomplete newest checkpoint, saying so), no pickled
    objects, and standing on this run's model/base/mask keys (``found``)."""
    resume = resume_setting(cfg.resume)  # a requeued SLURM job resumes from its job dir ("auto")
    if resume is None:
        return None
    if resume == "auto":
        path = _newest_intact(run_dir)
        if path is None:
            return None
    else:
        path = Path(cfg.resume)
        path = path / STATE_FILE if path.is_dir() else path
        if not path.is_file():
            raise ConfigError("resume", cfg.resume, "null, 'auto' or a checkpoint dir containing state.ckpt")
        problem = state_problem(path, read_meta(path))
        if problem is not None:
            raise ConfigError("resume", cfg.resume, f"an intact checkpoint of plain tensors ({problem[1]})")
    recorded = read_meta(path).get(STATE_KEY, {}).get("foundation")
    why = foundation_mismatch(recorded, found) if recorded is not None and found is not None else None
    if why is not None:
        raise ConfigError("resume", str(path.parent), f"a checkpoint of this run's model/base/mask: {why}; "
                          "resume=null starts over")
    return path


def _newest_intact(run_dir: Path) -> Path | None:
    """``resume=auto``: the newest checkpoint that is intact; an incomplete one is skipped (one
    line), a pickled one refused; none left of several is an error (nothing is overwritten)."""
    candidates = checkpoints_newest_first(run_dir)
    skipped: list[tuple[Path, str]] = []
    for d in candidates:
        problem = state_problem(d / STATE_FILE, read_meta(d / STATE_FILE))
        if problem is None:
            if skipped:
                names = ", ".join(p.name for p, _ in skipped)
                log.warning("resume=auto: skipping incomplete %s (%s); resuming from %s instead", names,
                            skipped[0][1], d.name)
            return d / STATE_FILE
        kind, why = problem
        if kind == "unsafe":
            raise ConfigError("resume", str(d), f"a checkpoint of plain tensors ({why})")
        skipped.append((d, why))
    if skipped:
        raise ConfigError("resume", "auto", f"a run dir with an intact checkpoint: all {len(skipped)} under "
                          f"{Path(run_dir) / 'checkpoints'} are incomplete (newest: {skipped[0][1]}); "
                          "resume=null starts over")
    return None


def rank_zero() -> bool:
    """The one DDP rule of the recipe: Lightning's launcher runs this recipe once per rank (the
    rank comes from the launcher's environment before the trainer exists); every rank trains, rank
    0 alone writes the run's files, logs the header, evaluates and exports. Callbacks that write
    files during the fit guard themselves with the trainer's ``is_global_zero``."""
    return rank_zero_only.rank == 0


def peak_memory_mb() -> float:
    """Peak device memory on CUDA, else the process's peak resident set."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prepare_model(cfg: DictConfig, runner: StepRunner | None = None):
    """Tokenizer and base model, pre-trained on the task corpus when ``base.enabled``: a cached
    step, built once per base key and shared by every run that has that key (``ftlab.reuse``)."""
    runner = runner or StepRunner(cfg)
    tokenizer = build_tokenizer(cfg.model)
    seed = cfg.model.init_seed if cfg.model.init_seed is not None else cfg.seed
    if runner.steps.base is not None:
        model = cached_base_model(
            cfg, lambda: pretrain_base(cfg, build_model(cfg.model, tokenizer, seed=seed), tokenizer), runner=runner)
        model.set_attn_implementation(cfg.model.attn_implementation)  # the cache loads with the default
    else:
        model = build_model(cfg.model, tokenizer, seed=seed)
    return tokenizer, model


def fit(cfg: DictConfig, adapted: AdaptedModel, dm: TaskDataModule, run_dir: Path,
        extra_callbacks: list | None = None, runner: StepRunner | None = None, ckpt: Path | None = None) -> dict[str, Any]:
    """Train with the run's callbacks, from ``ckpt`` (:func:`resume_checkpoint`) when given;
    returns throughput facts for ``metrics.json``."""
    steps = total_steps(cfg.schedule, cfg.train.max_steps)
    module = FtlabModule(adapted, cfg)
    runner = runner or StepRunner(cfg)
    module.foundation = foundation(runner.steps, runner.digests())  # recorded in every state this fit writes
    callbacks = [
        LossLog(run_dir, cfg.train.log_every_n_steps, cfg.train.log_measurements),
        TrainingHistory(run_dir),
        *(gated_callbacks(cfg, run_dir) if adapted.gated else []),  # before checkpoints: rows precede state
        PeriodicCheckpoint(run_dir, cfg.train.save_every_n_steps, cfg.train.save_epoch_checkpoints,
                           cfg.train.keep_checkpoints),
        *(extra_callbacks or []),
    ]
    start_step = 0
    if ckpt is not None:
        check_resumable(ckpt, read_meta(ckpt), module, module.foundation, f"checkpoint {ckpt.parent}")
        _note_rebuilt(runner.records)
        start_step = checkpoint_step(ckpt)
    # schedule=stages: resume from the deepest cached stage, hold the build locks of the others,
    # publish each at its last step; whatever is still locked is released on any exit
    stages = StageRun(runner, run_dir, cfg.schedule) if runner.steps.stages else None
    with stages or contextlib.nullcontext():
        if stages is not None:
            stages.plan(own_step=start_step if ckpt is not None else None)
            if stages.resume_path is not None:
                ckpt, start_step = stages.resume_path, stages.start_step
                check_resumable(ckpt, read_meta(ckpt), module, module.foundation,
                                f"stage entry {stages.resume_entry.root}")
                stages.prefill_logs()
            callbacks += stages.callbacks()
        # eval.enabled=false: no evaluation at all, epoch-end validation passes included
        trainer = build_trainer(cfg, max_steps=steps, callbacks=callbacks, logger=build_logger(cfg, run_dir),
                                run_dir=run_dir, validate=bool(cfg.eval.enabled), model=adapted.model)
        if rank_zero():
            log.info("%s", header(cfg, adapted, steps, start_step, run_dir, runner.record(),
                                   stages is not None and stages.resume_path is not None))
        t0 = time.perf_counter()
        trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt) if ckpt else None, weights_only=True)
        train_time = time.perf_counter() - t0
        if isinstance(trainer.strategy, ShardedStrategy):
            trainer.strategy.consolidate()  # FSDP: rank 0 gets the whole trained model back
    if stages is None:  # the whole training, recorded as one uncached stage
        runner.record_training(steps, float(cfg.schedule.lr), train_time)
    # examples and real tokens this rank trained on (counted per batch; packed rows hold several)
    samples = module.examples * trainer.world_size
    tokens = module.real_tokens * trainer.world_size
    if cfg.logger.name == "wandb" and rank_zero():
        import wandb  # optional dependency: logger=wandb only

        wandb.finish()
    return {
        "train_time_s": train_time,
        "train_steps": trainer.global_step,
        "resumed_from_step": start_step,
        "samples_per_sec": samples / train_time if train_time > 0 else 0.0,
        "tokens_per_sec": tokens / train_time if train_time > 0 else 0.0,
        "padding_fraction": padding_fraction(module.real_tokens, module.token_slots),
    }


def _note_rebuilt(records: dict[str, dict]) -> None:
    base = records.get("base") or {}
    if base.get("cached") and not base.get("cache_hit"):
        log.warning("resume: the base artifact %s was not in the cache; rebuilt it, and its content matches "
                    "the checkpoint's where both were cached", base["key"][:12])


def export(adapted: AdaptedModel, tokenizer, cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if cfg.train.save_adapter and adapted.save_adapter(run_dir / "adapter"):
        out["adapter_dir"] = "adapter"
    if cfg.train.save_merged_model:
        merged = adapted.merged_model()
        merged.save_pretrained(str(run_dir / "model"), safe_serialization=True)
        tokenizer.save_pretrained(str(run_dir / "model"))
        out["model_dir"] = "model"
    return out


def run(cfg: DictConfig, run_dir: Path | None = None, extra_callbacks: list | None = None) -> float | None:
    """Train (unless the adapter is an eval-only control), evaluate, export; returns the task metric."""
    check_fsdp(cfg)  # what the sharded path does not train: one line, before anything is built
    run_dir = Path(run_dir) if run_dir is not None else run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    # checked before anything is written or built: a refused checkpoint leaves the run dir as it was
    runner = StepRunner(cfg)  # the plan of steps (computed once) and the runner of its cached steps
    ckpt = resume_checkpoint(cfg, run_dir, foundation(runner.steps))
    if rank_zero():
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)

    tokenizer, model = prepare_model(cfg, runner)
    # sparse base: W <- W * M; the mask is a cached step (a dense run has none and skips sparsity)
    masks = None
    if runner.steps.mask is not None:
        masks = prepare_masks(cfg, model, tokenizer, compute=cached_mask_fn(compute_pruned, runner=runner))
    dm = TaskDataModule(cfg, tokenizer)
    dm.setup()
    control = final_evaluate(model, tokenizer, dm.splits, cfg) if cfg.eval.control and cfg.eval.enabled else {}
    spec = get_adapter(cfg.adapter.name)
    model = prepare_for_training(model, cfg)  # k-bit preparation / gradient checkpointing
    adapted: AdaptedModel = spec.build(model, cfg.adapter, cfg)
    upcast_trainable_(adapted.model)  # a half-precision base stays frozen; what trains is fp32
    if adapted.trains:
        check_train_batches(cfg, len(dm.train_data))  # >= 1 optimiser step (the CLI's preflight checks it too)
    if masks is not None:
        adapted = attach_masks(adapted, masks, cfg)  # masks to the adapter, enforcement, merge keeps M

    facts: dict[str, Any] = {"train_time_s": 0.0, "samples_per_sec": 0.0, "tokens_per_sec": 0.0, "train_steps": 0}
    if adapted.trains:
        facts = fit(cfg, adapted, dm, run_dir, extra_callbacks, runner=runner, ckpt=ckpt)
        if not rank_zero():
            return None  # DDP: rank 0 evaluates and writes the outputs
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()  # rank 0 evaluates alone: its metrics must not sync
    else:
        write_json(run_dir / "training_history.json", empty_history(adapted.gated))
    write_record(run_dir, runner.record())  # aggregated into the sweep's stage_log.csv / reuse_summary.json

    metrics: dict[str, Any] = {}
    if masks is not None:  # merge + re-mask + validate; evaluation and export see that sparse model
        metrics.update(finish_sparse(adapted, cfg, run_dir, tokenizer, dm.splits.val if cfg.eval.enabled else None))
    if cfg.eval.enabled:
        metrics.update(final_evaluate(adapted.model, tokenizer, dm.splits, cfg))
        fill_final_val_loss(run_dir / "training_history.json", metrics["val_loss"])
    metrics.update({f"control_{k}": v for k, v in control.items()})
    metrics.update(facts)
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
    key = next((k for k in ("eval_exact_match", "eval_accuracy") if k in metrics), "val_loss")
    log.info("%s", summary_line(metrics, key, run_dir))
    return metrics.get(key)


def summary_line(metrics: dict[str, Any], key: str, run_dir: Path) -> str:
    text = f"{key}={metrics.get(key, float('nan')):.4f}"
    if f"control_{key}" in metrics:
        text += f" (base model before tuning: {metrics[f'control_{key}']:.4f})"
    return f"{text}; outputs in {run_dir}"
