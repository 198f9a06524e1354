"""``python -m ftlab.analyze DIR [--plot] [--out OUT]``: tables and plots over a tree of run dirs.

Writes ``summary.csv``, ``grouped_summary.csv`` and ``sparsity_vs_performance.csv`` (and with
``--plot`` PNGs under ``plots/``) into ``DIR/analysis`` unless ``--out`` says otherwise. Runs
without ``metrics.json`` are listed as unfinished on stdout and in ``summary.csv``.
``--table benchmarks`` also writes ``benchmarks.csv`` and ``benchmarks.md`` (rows = runs, the
control first; columns = lm-eval benchmarks ± stderr and the suite average) and prints the latter.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ftlab.analysis import analyze
from ftlab.analysis.report import paper_table, summary_lines, write_paper_table
from ftlab.core.errors import FtlabError, report_error


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ftlab.analyze", description=__doc__.splitlines()[0])
    p.add_argument("dir", type=Path, help="a run dir, a sweep dir, or any tree of them")
    p.add_argument("--plot", action="store_true", help="also write PNG plots under OUT/plots/")
    p.add_argument("--out", type=Path, default=None, help="output dir (default: DIR/analysis)")
    p.add_argument("--table", choices=("benchmarks",), default=None,
                   help="benchmarks: the paper table of the runs' lm-eval scores (CSV + Markdown)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        result = analyze(args.dir, args.out, plot=args.plot)
        paper = paper_table(result, args.dir) if args.table == "benchmarks" else None
    except FtlabError as err:
        return report_error(err)
    print("\n".join(summary_lines(result, args.dir)))
    files = list(result.files)
    if paper is not None:
        markdown, written = write_paper_table(paper, result.out)
        files += written
        print(markdown, end="")
    for f in files:
        print(f"wrote {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
