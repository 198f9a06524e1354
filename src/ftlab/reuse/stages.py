"""Training stages as cached steps (``schedule=stages``; only a run with stages enters this module).

Before ``trainer.fit`` the trial looks for the deepest stage whose key is in the store and
resumes from its trainable-only state (:mod:`ftlab.training.state`: trainable tensors,
optimiser, scheduler, loop counters, data position, RNG state; the frozen base is rebuilt from
its own steps, whose keys the entry records and the resume checks). It then takes
the build locks of the stages it will train, in stage order, so a concurrent trial that needs one
of them waits and resumes from it instead of training it again. The fit runs once; at each
stage's last optimiser step :class:`StagePublisher` writes the checkpoint into a staging dir,
publishes it and releases that stage's lock. Every store operation (lookup, lock, staging,
publish, node-local copy) and the record go through the run's
:class:`ftlab.reuse.runner.StepRunner`, as for the base and mask steps.

The per-step logs of the resumed prefix (``loss_log.csv`` ...) are copied into the run dir, so a
trial's files look the same whether its prefix was trained here or fetched.
"""

from __future__ import annotations

import csv
import shutil
import time
from pathlib import Path
from typing import Any

import lightning as L
from torch.optim.lr_scheduler import LambdaLR

from ftlab.artifacts.keys import canonical_json, lookup
from ftlab.artifacts.locks import KeyLock
from ftlab.artifacts.store import Entry, Staging
from ftlab.callbacks.loss_log import COLUMNS as LOSS_COLUMNS
from ftlab.callbacks.loss_log import MEASUREMENT_COLUMNS
from ftlab.core.io import write_csv
from ftlab.reuse.runner import StageRecord, StepRunner
from ftlab.reuse.steps import RunSteps, run_steps, world_size  # noqa: F401 (re-export)
from ftlab.training.schedules import stage_table
from ftlab.training.state import read_meta, save_state, state_path

LOG_DIR = "logs"  # the run's logs at the stage's end (what a longer trial continues from)
FINAL_LOG_DIR = "final_logs"  # the same after the producing fit ended there (epoch-end rows)
LOSS_LOG = "loss_log.csv"
#: Run files that describe the training prefix and are carried with a stage's state.
PREFIX_LOGS = ("loss_log.csv", "sparsity_log.csv", "stage_metrics.csv", "training_history.json")
#: Settings that change ``stage_metrics.csv`` values without changing training.
EVAL_SIGNATURE_KEYS = ("eval", "task.eval_examples", "task.max_new_tokens", "task.metric", "train.eval_batch_size")


def eval_signature(c: dict[str, Any]) -> str:
    return canonical_json({k: lookup(c, k, None) for k in EVAL_SIGNATURE_KEYS})


def reuse_applies(c: dict[str, Any], steps: RunSteps | None = None) -> tuple[bool, str]:
    """(applies, why not): the stages of the plan of steps go through the store
    (:attr:`ftlab.reuse.steps.RunSteps.caches_stages`; the policy is
    :func:`ftlab.reuse.steps.cache_policy`)."""
    steps = steps if steps is not None else run_steps(c)
    if not steps.stages:
        return False, "schedule is not 'stages'"
    return steps.caches_stages, steps.why_not_cached


class SyncStageLr(L.Callback):
    """After a resume, set every group's lr from *this* trial's schedule.

    A checkpoint taken at a stage boundary already holds the lr of the step after it, i.e. of the
    next stage of the trial that produced it, which may differ from this trial's next stage (the
    next stage is not part of the cached stage's key). Recomputing it the way ``LambdaLR`` does
    (``base_lr * lambda(last_epoch)``) is a no-op for an uninterrupted run."""

    def on_train_start(self, trainer, pl_module) -> None:
        for config in trainer.lr_scheduler_configs:
            sched = config.scheduler
            if not isinstance(sched, LambdaLR):
                continue
            lrs = [base * lam(sched.last_epoch) for lam, base in zip(sched.lr_lambdas, sched.base_lrs)]
            for group, lr in zip(sched.optimizer.param_groups, lrs):
                group["lr"] = lr
            sched._last_lr = list(lrs)


