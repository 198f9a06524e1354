"""The paper table: one row per run, one column per lm-eval benchmark, and the suite average.

Rows are named by the config keys that distinguish the runs (``adapter.name=dora adapter.r=16``);
the control (a run whose adapter trains nothing, ``adapter=none``) comes first. Each benchmark
column holds the value of the variant lm-eval reports first for the task (``acc`` for PIQA, see
``metrics.json``'s ``benchmarks``) with its stderr; ``average`` is the run's suite average (the
unweighted mean over the suite's tasks), else the unweighted mean over the columns it has.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ftlab.adapters.registry import get_adapter
from ftlab.analysis.runs import RunRecord
from ftlab.analysis.tables import is_seed_key, varying_keys


def _is_control(rec: RunRecord) -> bool:
    name = rec.config.get("adapter.name")
    return name is not None and not get_adapter(str(name)).trains


def row_name(rec: RunRecord, keys: list[str]) -> str:
    parts = [f"{k}={rec.config.get(k)}" for k in keys if k in rec.config]
    return " ".join(parts) or rec.rel


def distinguishing_keys(records: list[RunRecord]) -> list[str]:
    """Config keys (not seeds) whose value differs between runs that have them: an adapter's own
    keys (``adapter.r``) name rows only where two runs set them differently."""
    if len(records) < 2:
        return []
    out = []
    for key in varying_keys(records):
        values = {repr(r.config[key]) for r in records if key in r.config}
        if not is_seed_key(key) and len(values) > 1:
            out.append(key)
    return out


def benchmark_table(records: list[RunRecord]) -> pd.DataFrame:
    """``run, <task>, <task>_stderr, ..., average`` (+ ``variant`` names in ``attrs['variants']``)."""
    scored = [r for r in records if (r.metrics or {}).get("benchmarks")]
    keys = distinguishing_keys(scored)
    scored.sort(key=lambda r: (not _is_control(r), r.rel))
    tasks: dict[str, str] = {}
    rows = []
    for rec in scored:
        bench: dict[str, Any] = rec.metrics["benchmarks"]
        row: dict[str, Any] = {"run": row_name(rec, keys), "dir": rec.rel}
        for task, s in bench.items():
            tasks.setdefault(task, s["headline"])
            row[task], row[f"{task}_stderr"] = s["value"], s["stderr"]
        values = [s["value"] for s in bench.values()]
        row["average"] = rec.metrics.get("benchmark_average", sum(values) / len(values))
        rows.append(row)
    cols = ["run", *[c for t in tasks for c in (t, f"{t}_stderr")], "average", "dir"]
    table = pd.DataFrame(rows, columns=cols)
    table.attrs["variants"] = tasks
    return table


def _cell(value: Any, stderr: Any) -> str:
    if value is None or pd.isna(value):
        return "-"
    return f"{value:.4f}" if stderr is None or pd.isna(stderr) else f"{value:.4f} ± {stderr:.4f}"


def to_markdown(table: pd.DataFrame) -> str:
    """The table as papers print it: ``value ± stderr`` per benchmark, the metric under its name."""
    tasks: dict[str, str] = table.attrs.get("variants", {})
    head = ["run", *[f"{t} ({v})" for t, v in tasks.items()], "average"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in table.iterrows():
        cells = [str(row["run"]), *[_cell(row[t], row[f"{t}_stderr"]) for t in tasks], _cell(row["average"], None)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


__all__ = ["benchmark_table", "distinguishing_keys", "row_name", "to_markdown"]
