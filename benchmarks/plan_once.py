"""The plan of steps computed once per run: what a run pays to plan, before (the checks and the
run each computed it) and after (the run takes the checks' plan, :mod:`ftlab.reuse.handover`).

    python benchmarks/plan_once.py [--mb 64] [--repeat 5]

Composes ``task=instruct`` with a generated JSONL file of ``--mb`` MB (the data enter the train and
data keys by content) and a sparse base, in one process, ``--repeat`` times on fresh copies of the
file (a new file: its content hash is not cached yet, as in a new run):

- before: ``run_steps`` in the composition checks, then ``run_steps`` again in the run;
- after: ``plan_for_checks`` in the checks, ``plan_for_run`` in the run.

A data file is hashed once per process either way (hashes are cached per path, size and mtime),
so the second plan of "before" costs the spec look-ups and key hashing, not the file again.
Prints the median time of each and the ratio after / before, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from ftlab.preflight.compose import compose_config
from ftlab.reuse.handover import plan_for_checks, plan_for_run
from ftlab.reuse.steps import as_plain, run_steps


def write_rows(path: Path, mb: int) -> None:
    row = json.dumps({"prompt": "Capitalize: " + "word " * 20, "answer": "WORD " * 20}) + "\n"
    with open(path, "w") as fh:
        fh.write(row * max(1, mb * 2**20 // len(row)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "rows.jsonl"
        write_rows(source, args.mb)
        before, after = [], []
        for i in range(args.repeat):
            for label, out in (("before", before), ("after", after)):
                path = Path(tmp) / f"{label}{i}.jsonl"
                shutil.copy(source, path)  # a new file: hashed anew
                c = as_plain(compose_config(["task=instruct", f"task.path={path}", "task.format=prompt_answer",
                                             "sparsity=unstructured", "sparsity.importance=wanda"]))
                t0 = time.perf_counter()
                if label == "before":
                    run_steps(c)
                    run_steps(c)
                else:
                    plan_for_checks(c)
                    plan_for_run(c)
                out.append(time.perf_counter() - t0)
    b, a = statistics.median(before), statistics.median(after)
    print(f"plans per run: before 2, after 1 ({args.mb} MB data file, median of {args.repeat})")
    print(f"planning time: before {b * 1e3:.1f} ms, after {a * 1e3:.1f} ms, after/before {a / b:.3f}")


if __name__ == "__main__":
    main()
