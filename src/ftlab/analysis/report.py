"""What ``python -m ftlab.analyze`` prints and the benchmark table it writes, kept out of the command
so that the command only parses arguments and a caller (a notebook, a script) gets the same lines."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ftlab.analysis import Analysis
from ftlab.analysis.benchmarks import benchmark_table, to_markdown
from ftlab.core.errors import FtlabError


def paper_table(result: Analysis, root: Path) -> pd.DataFrame:
    """The runs' lm-eval scores as a paper prints them; a tree without any is an error naming ``root``."""
    paper = benchmark_table(result.records)
    if paper.empty:
        raise FtlabError(f"--table benchmarks: no run under {root} has lm-eval benchmark scores "
                         f"(runs set eval.suite=NAME or eval.benchmarks=[...])")
    return paper


def write_paper_table(paper: pd.DataFrame, out: Path) -> tuple[str, list[Path]]:
    """``benchmarks.csv`` and ``benchmarks.md`` under ``out``; returns the Markdown and the files."""
    markdown = to_markdown(paper)
    paper.to_csv(out / "benchmarks.csv", index=False)
    (out / "benchmarks.md").write_text(markdown)
    return markdown, [out / "benchmarks.csv", out / "benchmarks.md"]


def summary_lines(result: Analysis, root: Path) -> list[str]:
    """Runs found (finished / unfinished and where each unfinished one stopped), their warnings,
    the summary table, and each sweep's reuse and stage-search result."""
    done = len(result.records) - len(result.unfinished)
    lines = [f"{len(result.records)} run(s) under {root}: {done} finished, {len(result.unfinished)} unfinished"]
    for rec in result.unfinished:
        step = rec.last_step()
        where = f"last logged step {step}" if step is not None else "no steps logged"
        lines.append(f"  unfinished: {rec.rel} (no metrics.json; {where})")
    for rec in result.records:
        for problem in rec.problems:
            lines.append(f"  warning: {rec.rel}: {problem}")
    cols = [c for c in ("run", "status", "metric", "metric_value", "val_loss", "sparsity", "tokens_per_sec",
                        "train_time_s") if c in result.summary]
    lines.append(result.summary[cols].to_string(index=False, max_colwidth=40))
    for _, row in result.reuse.iterrows():
        lines.append(f"reuse in {row['sweep']}: {row['trials']} trials, {row['executed_iters']} of "
                     f"{row['naive_iters']} iterations executed ({row['speedup']:.2f}x)")
    if result.search is not None:
        for _, row in result.search.iterrows():
            lines.append(f"stage search in {row['sweep']}: best trial {row['best_trial']} {row['metric']}="
                         f"{row['best_metric']} ({row['executed_iters']} iterations executed; exhaustive with "
                         f"reuse {row['exhaustive_reuse_iters']}, naive {row['naive_iters']}): "
                         f"{row['best_overrides']}")
    return lines
