"""Sweep records: every job writes ``reuse_record.json`` into its run dir; at the end of a sweep
they are aggregated into ``stage_log.csv`` and ``reuse_summary.json`` in the sweep dir.

Per-job files (not a shared file appended by every job) because SLURM jobs of one sweep run on
different nodes at the same time; the aggregation runs once, in the process that launched them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig

from ftlab.core.io import write_csv, write_json
from ftlab.reuse.tree import build_tree, render_tree

RECORD_FILE = "reuse_record.json"
STAGE_LOG = "stage_log.csv"
SUMMARY_FILE = "reuse_summary.json"
STAGE_LOG_COLUMNS = ["trial", "stage_idx", "iters", "lr", "key", "cache_hit", "runtime_s", "job", "run_dir"]


def job_identity(run_dir: Path) -> dict[str, Any]:
    """Hydra's job number and overrides when running under Hydra, else only the run dir."""
    out: dict[str, Any] = {"run_dir": str(Path(run_dir).absolute()), "job_num": None, "overrides": []}
    try:
        if HydraConfig.initialized():
            hc = HydraConfig.get()
            out["job_num"] = int(hc.job.num) if hc.job.get("num") is not None else None
            out["overrides"] = list(hc.overrides.task)
    except (ValueError, AttributeError, ImportError):
        pass
    return out


def write_record(run_dir: Path, record: dict[str, Any]) -> None:
    write_json(Path(run_dir) / RECORD_FILE, {**job_identity(run_dir), **record})


def load_records(sweep_dir: Path) -> list[dict[str, Any]]:
    """The records of a sweep's jobs, in job order, each with a trial label (A, B, ...)."""
    sweep_dir = Path(sweep_dir)
    records = []
    for path in sweep_dir.rglob(RECORD_FILE):
        rec = json.loads(path.read_text())
        rec["run_dir"] = str(path.parent)
        records.append(rec)

    def order(rec):
        num = rec.get("job_num")
        return (0, num, "") if isinstance(num, int) else (1, 0, rec["run_dir"])

    records.sort(key=order)
    for i, rec in enumerate(records):
        rec["trial"] = trial_label(i)
    return records


def trial_label(i: int) -> str:
    """A, B, ..., Z, AA, AB, ... (spreadsheet columns)."""
    label = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        label = chr(65 + r) + label
    return label


def stage_rows(records: list[dict[str, Any]], sweep_dir: Path | None = None) -> list[dict[str, Any]]:
    rows = []
    for rec in records:
        run_dir = Path(rec["run_dir"])
        rel = run_dir.relative_to(sweep_dir) if sweep_dir and run_dir.is_relative_to(sweep_dir) else run_dir
        for st in rec.get("stages", []):
            rows.append({"trial": rec["trial"], "stage_idx": st["stage_idx"], "iters": st["iters"], "lr": st["lr"],
                         "key": st["key"], "cache_hit": st["cache_hit"], "runtime_s": st["runtime_s"],
                         "job": rec.get("job_num") if rec.get("job_num") is not None else "", "run_dir": str(rel)})
    return rows


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Naive vs executed iterations: base pre-training steps plus training-stage iterations."""
    stages = [st for rec in records for st in rec.get("stages", [])]
    bases = [rec["base"] for rec in records if rec.get("base")]
    masks = [rec["mask"] for rec in records if rec.get("mask")]
    stage_naive = sum(st["iters"] for st in stages)
    stage_exec = sum(st["iters"] for st in stages if not st["cache_hit"])
    base_naive = sum(b["steps"] for b in bases)
    base_exec = sum(b["steps"] for b in bases if not b["cache_hit"])
    naive, executed = stage_naive + base_naive, stage_exec + base_exec
    return {
        "trials": len(records),
        "naive_iters": naive,
        "executed_iters": executed,
        "saved_iters": naive - executed,
        "saved_pct": round(100.0 * (naive - executed) / naive, 2) if naive else 0.0,
        # iterations-based; null when nothing was executed (a re-run served entirely from the cache)
        "speedup": round(naive / executed, 4) if executed else None,
        "stages": {"naive_runs": len(stages), "executed_runs": sum(not st["cache_hit"] for st in stages),
                   "naive_iters": stage_naive, "executed_iters": stage_exec,
                   "runtime_s": round(sum(st["runtime_s"] for st in stages), 3)},
        "base": {"trials": len(bases), "unique": len({b["key"] for b in bases}),
                 "built": sum(not b["cache_hit"] for b in bases), "hits": sum(b["cache_hit"] for b in bases),
                 "naive_steps": base_naive, "executed_steps": base_exec,
                 "runtime_s": round(sum(b["runtime_s"] for b in bases), 3)},
        "mask": {"trials": len(masks), "unique": len({m["key"] for m in masks}),
                 "built": sum(not m["cache_hit"] for m in masks), "hits": sum(m["cache_hit"] for m in masks)},
        "jobs": [{"trial": rec["trial"], "job": rec.get("job_num"), "overrides": rec.get("overrides", []),
                  "run_dir": rec.get("run_dir")} for rec in records],
    }


def write_stage_log(path: Path, rows: list[dict[str, Any]]) -> None:
    write_csv(path, STAGE_LOG_COLUMNS, rows)


def write_sweep_records(sweep_dir: Path, extra: dict[str, Any] | None = None) -> tuple[dict[str, Any], str] | None:
    """Write ``stage_log.csv`` and ``reuse_summary.json``; returns (summary, stage tree text), or
    ``None`` when no job of the sweep left a record."""
    sweep_dir = Path(sweep_dir)
    records = load_records(sweep_dir)
    if not records:
        return None
    write_stage_log(sweep_dir / STAGE_LOG, stage_rows(records, sweep_dir))
    tree = render_tree(build_tree(records))
    summary = {**summarize(records), **(extra or {}), "tree": tree.splitlines()}
    write_json(sweep_dir / SUMMARY_FILE, summary)
    return summary, tree
