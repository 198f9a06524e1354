"""What the preflight costs on top of composing: ``preflight(overrides)`` against
``compose_config(overrides)`` of the same command, both measured in this process (warm imports).

    python benchmarks/preflight.py [--rounds 5]

Cases: the default run (data generated, model built on the meta device, Trainer accepted), a
bad value found by the schema (``train.batch_size=0``), a zero-step run (``task.num_examples=3``),
and a 4-job sweep. Prints, per case, the fastest of ``--rounds`` timings of each and their ratio;
the issue-15 target is preflight <= composition + 1 s for inputs that need no file read.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from ftlab.core.errors import FtlabError
from ftlab.data.checks import _facts
from ftlab.preflight.compose import compose_config, expand_sweep, preflight

CASES = {
    "default run": ([], False),
    "schema error (train.batch_size=0)": (["train.batch_size=0"], False),
    "zero-step run (task.num_examples=3)": (["task.num_examples=3"], False),
    "4-job sweep (seed=1,2,3,4)": (["seed=1,2,3,4"], True),
}


def timed(fn) -> float:
    t0 = time.perf_counter()
    try:
        fn()
    except FtlabError:
        pass
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    out = tempfile.mkdtemp(prefix="ftlab-preflight-bench-")
    dirs = [f"hydra.run.dir={out}/run", f"hydra.sweep.dir={out}/sweep"]
    preflight(dirs, multirun=False)  # imports, meta-build cache: what every case below shares
    print(f"{'case':40s} {'compose s':>10s} {'preflight s':>12s} {'ratio':>6s} {'extra s':>8s}")
    for name, (overrides, multirun) in CASES.items():
        def compose(overrides=overrides, multirun=multirun):
            if multirun:
                [compose_config(job) for job in expand_sweep(overrides)]
            else:
                compose_config(overrides)

        def check(overrides=overrides, multirun=multirun):
            _facts.cache_clear()  # each round pays for the data checks
            preflight([*overrides, *dirs], multirun=multirun)

        c = min(timed(compose) for _ in range(args.rounds))
        f = min(timed(check) for _ in range(args.rounds))
        print(f"{name:40s} {c:10.3f} {f:12.3f} {f / c:6.2f} {f - c:8.3f}")


if __name__ == "__main__":
    main()
