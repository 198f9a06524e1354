"""Which checkpoint a run resumes from, decided before anything is built or written.

``resume=null`` starts at step 0, ``resume=auto`` takes the run dir's newest intact checkpoint
(a requeued SLURM job turns into ``auto``: :func:`ftlab.launchers.slurm.resume_setting`), and a
path names one checkpoint. Every candidate is checked from its ``meta.json`` without loading it:
intact, plain tensors only, and standing on this run's model/base/mask keys."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ftlab.core.errors import ConfigError
from ftlab.training.foundation import foundation_mismatch
from ftlab.training.state import (
    STATE_FILE,
    STATE_KEY,
    checkpoints_newest_first,
    format_problem,
    read_meta,
    state_path,
    state_problem,
)

log = logging.getLogger("ftlab")


def resume_checkpoint(resume: str | None, run_dir: Path, found: dict[str, Any] | None = None) -> Path | None:
    """The state file to resume from (``None``: start at step 0), checked before anything runs:
    intact (``resume=auto`` falls back past an incomplete newest checkpoint, saying so), no pickled
    objects, and standing on this run's model/base/mask keys (``found``). ``resume``: the run's
    effective setting, from the launcher (a requeued SLURM job resumes from its job dir: ``auto``)."""
    if resume is None:
        return None
    if resume == "auto":
        path = newest_intact(run_dir)
        if path is None:
            return None
    else:
        path = Path(resume)
        path = state_path(path) if path.is_dir() else path
        if not path.is_file():
            raise ConfigError("resume", resume, f"null, 'auto' or a checkpoint dir containing {STATE_FILE}")
        problem = state_problem(path, read_meta(path))
        if problem is not None:
            raise ConfigError("resume", resume, f"an intact checkpoint of plain tensors ({problem[1]})")
    newer = format_problem(read_meta(path), path)
    if newer is not None:
        raise ConfigError("resume", resume, f"a checkpoint this ftlab can read ({newer})")
    recorded = read_meta(path).get(STATE_KEY, {}).get("foundation")
    why = foundation_mismatch(recorded, found) if recorded is not None and found is not None else None
    if why is not None:
        raise ConfigError("resume", str(path.parent), f"a checkpoint of this run's model/base/mask: {why}; "
                          "resume=null starts over")
    return path


def newest_intact(run_dir: Path) -> Path | None:
    """``resume=auto``: the newest checkpoint that is intact; an incomplete one is skipped (one
    line), a pickled one refused; none left of several is an error (nothing is overwritten)."""
    candidates = checkpoints_newest_first(run_dir)
    skipped: list[tuple[Path, str]] = []
    for d in candidates:
        problem = state_problem(state_path(d), read_meta(state_path(d)))
        if problem is None:
            if skipped:
                names = ", ".join(p.name for p, _ in skipped)
                log.warning("resume=auto: skipping incomplete %s (%s); resuming from %s instead", names,
                            skipped[0][1], d.name)
            return state_path(d)
        kind, why = problem
        if kind == "unsafe":
            raise ConfigError("resume", str(d), f"a checkpoint of plain tensors ({why})")
        skipped.append((d, why))
    if skipped:
        raise ConfigError("resume", "auto", f"a run dir with an intact checkpoint: all {len(skipped)} under "
                          f"{Path(run_dir) / 'checkpoints'} are incomplete (newest: {skipped[0][1]}); "
                          "resume=null starts over")
    return None


def note_rebuilt_base(records: dict[str, dict]) -> None:
    """One line when a resumed run had to rebuild its cached base artifact (it was evicted)."""
    base = records.get("base") or {}
    if base.get("cached") and not base.get("cache_hit"):
        log.warning("resume: the base artifact %s was not in the cache; rebuilt it, and its content matches "
                    "the checkpoint's where both were cached", base["key"][:12])
