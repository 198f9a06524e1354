"""Cost and agreement of lm-eval's scoring (final numbers) vs ftlab's fast scorer (training time).

    python benchmarks/evaluation.py [--task hellaswag|boolq] [--examples 64] [--rounds 3]
                                    [--batch-size 16] [--threads 1] [OVERRIDES...]

Both score the same generated file in the task's published schema with the same tiny model
(``compose_run`` with the given overrides): ftlab's ``choice_log_likelihoods`` and lm-eval through
``ftlab.harness.score_benchmarks`` (lm-eval's installed config, the task's ``task.path`` route). Timing is interleaved over rounds (median reported), and the ratio
is lm-eval's time over ftlab's measured in the same invocation. Agreement: the fraction of
examples where both pick the same choice (``acc`` and, for HellaSwag, ``acc_norm``) - the fast
scorer renders the same prompts and normalises the same way, so 1.0 is expected.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from ftlab.data.tasks import harness_task  # noqa: E402
from ftlab.evaluation.scoring import choice_log_likelihoods  # noqa: E402
from ftlab.harness.data import run_task_benchmark, whole_file_files  # noqa: E402
from ftlab.harness.score import score_benchmarks  # noqa: E402
from ftlab.models import build_model, build_tokenizer  # noqa: E402
from ftlab.preflight.compose import compose_run  # noqa: E402
from real_task_files import boolq_rows, hellaswag_rows, write_jsonl  # noqa: E402

ROWS = {"boolq": boolq_rows, "hellaswag": hellaswag_rows}


def argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--task", choices=sorted(ROWS), default="hellaswag")
    p.add_argument("--examples", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    args, overrides = p.parse_known_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_jsonl(Path(tmp) / f"{args.task}.jsonl", ROWS[args.task](args.examples, seed=0))
        cfg = compose_run([f"task={args.task}", f"task.path={path}", *overrides])
        tok = build_tokenizer(cfg.model)
        model = build_model(cfg.model, tok, seed=0).eval()
        bench = run_task_benchmark(cfg, whole_file_files(cfg.task, Path(tmp) / "files"))
        examples = harness_task(args.task)(cfg.task).load_file(path)
        times: dict[str, list[float]] = {"ftlab": [], "lm-eval": []}
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            ours = choice_log_likelihoods(model, tok, examples, 4096, args.batch_size)
            times["ftlab"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            theirs = score_benchmarks(model, tok, [bench], batch_size=args.batch_size)[bench.name]
            times["lm-eval"].append(time.perf_counter() - t0)
    samples = {s["doc_id"]: s for s in theirs.samples}
    agree = {"acc": 0, "acc_norm": 0}
    for i, (ex, lls) in enumerate(zip(examples, ours)):
        agree["acc"] += float(argmax(lls) == ex.label) == samples[i]["acc"]
        if "acc_norm" in samples[i]:
            normed = [v / len(c.removeprefix(" ")) for v, c in zip(lls, ex.choices)]
            agree["acc_norm"] += float(argmax(normed) == ex.label) == samples[i]["acc_norm"]
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.task}: {len(examples)} examples, batch {args.batch_size}, {args.rounds} rounds (median)")
    print(f"  ftlab fast scorer {med['ftlab']:.3f}s   lm-eval {med['lm-eval']:.3f}s   "
          f"ratio lm-eval/ftlab = {med['lm-eval'] / med['ftlab']:.2f}x")
    for k, n in agree.items():
        if k == "acc" or args.task == "hellaswag":
            print(f"  per-example agreement on {k}: {n / len(examples):.3f}")


if __name__ == "__main__":
    main()