class StageRun:
    """What one trial does about its stages: resume point, locks held, records (handed to the
    runner when the fit ends). A context manager: whatever is still locked or staged is released
    on any exit."""

    def __init__(self, runner: StepRunner, run_dir: Path, schedule: Any):
        self.runner, self.c, self.run_dir = runner, runner.c, Path(run_dir)
        self.steps = runner.steps.stages
        self.stages = stage_table(schedule)
        self.resume_entry: Entry | None = None
        self.start_step = 0
        self.cached = 0  # stages taken from the store
        self.locks: dict[int, KeyLock] = {}
        self.published: set[int] = set()
        self.staged: dict[int, Staging] = {}
        self.runtime: dict[int, float] = {}
        self.plan_s = 0.0

    @property
    def enabled(self) -> bool:
        """The stages go through the store (else only their wall times are recorded)."""
        return self.runner.caches(self.steps[0])

    @property
    def resume_path(self) -> Path | None:
        return state_path(self.resume_entry.artifact) if self.resume_entry else None

    # -- planning -------------------------------------------------------------------------
    def _deepest_hit(self) -> tuple[int, Entry | None]:
        for i in reversed(range(len(self.steps))):
            entry = self.runner.find(self.steps[i])
            if entry is not None:
                return i + 1, entry
        return 0, None

    def plan(self, own_step: int | None = None, timeout: float | None = None) -> StageRun:
        """Pick the resume point and take the locks of the stages this trial will build.

        ``own_step``: global step of the run's own checkpoint (``resume=auto``); it wins over a
        cached stage that ends no later."""
        if not self.enabled:
            return self
        t0 = time.perf_counter()
        while True:
            depth, entry = self._deepest_hit()
            start = self.stages[depth - 1].end if depth else 0
            if own_step is not None and own_step >= start:
                depth, entry, start = 0, None, own_step
            todo = [i for i, st in enumerate(self.stages) if st.end > start]
            if self._lock_all(todo, timeout):
                break
        self.resume_entry = self.runner.local_copy(entry) if entry is not None else None
        self.start_step = start
        self.cached = depth
        self.plan_s = time.perf_counter() - t0
        return self

    def _lock_all(self, todo: list[int], timeout: float | None) -> bool:
        """Take the locks in stage order; False (all released) if a stage got published meanwhile."""
        for i in todo:
            lock = self.runner.lock(self.steps[i])
            lock.acquire(timeout)
            self.locks[i] = lock
            if any(self.runner.find(self.steps[j]) for j in todo if j >= i):
                self.close()
                return False
        return True

    # -- during the fit -------------------------------------------------------------------
    def callbacks(self) -> list[L.Callback]:
        out: list[L.Callback] = [StageTimer(self)]
        if self.enabled:
            out.insert(0, SyncStageLr())
            out.append(StagePublisher(self))
        return out

    def prefill_logs(self) -> None:
        """Copy the resumed prefix's logs into the run dir (before the fit opens them). A trial
        served entirely from the cache gets the logs as they stood when its last stage's
        producer finished training (``final_logs``), as if the fit had just ended."""
        if self.resume_entry is None:
            return
        art = self.resume_entry.artifact
        final = self.start_step == self.stages[-1].end and (art / FINAL_LOG_DIR).is_dir()
        src = art / (FINAL_LOG_DIR if final else LOG_DIR)
        meta = read_meta(state_path(art))
        for name in PREFIX_LOGS:
            path = src / name
            if not path.is_file():
                continue
            if name == "stage_metrics.csv" and meta.get("eval_signature") != eval_signature(self.c):
                continue  # evaluated under other eval settings: the callback re-evaluates instead
            if name == LOSS_LOG:
                header = LOSS_COLUMNS + (MEASUREMENT_COLUMNS if lookup(self.c, "train.log_measurements", True) else [])
                _copy_csv(path, self.run_dir / name, header)
            else:
                shutil.copyfile(path, self.run_dir / name)

    def _copy_logs(self, dest: Path) -> None:
        dest.mkdir(exist_ok=True)
        for name in PREFIX_LOGS:
            if (self.run_dir / name).is_file():
                shutil.copyfile(self.run_dir / name, dest / name)

    def capture(self, trainer: L.Trainer, i: int) -> None:
        """Write stage ``i``'s state and the logs so far into a staging dir (not yet visible)."""
        staging = self.runner.staging(self.steps[i])
        self.staged[i] = staging
        save_state(trainer, staging.artifact, stage_idx=i + 1, eval_signature=eval_signature(self.c))  # + meta.json
        self._copy_logs(staging.artifact / LOG_DIR)

    def seal(self, i: int, final_logs: bool = False) -> None:
        """Publish a captured stage and release its lock; ``final_logs`` adds the logs as they
        stand at the end of the fit (the trial's last stage)."""
        step, staging = self.steps[i], self.staged.pop(i)
        try:
            if final_logs:
                self._copy_logs(staging.artifact / FINAL_LOG_DIR)
        except BaseException:
            self.runner.discard(staging)
            raise
        self.runner.publish(step, staging, meta={"runtime_s": self.runtime.get(i, 0.0)})
        self.published.add(i)
        lock = self.locks.pop(i, None)
        if lock is not None:
            lock.release()

    def close(self) -> None:
        """Discard unpublished captures and release every lock still held (a failed or
        interrupted fit publishes nothing more)."""
        for staging in self.staged.values():
            self.runner.discard(staging)
        self.staged.clear()
        for lock in self.locks.values():
            lock.release()
        self.locks.clear()

    def __enter__(self) -> StageRun:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
        self.runner.record_stages(self.records())

    # -- the record -----------------------------------------------------------------------
    def records(self) -> list[StageRecord]:
        out = []
        for i, (st, step) in enumerate(zip(self.stages, self.steps)):
            cfg = st.config
            name = getattr(cfg, "name", None) if not isinstance(cfg, dict) else cfg.get("name")
            hit = self.enabled and i < self.cached
            runtime = self.plan_s if hit and i == self.cached - 1 else (0.0 if hit else self.runtime.get(i, 0.0))
            out.append(StageRecord(i + 1, st.iters, st.lr, step.key, hit, round(runtime, 4), name, step.parent))
        return out


