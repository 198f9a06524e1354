"""The plan of steps computed once per run: the composition checks compute it, the run takes it.

``python -m ftlab`` checks a run before Hydra creates its run dir (:mod:`ftlab.preflight.launch`),
and those checks read the run's plan (:mod:`ftlab.preflight.reuse_checks`: does a step go through
the store?). Hydra then composes the job's config again (its own ``@hydra.main``; a composition
ftlab cannot hand a config to), and the run needs the same plan. Rather than computing it twice
(every file fingerprint, every spec look-up), the checks leave it here and the run's
:class:`ftlab.reuse.runner.StepRunner` takes it when its plain config is the one the checks planned.

One slot, taken or dropped by the next run: a plan never outlives the run it was made for, so a
file changed between two runs of one process is fingerprinted again. A sweep's jobs (composed
together by the preflight, run one after another or in other processes) compute their own plans.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ftlab.reuse.steps import RunSteps, run_steps

_slot: list[tuple[dict[str, Any], RunSteps]] = []


def plan_for_checks(c: Mapping[str, Any]) -> RunSteps:
    """The plan of ``c`` (plain resolved config), kept for the run that follows in this process."""
    steps = run_steps(c)
    _slot[:] = [(dict(c), steps)]
    return steps


def plan_for_run(c: Mapping[str, Any]) -> RunSteps:
    """The plan the checks computed for this very config, else a new one; the slot is emptied
    either way."""
    handed = _slot.pop() if _slot else None
    if handed is not None and handed[0] == dict(c):
        return handed[1]
    return run_steps(c)
