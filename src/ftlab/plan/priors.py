"""Finished runs as evidence for estimates: what they ran on and what they measured.

Read through :mod:`ftlab.analysis.runs` (the same tolerant reader ``ftlab.analyze`` uses), so a
prior run is any dir under ``experiments/`` or ``multirun/`` with ``config.yaml`` and
``metrics.json``. Unfinished runs and runs that trained no steps are no evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ftlab.adapters.params import memory_mode
from ftlab.analysis.runs import RunRecord, load_runs


@dataclass(frozen=True)
class RunSetup:
    """What a run ran: the facts a planned run and a finished prior are matched on."""

    model: str
    hardware: str
    accelerator: str
    devices: int  # devices x nodes
    precision: str
    batch_size: int
    accumulate: int
    adapter: str
    task: str
    max_length: int


@dataclass(frozen=True)
class Prior(RunSetup):
    path: str = field(kw_only=True)
    steps: int  # optimiser steps this process ran
    train_time_s: float
    tokens_per_sample: float | None
    total_params: int | None
    peak_memory_mb: float | None
    memory_mode: str = ""  # ftlab.adapters.params.memory_mode of the run

    @property
    def sec_per_step(self) -> float:
        return self.train_time_s / self.steps

    @property
    def samples_per_step(self) -> int:
        return self.batch_size * self.accumulate * self.devices


def _num(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out == out else None  # NaN -> None


def _log_peak(log: pd.DataFrame | None) -> float | None:
    if log is None:
        return None
    peaks = [float(log[c].max()) for c in ("gpu_memory_mb", "cpu_rss_mb")
             if c in log and pd.api.types.is_numeric_dtype(log[c]) and log[c].notna().any()]
    return max(peaks) if peaks else None


def prior_from_record(rec: RunRecord) -> Prior | None:
    m, c = rec.metrics, rec.config
    if not m or not c or c.get("model.name") is None:
        return None
    steps = int(_num(m.get("train_steps")) or 0) - int(_num(m.get("resumed_from_step")) or 0)
    time_s = _num(m.get("train_time_s")) or 0.0
    if steps <= 0 or time_s <= 0:
        return None
    sps, tps = _num(m.get("samples_per_sec")), _num(m.get("tokens_per_sec"))
    peaks = [p for p in (_num(m.get("peak_memory_mb")), _log_peak(rec.loss_log)) if p]
    return Prior(
        path=str(rec.path),
        model=str(c.get("model.name")),
        hardware=str(c.get("hardware.name")),
        accelerator=str(c.get("hardware.accelerator")),
        devices=int(c.get("hardware.devices") or 1) * int(c.get("hardware.num_nodes") or 1),
        precision=str(c.get("hardware.precision")),
        batch_size=int(c.get("train.batch_size") or 0),
        accumulate=int(c.get("train.accumulate_grad_batches") or 1),
        adapter=str(c.get("adapter.name")),
        task=str(c.get("task.name")),
        max_length=int(c.get("task.max_length") or 0),
        steps=steps,
        train_time_s=time_s,
        tokens_per_sample=tps / sps if sps and tps else None,
        total_params=int(_num(m.get("total_params")) or 0) or None,
        peak_memory_mb=max(peaks) if peaks else None,
        memory_mode=memory_mode(c.get("model.dtype"), c.get("model.quantization"), c.get("train.gradient_checkpointing"),
                                c.get("train.packing")),
    )


def find_priors(dirs: list[str | Path]) -> list[Prior]:
    out: list[Prior] = []
    for d in dirs:
        if Path(d).is_dir():
            out.extend(p for p in map(prior_from_record, load_runs(Path(d))) if p is not None)
    return out