class StageTimer(L.Callback):
    """Wall time of each stage trained in this fit (recorded with or without reuse)."""

    def __init__(self, run: StageRun):
        self.run = run
        self._t0 = time.perf_counter()
        self._last_step = -1

    def on_train_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()
        self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self._last_step:
            return
        self._last_step = step
        for i, st in enumerate(self.run.stages):
            if st.end == step:
                now = time.perf_counter()
                self.run.runtime[i] = now - self._t0
                self._t0 = now


class StagePublisher(L.Callback):
    """Captures a stage's state at its last optimiser step and publishes it. A stage that ends
    exactly where the epoch's data ends is captured at the epoch end instead (after validation and
    the history row), and the trial's last stage is published at the end of the fit together with
    the logs as they stand then, so a trial served from the cache writes the same files as one
    trained in a single fit."""

    def __init__(self, run: StageRun):
        self.run = run
        self._at_epoch_end: list[int] = []

    def _captured(self, trainer, i: int) -> None:
        self.run.capture(trainer, i)
        if self.run.stages[i].end != self.run.stages[-1].end:
            self.run.seal(i)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        for i in list(self.run.locks):
            st = self.run.stages[i]
            if st.end != step or i in self.run.staged or i in self.run.published or i in self._at_epoch_end:
                continue
            dm = trainer.datamodule
            if dm is not None and getattr(dm, "sampler", None) is not None and not dm.sampler.remaining():
                self._at_epoch_end.append(i)
            else:
                self._captured(trainer, i)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        for i in self._at_epoch_end:
            self._captured(trainer, i)
        self._at_epoch_end = []

    def on_train_end(self, trainer, pl_module) -> None:
        for i in list(self.run.staged):
            self.run.seal(i, final_logs=True)


def _copy_csv(src: Path, dest: Path, header: list[str]) -> None:
    with open(src, newline="") as fh:
        rows = list(csv.DictReader(fh))
    write_csv(dest, header, rows, extrasaction="ignore")
