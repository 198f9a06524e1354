"""A run dir that holds nothing but what Hydra writes at start is removed when the run fails.

Hydra creates the run dir (``.hydra/``, the job log) before the job runs, and the recipe adds
``config.yaml``; an error raised later would leave that shell behind, looking like a run. Anything
else in the dir (checkpoints, logs of steps, metrics, a user's own files) is of value: then the dir
stays as it is.
"""

from __future__ import annotations

import shutil
from pathlib import Path

#: what a run dir holds before the run has produced anything
NO_VALUE_FILES = ("config.yaml", "multirun.yaml", ".ftlab-run.lock", ".ftlab-run.lock.break")  # + ftlab.recipe.runlock
NO_VALUE_DIRS = (".hydra",)


def holds_value(run_dir: Path) -> bool:
    for path in Path(run_dir).rglob("*"):
        rel = path.relative_to(run_dir)
        if path.is_dir() or rel.parts[0] in NO_VALUE_DIRS:
            continue
        if len(rel.parts) == 1 and (rel.name in NO_VALUE_FILES or rel.suffix == ".log"):
            continue
        return True
    return False


def discard_if_empty(run_dir: Path, sweep_dir: Path | None = None) -> bool:
    """Remove ``run_dir`` if it holds nothing of value (then also ``sweep_dir`` if that is left with
    nothing of value: a sweep whose first job failed). Returns whether the run dir was removed."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or holds_value(run_dir):
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    if sweep_dir is not None and Path(sweep_dir).is_dir() and not holds_value(Path(sweep_dir)):
        shutil.rmtree(sweep_dir, ignore_errors=True)
    return True
