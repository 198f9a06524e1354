"""The three analysis tables, built from :class:`RunRecord` s (no file I/O here).

- ``summary``: one row per run dir, finished or not: the config keys that vary across the runs,
  final metrics, gate sparsity, mask validation, throughput, time, memory, parameter counts.
- ``grouped``: finished runs grouped by everything that varies except seeds -> mean/std.
- ``sparsity_vs_performance``: per finished run, base-mask level and gate sparsity against the
  task metric, parameter counts and throughput.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from ftlab.analysis.runs import RunRecord

#: task metrics in order of preference (a run has at most one); val_loss is the fallback
TASK_METRICS = ("eval_accuracy", "eval_exact_match")
#: named grouping columns -> the config key each one reads
GROUP_COLUMNS = {"model": "model.name", "task": "task.name", "adapter": "adapter.name",
                 "method": "sparsity.method", "sparsity_level": "sparsity.level"}
#: metrics.json keys that lead the summary (others follow in sorted order)
LEADING_METRICS = ("val_loss", *TASK_METRICS, "sparsity", "train_time_s", "train_steps", "samples_per_sec",
                   "tokens_per_sec", "peak_memory_mb", "trainable_params", "effective_params", "total_params")
#: config keys that never explain a difference between runs
_NOISE = ("name", "resume", "paths.", "logger.", "tags.", "train.log_every_n_steps", "train.save_",
          "train.keep_checkpoints", "train.num_workers", "train.log_measurements")


def is_seed_key(key: str) -> bool:
    leaf = key.rsplit(".", 1)[-1]
    return leaf in ("seed", "init_seed")


#: benchmark scores -> column prefix: the run's own final numbers and ``ftlab.evaluate``'s eval.json
BENCHMARK_SOURCES = (("metrics", "lm_eval"), ("eval", "eval_json"))


def benchmark_columns(rec: RunRecord) -> dict[str, Any]:
    """``<prefix>:<variant>`` (value), ``<prefix>:<variant>:stderr``, ``<prefix>:n`` and
    ``<prefix>:n_shot`` of each lm-eval ``eval_benchmark`` record the run dir holds."""
    out: dict[str, Any] = {}
    for attr, prefix in BENCHMARK_SOURCES:
        bench = (getattr(rec, attr) or {}).get("eval_benchmark")
        if not isinstance(bench, dict):
            continue
        for r in bench.get("metrics") or []:
            out[f"{prefix}:{r['variant']}"] = r.get("value")
            out[f"{prefix}:{r['variant']}:stderr"] = r.get("stderr")
            out[f"{prefix}:n"], out[f"{prefix}:n_shot"] = r.get("n"), r.get("n_shot")
    if rec.eval is not None:
        out["eval_json:weights"] = rec.eval.get("weights")
    return out


def task_metric(metrics: dict[str, Any] | None) -> tuple[str | None, float | None]:
    """The run's headline metric: the task metric if it was scored, else ``val_loss``."""
    if not metrics:
        return None, None
    for key in (*TASK_METRICS, "val_loss"):
        if isinstance(metrics.get(key), (int, float)):
            return key, float(metrics[key])
    return None, None


def varying_keys(records: list[RunRecord]) -> list[str]:
    """Config keys whose value differs between at least two runs (absent counts as a value)."""
    keys = sorted({k for r in records for k in r.config})
    out = []
    for k in keys:
        if k.startswith(_NOISE):
            continue
        values = {json.dumps(r.config.get(k, "<absent>"), default=str, sort_keys=True) for r in records}
        if len(values) > 1:
            out.append(k)
    return out


def validation_result(rec: RunRecord) -> str | None:
    """``passed``/``failed`` from ``validation_report.json`` (mask zeros kept), if the run has one."""
    report = rec.validation
    if not isinstance(report, dict):
        passed = (rec.metrics or {}).get("validation_passed")
        return None if not isinstance(passed, bool) else "passed" if passed else "failed"
    for key in ("passed", "ok", "valid", "keeps_zeros"):
        if isinstance(report.get(key), bool):
            return "passed" if report[key] else "failed"
    return "present"


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) or v is None


def _log_facts(rec: RunRecord) -> dict[str, Any]:
    log = rec.loss_log
    out: dict[str, Any] = {}
    if log is None or not len(log):
        return out
    for col, name, fn in (("train_loss", "final_train_loss", "last"), ("gpu_memory_mb", "log_max_gpu_memory_mb", "max"),
                          ("cpu_rss_mb", "log_max_cpu_rss_mb", "max"), ("tokens_per_sec", "log_mean_tokens_per_sec", "mean")):
        if col in log and pd.api.types.is_numeric_dtype(log[col]) and log[col].notna().any():
            series = log[col].dropna()
            out[name] = float(series.iloc[-1] if fn == "last" else getattr(series, fn)())
    return out


def summary_table(records: list[RunRecord]) -> tuple[pd.DataFrame, list[str]]:
    """(summary, the varying config keys it shows)."""
    varying = varying_keys(records)
    rows = []
    for rec in records:
        row: dict[str, Any] = {"run": rec.rel, "status": rec.status, "last_step": rec.last_step()}
        for col, key in GROUP_COLUMNS.items():
            row[col] = rec.get(key)
        row["seed"] = rec.get("seed")
        for k in varying:
            if k not in GROUP_COLUMNS.values() and k != "seed":
                row[k] = rec.get(k)
        name, value = task_metric(rec.metrics if rec.metrics is not None else rec.eval)
        row["metric"], row["metric_value"] = name, value
        metrics = rec.metrics or {}
        for k in LEADING_METRICS:
            row[k] = metrics.get(k)
        for k in sorted(metrics):
            if k not in row and _scalar(metrics[k]):
                row[k] = metrics[k]
        row.update(benchmark_columns(rec))
        row.update(_log_facts(rec))
        row["validation"] = validation_result(rec)
        row["problems"] = "; ".join(rec.problems) or None
        rows.append(row)
    return pd.DataFrame(rows), varying


