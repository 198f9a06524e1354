"""The planner's own options (``plan.*`` and ``emit=``), kept apart from the run overrides.

They are not part of a run's config (a plan never changes what a run computes), so they live in
their own structured schema here; a typo fails with the same one-line error as a run's key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from ftlab.core.errors import ConfigError, fail

EMIT_CHOICES = ("slurm",)


@dataclass
class SlurmOptions:
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    # --time: fixed minutes, or None = the run's time estimate x time_factor (default_time_min
    # for runs without a basis), never below min_time_min.
    time_min: int | None = None
    time_factor: float = 2.0
    min_time_min: int = 15
    default_time_min: int = 240
    cpus_per_task: int = 8
    mem_gb: int | None = None
    python: str = "python"
    # shell lines run before the job (module load, source .venv/bin/activate, exports)
    setup: list[str] = field(default_factory=list)
    # extra "#SBATCH ..." option strings, e.g. ["--constraint=h100"]
    extra: list[str] = field(default_factory=list)
    # passed to the run: "auto" resumes a re-submitted job from its newest checkpoint
    resume: str | None = "auto"


@dataclass
class PlanOptions:
    controls: bool = False  # add one eval-only run (adapter=none) per distinct base model
    dir: str | None = None  # plan dir; default multirun/plans/<name>/<timestamp>
    prior_dirs: list[str] = field(default_factory=lambda: ["experiments", "multirun"])
    safety_factor: float = 0.65  # fraction of device memory a recommended batch size may fill
    write: bool = True  # false: print the table only
    slurm: SlurmOptions = field(default_factory=SlurmOptions)


@dataclass
class PlannerArgs:
    plan: PlanOptions = field(default_factory=PlanOptions)
    emit: str | None = None


def is_planner_arg(arg: str) -> bool:
    key = arg.lstrip("+~").partition("=")[0]
    return key == "emit" or key == "plan" or key.startswith("plan.")


def parse_planner_args(tokens: list[str]) -> PlannerArgs:
    """``plan.x=v`` / ``emit=slurm`` tokens -> validated :class:`PlannerArgs`."""
    base = OmegaConf.structured(PlannerArgs)
    try:
        merged = OmegaConf.merge(base, OmegaConf.from_dotlist([t.lstrip("+") for t in tokens]))
    except ConfigKeyError as err:
        cls = getattr(err, "object_type", None)
        fields = sorted(getattr(cls, "__dataclass_fields__", {})) or ["see ftlab.plan.options"]
        raise ConfigError(err.full_key or str(err.key), "<unknown key>", f"one of {fields}") from err
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "plan"
        raise ConfigError(key, getattr(err, "value", None), str(err).strip().splitlines()[0]) from err
    args: PlannerArgs = OmegaConf.to_object(merged)
    validate_planner_args(args)
    return args


def validate_planner_args(args: PlannerArgs) -> None:
    p, s = args.plan, args.plan.slurm
    if args.emit is not None and args.emit not in EMIT_CHOICES:
        fail("emit", args.emit, f"one of {list(EMIT_CHOICES)} (or leave it out)")
    if not 0.0 < p.safety_factor <= 1.0:
        fail("plan.safety_factor", p.safety_factor, "a fraction of device memory in (0, 1]")
    if s.time_factor < 1.0:
        fail("plan.slurm.time_factor", s.time_factor, "a number >= 1 (a margin on the estimate)")
    for key in ("min_time_min", "default_time_min", "cpus_per_task"):
        if getattr(s, key) < 1:
            fail(f"plan.slurm.{key}", getattr(s, key), "an integer >= 1")
    if s.time_min is not None and s.time_min < 1:
        fail("plan.slurm.time_min", s.time_min, "an integer >= 1 or null")
    if s.mem_gb is not None and s.mem_gb < 1:
        fail("plan.slurm.mem_gb", s.mem_gb, "an integer >= 1 or null")
    if args.emit == "slurm" and not p.write:
        fail("plan.write", p.write, "true when emit=slurm (the scripts are files)")
