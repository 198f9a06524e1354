"""A run's console: one header, one progress bar over optimiser steps, and the summary line.

Lightning's own bar counts batches per epoch (``Epoch 7/-2`` when ``max_epochs=-1``) and prints
every logged value with three decimals (``lr: 0.000`` for 1e-4). This bar counts the run's
optimiser steps (a resumed run starts where its checkpoint stood) and shows what a user watches:
the loss, the lr in scientific notation, memory (GPU MB on CUDA, else the process's resident set)
and, for gated adapters, the sparsity; the ETA comes from the step rate. On a terminal it is a
tqdm bar; in a log file (SLURM, a pipe) it is a plain line every 10 % of the steps.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path
from typing import IO, Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ProgressBar
from tqdm.auto import tqdm

#: plain lines per run when stderr is not a terminal
PLAIN_LINES = 10


def memory_mb() -> float:
    """GPU memory allocated on CUDA, else this process's current resident set (peak if unknown)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.memory_allocated() / 2**20
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory_mb() -> float:
    """Peak device memory on CUDA, else the process's peak resident set (``metrics.json``)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fmt_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def fmt_duration(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def postfix(metrics: dict[str, Any], mem_mb: float, on_gpu: bool) -> str:
    """``loss 2.3456 · lr 1.00e-04 · gpu 512 MB · sparsity 0.312`` from the logged progress metrics."""
    parts = []
    if "loss" in metrics:
        parts.append(f"loss {float(metrics['loss']):.4f}")
    if "lr" in metrics:
        parts.append(f"lr {float(metrics['lr']):.2e}")
    parts.append(f"{'gpu' if on_gpu else 'rss'} {mem_mb:.0f} MB")
    if "sparsity" in metrics:
        parts.append(f"sparsity {float(metrics['sparsity']):.3f}")
    return " · ".join(parts)


def eta_s(done: int, total: int, elapsed_s: float) -> float | None:
    """Seconds left at the rate so far (``None`` before the first step)."""
    if done <= 0 or elapsed_s <= 0:
        return None
    return (total - done) * elapsed_s / done


def header(cfg: Any, adapted: Any, steps: int, start_step: int, run_dir: Path, record: dict | None,
           stage_hit: bool = False) -> str:
    """The run in one line: model, adapter, trainable / total parameters, steps, hardware, output
    dir and what the reuse cache gave (a pre-trained base, a mask, a trained stage)."""
    total = sum(p.numel() for p in adapted.model.parameters())
    trainable = adapted.trainable_params()
    h = cfg.hardware
    world = h.devices * h.num_nodes
    hw = f"{h.accelerator} x{world}" if world > 1 else h.accelerator
    steps_text = f"{steps} steps" + (f" (resuming at {start_step})" if start_step else "")
    sparse = f" on a {cfg.sparsity.method} {cfg.sparsity.level:g} sparse base" if cfg.sparsity.method != "none" else ""
    reuse = reuse_summary(record or {}, start_step if stage_hit else None)
    return (f"ftlab: {loaded_model(cfg, adapted.model, total)} + {cfg.adapter.name}{sparse} · trainable {fmt_count(trainable)} / "
            f"{fmt_count(total)} params ({100 * trainable / max(1, total):.2f}%) · {steps_text} · batch "
            f"{cfg.train.batch_size} · {hw} {h.precision} · {reuse} · outputs {run_dir}")


def loaded_model(cfg: Any, model: Any, total: int) -> str:
    """The model the run really loaded: its directory (``model.name_or_path``; else the option's
    name, built from ``model.config``), its transformers ``model_type`` and its size, so a
    ``model.name_or_path`` that overrides a preset's name is never reported as the preset."""
    where = cfg.model.name_or_path or cfg.model.name
    model_type = getattr(getattr(model, "config", None), "model_type", None) or cfg.model.arch
    return f"{where} ({model_type}, {fmt_count(total)} params)"


def reuse_summary(record: dict, stage_step: int | None = None) -> str:
    """``reuse: data hit, base hit, mask built, stage hit (step 50)`` from the run's reuse record
    (``data``: the tokenized train/val split of ``task=instruct``)."""
    if not record.get("reuse_enabled", True):
        return "reuse off"
    hits = []
    for name in ("data", "base", "mask"):
        r = record.get(name)
        if r is not None and r.get("cached"):
            hits.append(f"{name} {'hit' if r.get('cache_hit') else 'built'}")
    if stage_step is not None:
        hits.append(f"stage hit (step {stage_step})")
    return "reuse: " + (", ".join(hits) if hits else "nothing to reuse")


class StepProgressBar(ProgressBar):
    """One bar over the run's optimiser steps (rank 0 only)."""

    def __init__(self, label: str = "train", stream: IO[str] | None = None, tty: bool | None = None,
                 epochs: int | None = None):
        super().__init__()
        self.label = label
        self.epochs = epochs  # train.max_epochs: the label shows "epoch k/n"
        self.stream = stream
        self._tty = tty
        self._enabled = True
        self._bar = None
        self._t0 = 0.0
        self._start = 0
        self._shown = -1

    # Lightning calls these around tuner runs; ftlab has none, but the base class requires them.
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def out(self) -> IO[str]:
        return self.stream if self.stream is not None else sys.stderr

    @property
    def tty(self) -> bool:
        return self._tty if self._tty is not None else bool(getattr(self.out, "isatty", lambda: False)())

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self._bar is not None:
            self._bar.write(" ".join(map(str, args)), file=self.out)
        else:
            print(*args, file=self.out, **kwargs)

    def _label(self, trainer: L.Trainer) -> str:
        if self.epochs is None:
            return self.label
        return f"{self.label} epoch {min(trainer.current_epoch + 1, self.epochs)}/{self.epochs}"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._enabled:
            return
        self._t0, self._start = time.perf_counter(), trainer.global_step
        total = max(trainer.max_steps, self._start)
        if self.tty:
            self._bar = tqdm(total=total, initial=self._start, desc=self.label, file=self.out, dynamic_ncols=True,
                             leave=True, bar_format="{desc} {percentage:3.0f}%|{bar:16}| {n_fmt}/{total_fmt} "
                                                    "[{elapsed}<{remaining}]{postfix}")  # tqdm puts ", " before the postfix

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if not self._enabled or step == self._shown:
            return
        self._shown = step
        on_gpu = trainer.strategy.root_device.type == "cuda"
        text = postfix(trainer.progress_bar_metrics, memory_mb(), on_gpu)
        total = max(trainer.max_steps, self._start)
        label = self._label(trainer)
        if self._bar is not None:
            if self._bar.desc != label:
                self._bar.set_description_str(label, refresh=False)
            self._bar.set_postfix_str(text, refresh=False)
            self._bar.update(step - self._bar.n)
            return
        every = max(1, (total - self._start) // PLAIN_LINES)
        if (step - self._start) % every == 0 or step >= total:
            left = eta_s(step - self._start, total - self._start, time.perf_counter() - self._t0)
            eta = fmt_duration(left) if left is not None else "?"
            print(f"{label} step {step}/{total} ({100 * step / max(1, total):.0f}%) · {text} · eta {eta}",
                  file=self.out, flush=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