def metric_columns(summary: pd.DataFrame) -> list[str]:
    """Numeric outcome columns (what is averaged over seeds)."""
    skip = {"last_step", "seed", *GROUP_COLUMNS}
    firsts = ["metric_value", *LEADING_METRICS]
    cols = [c for c in firsts if c in summary] + [c for c in summary.columns if c not in firsts]
    out = []
    for c in cols:
        if c in skip or c in out or "." in c:
            continue
        if pd.api.types.is_numeric_dtype(summary[c]) and not pd.api.types.is_bool_dtype(summary[c]):
            if summary[c].notna().any():
                out.append(c)
    return out


def group_keys(summary: pd.DataFrame, varying: list[str]) -> list[str]:
    extra = [k for k in varying if k in summary and not is_seed_key(k) and k not in GROUP_COLUMNS.values()]
    return [*GROUP_COLUMNS, *extra, "metric"]


def grouped_table(summary: pd.DataFrame, varying: list[str]) -> pd.DataFrame:
    """Mean and std over seeds of every outcome, per group of finished runs."""
    done = summary[summary["status"] == "finished"]
    keys = group_keys(summary, varying)
    values = metric_columns(summary)
    if done.empty:
        return pd.DataFrame(columns=[*keys, "n_runs", "seeds"])
    rows = []
    for group, frame in done.groupby(keys, dropna=False, sort=True):
        row = dict(zip(keys, group))
        row["n_runs"] = len(frame)
        row["seeds"] = " ".join(str(s) for s in frame["seed"].tolist())
        for c in values:
            col = pd.to_numeric(frame[c], errors="coerce")
            row[f"{c}_mean"] = col.mean()
            row[f"{c}_std"] = col.std(ddof=1)  # NaN for a single run: no spread measured
        rows.append(row)
    return pd.DataFrame(rows)


SPARSITY_COLUMNS = ["run", "model", "task", "adapter", "method", "sparsity_level", "mask_sparsity",
                    "weight_sparsity", "seed", "gate_sparsity",
                    "metric", "metric_value", "val_loss", "trainable_params", "effective_params",
                    "tokens_per_sec", "samples_per_sec", "peak_memory_mb", "validation"]


def sparsity_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per finished run: base-weight mask level and gate sparsity vs. performance and cost."""
    done = summary[summary["status"] == "finished"].copy()
    done["gate_sparsity"] = done["sparsity"] if "sparsity" in done else None
    for c in SPARSITY_COLUMNS:
        if c not in done:
            done[c] = None
    return done[SPARSITY_COLUMNS].reset_index(drop=True)


REUSE_COLUMNS = ["sweep", "trials", "naive_iters", "executed_iters", "saved_iters", "saved_pct", "speedup",
                 "stage_runtime_s", "base_built", "base_hits", "mask_built", "mask_hits"]


def reuse_table(summaries: list[tuple[str, dict[str, Any]]]) -> pd.DataFrame:
    """One row per sweep with a ``reuse_summary.json``: what the cache actually saved."""
    rows = []
    for rel, d in summaries:
        stages, base, mask = d.get("stages") or {}, d.get("base") or {}, d.get("mask") or {}
        rows.append({"sweep": rel, **{k: d.get(k) for k in REUSE_COLUMNS[1:7]},
                     "stage_runtime_s": stages.get("runtime_s"), "base_built": base.get("built"),
                     "base_hits": base.get("hits"), "mask_built": mask.get("built"), "mask_hits": mask.get("hits")})
    return pd.DataFrame(rows, columns=REUSE_COLUMNS)


SEARCH_COLUMNS = ["sweep", "finished", "trials", "jobs", "metric", "mode", "eta", "best_trial", "best_metric",
                  "executed_iters", "exhaustive_reuse_iters", "naive_iters", "executed_vs_exhaustive_reuse",
                  "executed_vs_naive", "device_hours", "wall_s", "best_overrides"]


def search_table(summaries: list[tuple[str, dict[str, Any]]]) -> pd.DataFrame:
    """One row per stage search (``search_summary.json``): the best trial and what it cost."""
    rows = []
    for rel, d in summaries:
        best, opts = d.get("best") or {}, d.get("search") or {}
        rows.append({"sweep": rel, **{k: d.get(k) for k in ("finished", "trials", "jobs", "executed_iters",
                                                             "exhaustive_reuse_iters", "naive_iters",
                                                             "executed_vs_exhaustive_reuse", "executed_vs_naive",
                                                             "device_hours", "wall_s")},
                     "metric": opts.get("metric"), "mode": opts.get("mode"), "eta": opts.get("eta"),
                     "best_trial": best.get("trial"), "best_metric": best.get("metric"),
                     "best_overrides": " ".join(best.get("overrides") or [])})
    return pd.DataFrame(rows, columns=SEARCH_COLUMNS)


def search_log_table(logs: list[tuple[str, list[dict[str, str]]]]) -> pd.DataFrame:
    """Every evaluation of every stage search (``search_log.csv`` rows with their sweep)."""
    frames = [pd.DataFrame(rows).assign(sweep=rel) for rel, rows in logs if rows]
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    return df[["sweep", *[c for c in df.columns if c != "sweep"]]]
