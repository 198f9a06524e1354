"""Which files of ``src/ftlab`` one run executes, traced (not guessed): every Python function call
whose code lives under ``src/ftlab`` is counted per file, for one in-process run.

    python scripts/trace_run_files.py [OVERRIDES ...]      (default: +experiment=quickstart)

Prints ``calls  file`` rows (most called first) and the number of files; README's "A run, top to
bottom" names the few a reader needs from this list.
"""

from __future__ import annotations

import collections
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = str(ROOT / "src" / "ftlab")


def main(argv: list[str]) -> int:
    from ftlab.preflight.compose import compose_run
    from ftlab.recipe.run import run

    overrides = argv or ["+experiment=quickstart"]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_run([*overrides, f"paths.cache_dir={tmp}/cache"])
        calls: collections.Counter[str] = collections.Counter()

        def prof(frame, event, arg):
            if event == "call" and frame.f_code.co_filename.startswith(SRC):
                calls[frame.f_code.co_filename[len(SRC) + 1:]] += 1

        threading.setprofile(prof)
        sys.setprofile(prof)
        try:
            run(cfg, Path(tmp) / "run")
        finally:
            sys.setprofile(None)
            threading.setprofile(None)
    for name, n in calls.most_common():
        print(f"{n:8d}  src/ftlab/{name}")
    print(f"{len(calls)} files under src/ftlab executed by: {' '.join(overrides)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
