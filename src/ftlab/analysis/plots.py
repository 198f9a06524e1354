"""PNG plots of a set of runs. Each function draws one figure and returns the file it wrote,
or ``None`` when no run has the data it needs (a figure with nothing on it is not written)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ftlab.analysis.runs import RunRecord  # noqa: E402

#: legend entries beyond this are dropped (the lines stay)
MAX_LEGEND = 16
DPI = 100


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _curves(records: list[RunRecord], column: str, path: Path, ylabel: str, title: str,
            logy: bool = False) -> Path | None:
    series = [(r.rel, r.loss_log) for r in records
              if r.loss_log is not None and column in r.loss_log and "step" in r.loss_log
              and pd.api.types.is_numeric_dtype(r.loss_log[column]) and r.loss_log[column].notna().any()]
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (label, log) in enumerate(series):
        ax.plot(log["step"], log[column], label=label if i < MAX_LEGEND else None)
    ax.set(xlabel="step", ylabel=ylabel, title=title)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def loss_curves(records: list[RunRecord], path: Path) -> Path | None:
    return _curves(records, "train_loss", path, "train loss", "Training loss")


def lr_schedule(records: list[RunRecord], path: Path) -> Path | None:
    return _curves(records, "learning_rate", path, "learning rate", "Learning-rate schedule")


def memory_curves(records: list[RunRecord], path: Path) -> Path | None:
    """Device memory where the runs had a GPU, process RSS otherwise."""
    def has(col: str) -> bool:
        return any(r.loss_log is not None and col in r.loss_log
                   and pd.api.types.is_numeric_dtype(r.loss_log[col]) and (r.loss_log[col].fillna(0) > 0).any()
                   for r in records)

    column = "gpu_memory_mb" if has("gpu_memory_mb") else "cpu_rss_mb" if has("cpu_rss_mb") else None
    if column is None:
        return None
    return _curves(records, column, path, f"{column} (MiB)", "Memory over steps")


def scatter(summary: pd.DataFrame, x: str, y: str, path: Path, xlabel: str, ylabel: str, title: str) -> Path | None:
    if x not in summary or y not in summary:
        return None
    data = summary[[x, y, "adapter"]].apply(pd.to_numeric, errors="coerce").assign(adapter=summary["adapter"])
    data = data.dropna(subset=[x, y])
    if data.empty:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for adapter, frame in data.groupby("adapter", dropna=False):
        ax.scatter(frame[x], frame[y], label=str(adapter))
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="adapter")
    return _save(fig, path)


def run_sparsity(summary: pd.DataFrame) -> pd.Series:
    """One sparsity number per run for the x axis: gate sparsity if gated, else the base mask's
    measured sparsity, else its configured level."""
    out = pd.Series(index=summary.index, dtype=float)
    for col in ("sparsity", "mask_sparsity", "sparsity_level"):
        if col in summary:
            out = out.fillna(pd.to_numeric(summary[col], errors="coerce"))
    return out


def sparsity_vs(summary: pd.DataFrame, y: str, path: Path, ylabel: str, title: str) -> Path | None:
    done = summary[summary["status"] == "finished"].assign(run_sparsity=lambda f: run_sparsity(f))
    return scatter(done, "run_sparsity", y, path, "sparsity (gates, else base mask)", ylabel, title)


def gate_heatmap(rec: RunRecord, path: Path) -> Path | None:
    """Per-layer fraction of zero gates (rows) over logged steps (columns)."""
    log = rec.sparsity_log
    if log is None or "step" not in log or not len(log):
        return None
    layers = [c for c in log.columns if c not in ("epoch", "step", "overall_sparsity")
              and pd.api.types.is_numeric_dtype(log[c])]
    if not layers:
        return None
    grid = log[layers].to_numpy(dtype=float).T
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.22 * len(layers) + 1.5)))
    im = ax.imshow(grid, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0.0, vmax=1.0)
    steps = log["step"].to_numpy()
    ticks = np.linspace(0, len(steps) - 1, min(len(steps), 8)).astype(int)
    ax.set_xticks(ticks, [str(int(steps[t])) for t in ticks])
    ax.set_yticks(range(len(layers)), layers, fontsize=6 if len(layers) > 20 else 8)
    ax.set(xlabel="step", title=f"Gate sparsity per layer: {rec.rel}")
    fig.colorbar(im, ax=ax, label="fraction of zero gates")
    return _save(fig, path)


def safe_name(rel: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in rel).strip("_") or "run"


def all_plots(records: list[RunRecord], summary: pd.DataFrame, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    made = [
        loss_curves(records, out / "loss_curves.png"),
        lr_schedule(records, out / "lr_schedule.png"),
        memory_curves(records, out / "memory.png"),
        sparsity_vs(summary, "metric_value", out / "sparsity_vs_metric.png", "task metric",
                    "Sparsity vs task metric"),
        sparsity_vs(summary, "tokens_per_sec", out / "sparsity_vs_throughput.png", "tokens / s",
                    "Sparsity vs throughput"),
    ]
    for rec in records:
        made.append(gate_heatmap(rec, out / f"gate_sparsity_{safe_name(rec.rel)}.png"))
    return [p for p in made if p is not None]
