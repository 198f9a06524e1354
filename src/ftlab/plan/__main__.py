"""``python -m ftlab.plan [--multirun] OVERRIDES [plan.KEY=VALUE ...] [emit=slurm]``.

Run overrides are the same as for ``python -m ftlab`` (comma lists sweep, as under
``--multirun``; the flag itself is optional). ``plan.*`` keys and ``emit`` configure the planner
(see :mod:`ftlab.plan.options`). Bad input exits 2 with one ``ftlab: error:`` line and writes
nothing.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import ftlab.plan
from ftlab.core.console import help_requested
from ftlab.core.errors import FtlabError, report_error
from ftlab.plan.options import PlannerArgs, is_planner_arg, parse_planner_args
from ftlab.plan.planner import Plan, make_plan
from ftlab.plan.report import to_json, to_markdown
from ftlab.plan.slurm import check_runnable, emit_slurm

_IGNORED_FLAGS = ("-m", "--multirun")


def default_dir(plan: Plan) -> Path:
    name = str(plan.runs[0].cfg.name) if plan.runs else "plan"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return Path("multirun") / "plans" / safe / time.strftime("%Y-%m-%d_%H-%M-%S")


def write_plan(plan: Plan, args: PlannerArgs, markdown: str) -> Path:
    """Everything is written into a staging dir next to the plan dir and renamed into place."""
    if args.emit == "slurm":
        check_runnable(plan, args.plan.slurm)
    final = Path(args.plan.dir) if args.plan.dir else default_dir(plan)
    if final.exists() and any(final.iterdir()):
        raise FtlabError(f"plan.dir={str(final)!r} is invalid: a new or empty directory")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        extra = {}
        if args.emit == "slurm":
            extra = emit_slurm(plan, staging, final.resolve(), args.plan.slurm)
        (staging / "plan.md").write_text(markdown)
        (staging / "plan.json").write_text(json.dumps(to_json(plan, extra), indent=2, default=str))
        staging.chmod(0o755)  # mkdtemp makes it private; a plan dir is shared like a run dir
        if final.exists():
            final.rmdir()
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if help_requested(argv, __doc__.strip() + "\n\n" + (ftlab.plan.__doc__ or "").strip()):
        return 0
    try:
        flags = [a for a in argv if a.startswith("-")]
        for flag in flags:
            if flag not in _IGNORED_FLAGS:
                raise FtlabError(f"unsupported flag {flag!r}: python -m ftlab.plan takes overrides, "
                                 f"plan.KEY=VALUE and emit=slurm (and optionally --multirun)")
        tokens = [a for a in argv if not a.startswith("-")]
        args = parse_planner_args([t for t in tokens if is_planner_arg(t)])
        plan = make_plan([t for t in tokens if not is_planner_arg(t)], args.plan)
        markdown = to_markdown(plan)
        out = write_plan(plan, args, markdown) if args.plan.write else None
    except FtlabError as err:
        return report_error(err)
    print(markdown)
    if out is not None:
        print(f"wrote {out / 'plan.md'} and {out / 'plan.json'}")
        if args.emit == "slurm":
            print(f"wrote {len(plan.runs)} run dirs under {out / 'runs'}; submit with: bash {out / 'submit_all.sh'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
