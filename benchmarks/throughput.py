"""Throughput and peak memory vs batch size (``+experiment=throughput`` once per batch size).

    python benchmarks/throughput.py [--batch-sizes 1,2,4,8,16] [--out DIR] [OVERRIDES...]

Each batch size runs in a fresh ``python -m ftlab`` process (so peak memory is that run's own),
for the experiment's fixed number of steps. Per batch size it reports samples/s and tokens/s
over the whole fit (``metrics.json``) and in steady state (``loss_log.csv`` windows after the
first, which holds the warm-up), plus peak memory; ratios are against the first batch size,
measured in the same invocation. Writes ``throughput.csv`` and ``throughput.png`` into the out
dir (default ``experiments/throughput/<timestamp>``), next to the run dirs ``bs<N>/``, which
``python -m ftlab.plan`` then uses as prior runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

COLUMNS = ["batch_size", "steps", "train_time_s", "samples_per_sec", "tokens_per_sec", "steady_samples_per_sec",
           "steady_tokens_per_sec", "peak_memory_mb", "samples_per_sec_ratio", "steady_samples_per_sec_ratio",
           "peak_memory_ratio", "run_dir"]


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", default="1,2,4,8,16", help="comma list, e.g. 1,2,4,8 (first = baseline)")
    p.add_argument("--out", type=Path, default=None, help="default experiments/throughput/<timestamp>")
    p.add_argument("--experiment", default="throughput")
    args, overrides = p.parse_known_args(argv)
    try:
        args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    except ValueError:
        p.error(f"--batch-sizes={args.batch_sizes!r}: a comma list of integers >= 1")
    if not args.batch_sizes or min(args.batch_sizes) < 1:
        p.error(f"--batch-sizes={args.batch_sizes!r}: a comma list of integers >= 1")
    return args, overrides


def steady_tokens_per_sec(loss_log: Path) -> float | None:
    """Mean windowed tokens/s without the first window (model build, first-step allocation)."""
    if not loss_log.is_file():
        return None
    with open(loss_log, newline="") as fh:
        values = [float(r["tokens_per_sec"]) for r in csv.DictReader(fh) if r.get("tokens_per_sec")]
    values = values[1:] if len(values) > 1 else values
    return sum(values) / len(values) if values else None


def measure(bs: int, run_dir: Path, experiment: str, overrides: list[str]) -> dict:
    cmd = [sys.executable, "-m", "ftlab", f"+experiment={experiment}", *overrides, f"train.batch_size={bs}",
           f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"batch size {bs} failed (exit {proc.returncode}): {tail}")
    m = json.loads((run_dir / "metrics.json").read_text())
    tokens_per_sample = m["tokens_per_sec"] / m["samples_per_sec"] if m.get("samples_per_sec") else None
    steady_tok = steady_tokens_per_sec(run_dir / "loss_log.csv")
    return {
        "batch_size": bs, "steps": m.get("train_steps"), "train_time_s": m.get("train_time_s"),
        "samples_per_sec": m.get("samples_per_sec"), "tokens_per_sec": m.get("tokens_per_sec"),
        "steady_tokens_per_sec": steady_tok,
        "steady_samples_per_sec": steady_tok / tokens_per_sample if steady_tok and tokens_per_sample else None,
        "peak_memory_mb": m.get("peak_memory_mb"), "run_dir": str(run_dir),
    }


def add_ratios(rows: list[dict]) -> None:
    base = rows[0]
    for r in rows:
        for col, ratio in (("samples_per_sec", "samples_per_sec_ratio"),
                           ("steady_samples_per_sec", "steady_samples_per_sec_ratio"),
                           ("peak_memory_mb", "peak_memory_ratio")):
            r[ratio] = r[col] / base[col] if r.get(col) and base.get(col) else None


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bs = [r["batch_size"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax1.plot(bs, [r["samples_per_sec"] for r in rows], "o-", label="samples/s (whole fit)")
    ax1.plot(bs, [r["steady_samples_per_sec"] for r in rows], "s--", label="samples/s (steady)")
    ax1b = ax1.twinx()
    ax1b.plot(bs, [r["steady_tokens_per_sec"] for r in rows], "^:", color="tab:green", label="tokens/s (steady)")
    ax1.set(xscale="log", xlabel="batch size", ylabel="samples / s", title="Throughput")
    ax1b.set_ylabel("tokens / s")
    ax1.set_xticks(bs, [str(b) for b in bs])
    ax1.legend(loc="upper left", fontsize=8)
    ax1b.legend(loc="lower right", fontsize=8)
    ax2.plot(bs, [r["peak_memory_mb"] for r in rows], "o-", color="tab:red")
    ax2.set(xscale="log", xlabel="batch size", ylabel="peak memory (MiB)", title="Peak memory")
    ax2.set_xticks(bs, [str(b) for b in bs])
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    out = args.out or Path("experiments") / "throughput" / time.strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for bs in args.batch_sizes:
        rows.append(measure(bs, out / f"bs{bs}", args.experiment, overrides))
        r = rows[-1]
        print(f"batch {bs:>4}: {r['samples_per_sec']:.1f} samples/s, {r['steady_tokens_per_sec'] or 0:.0f} tokens/s "
              f"(steady), peak {r['peak_memory_mb']:.0f} MiB", flush=True)
    add_ratios(rows)
    with open(out / "throughput.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    plot(rows, out / "throughput.png", f"+experiment={args.experiment} {' '.join(overrides)}".strip())
    base = rows[0]["batch_size"]
    print(f"\nratios vs batch size {base} (same invocation):")
    print(f"{'batch':>6} {'samples/s':>10} {'steady':>8} {'memory':>8}")
    for r in rows:
        fmt = [f"{r[c]:.2f}x" if r[c] is not None else "n/a"
               for c in ("samples_per_sec_ratio", "steady_samples_per_sec_ratio", "peak_memory_ratio")]
        print(f"{r['batch_size']:>6} {fmt[0]:>10} {fmt[1]:>8} {fmt[2]:>8}")
    print(f"wrote {out / 'throughput.csv'} and {out / 'throughput.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
