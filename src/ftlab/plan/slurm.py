"""``emit=slurm``: per planned run a dir with its composed config and an sbatch script, plus
``submit_all.sh``.

Each run dir is also the run's output dir (``hydra.run.dir``), so the ``config.yaml`` written
here is the one the run itself writes on start (same overrides, same resolved config), results
land next to the script, and ``python -m ftlab.analyze PLAN_DIR`` lists not-yet-finished runs as
unfinished. ``resume=auto`` (default) makes a resubmitted or requeued job continue from its
newest checkpoint.
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path

from omegaconf import OmegaConf

from ftlab.hardware import get_target
from ftlab.plan.options import SlurmOptions
from ftlab.plan.planner import Plan, PlannedRun
from ftlab.preflight.compose import compose_run
from ftlab.preflight.launch import check_launch

RUNS_SUBDIR = "runs"
SCRIPT = "job.sbatch"


def time_limit_min(run: PlannedRun, s: SlurmOptions) -> int:
    if s.time_min is not None:
        return s.time_min
    if run.seconds is None:
        return s.default_time_min
    return max(s.min_time_min, math.ceil(run.seconds * s.time_factor / 60))


def fmt_time(minutes: int) -> str:
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    return f"{days}-{hours:02d}:{mins:02d}:00" if days else f"{hours:02d}:{mins:02d}:00"


def job_overrides(run: PlannedRun, s: SlurmOptions) -> list[str]:
    extra = [f"resume={s.resume}"] if s.resume is not None else []
    return [*run.overrides, *extra]


def sbatch_script(run: PlannedRun, run_dir: Path, workdir: Path, s: SlurmOptions) -> str:
    h = run.cfg.hardware
    lines = ["#!/bin/bash",
             f"#SBATCH --job-name={run.name}",
             f"#SBATCH --output={run_dir}/slurm-%j.out",
             f"#SBATCH --chdir={workdir}",
             f"#SBATCH --nodes={int(h.num_nodes)}",
             f"#SBATCH --ntasks-per-node={int(h.devices)}",  # Lightning: one task per device
             f"#SBATCH --cpus-per-task={s.cpus_per_task}",
             f"#SBATCH --time={fmt_time(time_limit_min(run, s))}"]
    if get_target(h.accelerator).cuda:
        lines.append(f"#SBATCH --gpus-per-node={int(h.devices)}")
    for flag, value in (("partition", s.partition), ("account", s.account), ("qos", s.qos)):
        if value:
            lines.append(f"#SBATCH --{flag}={value}")
    if s.mem_gb:
        lines.append(f"#SBATCH --mem={s.mem_gb}G")
    lines += [f"#SBATCH {opt}" for opt in s.extra]
    est = "no basis" if run.seconds is None else f"{run.seconds:.0f}s of training iterations"
    lines += ["", f"# ftlab plan run {run.index}: {run.name} (estimate: {est}). Composed config: {run_dir}/config.yaml",
              "set -euo pipefail", *s.setup]
    cmd = [s.python, "-m", "ftlab", *job_overrides(run, s), f"hydra.run.dir={run_dir}"]
    lines += [f"srun {' '.join(shlex.quote(c) for c in cmd)}", ""]
    return "\n".join(lines)


def submit_script(names: list[str]) -> str:
    lines = ["#!/bin/bash",
             f"# Submit the {len(names)} runs of this plan, one sbatch job each. A run whose metrics.json",
             "# exists is skipped, so running this again resubmits only what has not finished.",
             "#   bash submit_all.sh             # submit",
             "#   DRY_RUN=1 bash submit_all.sh   # only print what would be submitted",
             "set -euo pipefail",
             'cd "$(dirname "$0")"',
             "submit() {",
             '    if [ -f "$1/metrics.json" ]; then echo "skip $1 (finished)"; return; fi',
             f'    if [ -n "${{DRY_RUN:-}}" ]; then echo "sbatch $1/{SCRIPT}"; return; fi',
             f'    echo "$1: job $(sbatch --parsable "$1/{SCRIPT}")"',
             "}"]
    lines += [f"submit {shlex.quote(f'{RUNS_SUBDIR}/{n}')}" for n in names]
    return "\n".join(lines) + "\n"


def check_runnable(plan: Plan, s: SlurmOptions) -> None:
    """Each sbatch job is a single ``python -m ftlab`` run: refuse now what its preflight would
    refuse on the cluster (e.g. Cerebras hardware, which runs through its own launcher)."""
    for run in plan.runs:
        check_launch(job_overrides(run, s), [run.cfg], multirun=False)


def emit_slurm(plan: Plan, staging: Path, final_dir: Path, s: SlurmOptions) -> dict[str, dict[str, str]]:
    """Write the run dirs and ``submit_all.sh`` into ``staging`` (paths inside the scripts name
    ``final_dir``, where the staging dir is moved). Returns per-run paths for ``plan.json``."""
    workdir = Path.cwd().resolve()
    out: dict[str, dict[str, str]] = {}
    for run in plan.runs:
        run_dir = final_dir / RUNS_SUBDIR / run.name
        local = staging / RUNS_SUBDIR / run.name
        local.mkdir(parents=True)
        cfg = compose_run(job_overrides(run, s))  # exactly what the job will compose
        (local / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        script = local / SCRIPT
        script.write_text(sbatch_script(run, run_dir, workdir, s))
        script.chmod(0o755)
        out[run.name] = {"run_dir": str(run_dir), "sbatch": str(run_dir / SCRIPT),
                         "time_limit_min": str(time_limit_min(run, s))}
    submit = staging / "submit_all.sh"
    submit.write_text(submit_script([r.name for r in plan.runs]))
    submit.chmod(0o755)
    return out
