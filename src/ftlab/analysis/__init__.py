"""Read finished (and unfinished) runs and turn them into tables and plots; never trains.

``analyze(root)`` is the whole pipeline behind ``python -m ftlab.analyze DIR``: find run dirs ->
read their files (:mod:`.runs`) -> build the tables (:mod:`.tables`) -> optionally draw the plots
(:mod:`.plots`) -> publish everything into the output dir at once.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ftlab.analysis.runs import (
    RunRecord,
    find_reuse_summaries,
    find_run_dirs,
    find_summaries,
    load_runs,
    load_search_logs,
)
from ftlab.analysis.tables import (
    grouped_table,
    reuse_table,
    search_log_table,
    search_table,
    sparsity_table,
    summary_table,
)
from ftlab.core.errors import FtlabError

TABLES = ("summary.csv", "grouped_summary.csv", "sparsity_vs_performance.csv")
#: written when the tree holds sweeps with ``reuse_summary.json``
REUSE_TABLE = "reuse_summary.csv"
#: written when the tree holds stage searches (``search_summary.json``, ``search_log.csv``)
SEARCH_TABLES = ("search_summary.csv", "search_log.csv")


@dataclass
class Analysis:
    out: Path
    records: list[RunRecord]
    summary: pd.DataFrame
    grouped: pd.DataFrame
    sparsity: pd.DataFrame
    reuse: pd.DataFrame
    files: list[Path]
    search: pd.DataFrame | None = None
    search_log: pd.DataFrame | None = None

    @property
    def unfinished(self) -> list[RunRecord]:
        return [r for r in self.records if not r.finished]


def analyze(root: Path, out: Path | None = None, plot: bool = False) -> Analysis:
    """Tables (and plots) of every run dir under ``root``, written to ``out`` (default
    ``root/analysis``). Files are built in a temporary dir and moved into place only when all
    of them succeeded, so a failure leaves no partial set behind."""
    root = Path(root)
    if not root.is_dir():
        raise FtlabError(f"{root}: not a directory")
    out = Path(out) if out is not None else root / "analysis"
    records = load_runs(root)
    if not records:
        raise FtlabError(f"{root}: no run dirs found (a run dir holds config.yaml, metrics.json or loss_log.csv)")
    summary, varying = summary_table(records)
    grouped = grouped_table(summary, varying)
    sparsity = sparsity_table(summary)
    reuse = reuse_table(find_reuse_summaries(root))
    search = search_table(find_summaries(root, "search_summary.json"))
    search_log = search_log_table(load_search_logs(root))
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".analysis-", dir=out))
    try:
        summary.to_csv(staging / TABLES[0], index=False)
        grouped.to_csv(staging / TABLES[1], index=False)
        sparsity.to_csv(staging / TABLES[2], index=False)
        if len(reuse):
            reuse.to_csv(staging / REUSE_TABLE, index=False)
        if len(search):
            search.to_csv(staging / SEARCH_TABLES[0], index=False)
        if len(search_log):
            search_log.to_csv(staging / SEARCH_TABLES[1], index=False)
        if plot:
            from ftlab.analysis.plots import all_plots  # matplotlib (heavy, optional): only with plots

            all_plots(records, summary, staging / "plots")
        files = []
        for src in sorted(staging.rglob("*")):
            if src.is_file():
                dst = out / src.relative_to(staging)
                dst.parent.mkdir(parents=True, exist_ok=True)
                src.replace(dst)
                files.append(dst)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Analysis(out, records, summary, grouped, sparsity, reuse, files, search, search_log)


__all__ = ["Analysis", "RunRecord", "TABLES", "analyze", "find_run_dirs", "load_runs"]
