"""Hydra callback (``hydra.callbacks.reuse_records`` in ``conf/config.yaml``): at the end of a
``--multirun`` it aggregates the jobs' reuse records into the sweep dir and prints the stage tree.
It runs in the launching process, after every job (local or SLURM) has returned."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ftlab.reuse.records import SUMMARY_FILE, write_sweep_records


class ReuseRecords(Callback):
    def __init__(self) -> None:
        self._t0: float | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._t0 = time.perf_counter()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        extra = {"sweep_wall_s": round(time.perf_counter() - self._t0, 3)} if self._t0 is not None else {}
        result = write_sweep_records(sweep_dir, extra)
        if result is None:
            return
        summary, tree = result
        speedup = f"{summary['speedup']:.2f}x" if summary["speedup"] else "everything from the cache"
        print(f"\nStage tree ({summary['trials']} trials; {summary['executed_iters']} of {summary['naive_iters']} "
              f"iterations executed, {summary['saved_pct']:.1f}% saved, {speedup}):")
        print(tree)
        print(f"-> {sweep_dir / 'stage_log.csv'}, {sweep_dir / SUMMARY_FILE}")
