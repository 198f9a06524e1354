"""Plan a sweep before running it; never trains.

``python -m ftlab.plan +experiment=NAME [k=v1,v2 ...] [plan.controls=true] [emit=slurm]``:
the run table (names, params, time and memory estimates from prior runs, recommended batch
size), the stage tree with naive vs planned iterations, and device-hour totals with and without
reuse; Markdown on stdout plus ``plan.md`` / ``plan.json`` in the plan dir.

Modules: :mod:`.options` (planner keys), :mod:`.naming`, :mod:`.stages` (stage tree, pure),
:mod:`.params` (meta-device counts), :mod:`.priors` (finished runs as evidence),
:mod:`.estimate` (time/memory, pure), :mod:`.planner` (assembly), :mod:`.report`,
:mod:`.slurm` (``emit=slurm``).
"""

from ftlab.plan.planner import Plan, PlannedRun, make_plan

__all__ = ["Plan", "PlannedRun", "make_plan"]
