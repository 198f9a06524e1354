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
from ftlab.analysis.benchmarks import benchmark_table, to_markdown
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
        paper = benchmark_table(result.records) if args.table == "benchmarks" else None
        if paper is not None and paper.empty:
            raise FtlabError(f"--table benchmarks: no run under {args.dir} has lm-eval benchmark scores "
                             f"(runs set eval.suite=NAME or eval.benchmarks=[...])")
    except FtlabError as err:
        return report_error(err)
    done = len(result.records) - len(result.unfinished)
    print(f"{len(result.records)} run(s) under {args.dir}: {done} finished, {len(result.unfinished)} unfinished")
    for rec in result.unfinished:
        step = rec.last_step()
        where = f"last logged step {step}" if step is not None else "no steps logged"
        print(f"  unfinished: {rec.rel} (no metrics.json; {where})")
    for rec in result.records:
        for problem in rec.problems:
            print(f"  warning: {rec.rel}: {problem}")
    cols = [c for c in ("run", "status", "metric", "metric_value", "val_loss", "sparsity", "tokens_per_sec",
                        "train_time_s") if c in result.summary]
    print(result.summary[cols].to_string(index=False, max_colwidth=40))
    for _, row in result.reuse.iterrows():
        print(f"reuse in {row['sweep']}: {row['trials']} trials, {row['executed_iters']} of {row['naive_iters']} "
              f"iterations executed ({row['speedup']:.2f}x)")
    if result.search is not None:
        for _, row in result.search.iterrows():
            print(f"stage search in {row['sweep']}: best trial {row['best_trial']} {row['metric']}={row['best_metric']} "
                  f"({row['executed_iters']} iterations executed; exhaustive with reuse {row['exhaustive_reuse_iters']}, "
                  f"naive {row['naive_iters']}): {row['best_overrides']}")
    files = list(result.files)
    if paper is not None:
        markdown = to_markdown(paper)
        paper.to_csv(result.out / "benchmarks.csv", index=False)
        (result.out / "benchmarks.md").write_text(markdown)
        files += [result.out / "benchmarks.csv", result.out / "benchmarks.md"]
        print(markdown, end="")
    for f in files:
        print(f"wrote {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
