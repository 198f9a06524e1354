"""Evaluation time of a 9-job sweep with and without the evaluation cache.

    python benchmarks/evaluation_cache.py [--rows 40] [--threads 1] [OVERRIDES...]

The sweep: job 0 is the control (``adapter=none``: the base model), jobs 1-8 each evaluate their
base (``eval.control=true``) and their trained model; jobs 7 and 8 trained bitwise-equal tensors.
Training is not timed: each job's trained model is the base with a seeded perturbation of its
attention projections (jobs 7 and 8 share the seed). Every evaluation scores PIQA (a generated
file in the HF layout) with lm-eval: without the cache 1 + 8 + 8 = 17 lm-eval runs, with it
1 (base) + 7 (distinct trained models) = 8. Both orders are measured in the same invocation, the
cache in a fresh directory; the ratio is uncached time over cached time.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from ftlab.data.benchmark_files import resolve  # noqa: E402
from ftlab.harness.eval_cache import cached_scores  # noqa: E402
from ftlab.harness.score import Benchmark, score_benchmarks  # noqa: E402
from ftlab.models import build_model, build_tokenizer  # noqa: E402
from ftlab.preflight.compose import compose_run  # noqa: E402
from real_task_files import piqa_rows, write_jsonl  # noqa: E402

JOB_SEEDS = [None, 1, 2, 3, 4, 5, 6, 7, 7]  # None: the control; the last two jobs train the same tensors


def trained(base: torch.nn.Module, seed: int) -> torch.nn.Module:
    model = copy.deepcopy(base)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "q_proj" in name or "v_proj" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 1e-2)
    return model


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=40)
    p.add_argument("--threads", type=int, default=1)
    args, overrides = p.parse_known_args()
    torch.set_num_threads(args.threads)
    cfg = compose_run(overrides)
    tok = build_tokenizer(cfg.model)
    base = build_model(cfg.model, tok, seed=0).eval()
    models = {seed: trained(base, seed) for seed in set(JOB_SEEDS) - {None}}
    # every job's evaluations in sweep order: the control's base, then each job's base and its model
    evaluations = [base] + [m for seed in JOB_SEEDS[1:] for m in (base, models[seed])]
    with tempfile.TemporaryDirectory() as tmp:
        path = write_jsonl(Path(tmp) / "valid.jsonl", piqa_rows(args.rows, seed=0))
        bench = Benchmark("piqa", resolve("eval.data.piqa", str(path)), "eval.data.piqa")
        score_benchmarks(base, tok, [bench], batch_size=16)  # warm-up: lm-eval's task index, imports
        t0 = time.perf_counter()
        plain = [score_benchmarks(m, tok, [bench], batch_size=16)["piqa"].headline["value"] for m in evaluations]
        uncached = time.perf_counter() - t0
        events: list[dict] = []
        t0 = time.perf_counter()
        cached = [cached_scores(m, tok, [bench], batch_size=16, cache_dir=Path(tmp) / "cache",
                                events=events)["piqa"].headline["value"] for m in evaluations]
        with_cache = time.perf_counter() - t0
    assert plain == cached, "cached scores differ from fresh ones"
    runs = sum(not e["hit"] for e in events)
    print(f"9-job sweep (1 control, jobs 7 and 8 identical), {len(evaluations)} evaluations of PIQA ({args.rows} rows)")
    print(f"  without cache: {len(evaluations)} lm-eval runs, {uncached:.2f}s")
    print(f"  with cache:    {runs} lm-eval runs, {with_cache:.2f}s ({len(evaluations) - runs} hits)")
    print(f"  ratio without/with = {uncached / with_cache:.2f}x")


if __name__ == "__main__":
    main()
