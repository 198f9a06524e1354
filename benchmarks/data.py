"""Tokenized data as a cached step: build time, hit time and resident memory on a generated Alpaca set.

    python benchmarks/data.py [--n 100000] [--dir DIR]

Writes ``--n`` generated Alpaca rows (``instruction``/``input``/``output``) to a JSONL file and
measures, on the byte tokenizer of the tiny presets (``task=instruct``, the default config):

- build: the ``data`` step on an empty reuse store (tokenize train+val, write the numpy artifact,
  read it back memory-mapped), through the run's own ``StepRunner``;
- hit: the same step from a second runner (the store's entry, memory-mapped);
- resident memory: a fresh process sets up the run's data module (read, split, tokenize or fetch),
  once on the cached set and once as a list-of-examples load (no runner: every example's
  ``Encoded`` lists in Python); its resident set (``VmRSS``) once the data is held, minus that of
  a process that only imported the same modules and built the tokenizer.

Targets of issue 24: hit <= 5 % of build; RSS on the cached set <= 0.5 x the list load (the
RSS lines print the data-attributable part, over the import baseline, and the whole process).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HIT_TARGET, RSS_TARGET = 0.05, 0.5


def write_alpaca(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"]
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
            row = {"instruction": f"Rewrite in upper case: {text}", "input": "" if i % 2 else f"item {i}",
                   "output": text.upper()}
            fh.write(json.dumps(row) + "\n")


def overrides(data: Path, cache: Path) -> list[str]:
    return ["task=instruct", f"task.path={data}", "train.batch_size=32", f"paths.cache_dir={cache}",
            "task.max_length=256"]


def child(mode: str, data: str, cache: str) -> None:
    """One RSS measurement in this (fresh) process: ``base`` imports only."""
    from ftlab.data.datamodule import TaskDataModule
    from ftlab.models import build_tokenizer
    from ftlab.preflight.compose import compose_run
    from ftlab.reuse.runner import StepRunner

    cfg = compose_run(overrides(Path(data), Path(cache)))
    tok = build_tokenizer(cfg.model)
    if mode != "base":
        dm = TaskDataModule(cfg, tok, runner=StepRunner(cfg) if mode == "cached" else None)
        dm.setup()
        gc.collect()
    status = Path("/proc/self/status").read_text().splitlines()
    print(int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) / 1024)


def rss(mode: str, data: Path, cache: Path) -> float:
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(data), str(cache)], capture_output=True,
                         text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000, help="generated Alpaca examples")
    p.add_argument("--dir", default=None, help="work dir (default: a temporary one)")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(*args.child)
        return
    from ftlab.data.tasks import build_task
    from ftlab.data.tokenized import tokenized_data
    from ftlab.models import build_tokenizer
    from ftlab.preflight.compose import compose_run
    from ftlab.reuse.runner import StepRunner

    with tempfile.TemporaryDirectory(prefix="ftlab-data-bench-") as tmp:
        work = Path(args.dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        data, cache = work / "alpaca.jsonl", work / "cache"
        write_alpaca(data, args.n)
        cfg = compose_run(overrides(data, cache))
        tok = build_tokenizer(cfg.model)
        t0 = time.perf_counter()
        splits = build_task(cfg.task).splits(int(cfg.seed))
        read_s = time.perf_counter() - t0
        times = []
        for _ in range(2):
            runner = StepRunner(cfg)
            t0 = time.perf_counter()
            out = tokenized_data(cfg, tok, splits, runner)
            times.append(time.perf_counter() - t0)
            assert runner.records["data"]["cache_hit"] is (len(times) == 2)
        build_s, hit_s = times
        n_tokens = int(out["train"].offsets[-1]) + int(out["val"].offsets[-1])
        print(f"examples: {args.n} ({len(out['train'])} train, {len(out['val'])} val, {n_tokens} tokens); "
              f"read+split (both paths): {read_s:.2f} s")
        ratio = hit_s / build_s
        print(f"data step build: {build_s:.3f} s; hit: {hit_s:.4f} s; hit/build = {ratio:.4f} "
              f"({'ok' if ratio <= HIT_TARGET else 'over'} target <= {HIT_TARGET})")
        base = rss("base", data, cache)
        listed = rss("list", data, cache)
        cached = rss("cached", data, cache)
        r = (cached - base) / max(1e-9, listed - base)
        print(f"RSS: imports only {base:.0f} MB; list-of-examples load {listed:.0f} MB; cached set "
              f"{cached:.0f} MB")
        print(f"data-attributable RSS cached/list = {cached - base:.0f}/{listed - base:.0f} MB = {r:.2f}x "
              f"({'ok' if r <= RSS_TARGET else 'over'} target <= {RSS_TARGET}); whole process "
              f"{cached / listed:.2f}x")


if __name__ == "__main__":
    main()
