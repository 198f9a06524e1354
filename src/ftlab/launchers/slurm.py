"""SLURM through hydra-submitit-launcher: the checks that must pass before anything is submitted,
and the one fact a running job needs (was it requeued?).

Why the checks exist:
- submitit resolves the launcher's resources once, from the sweep's base config, and Lightning's
  SLURM environment refuses a world size that differs from ``devices x num_nodes``; a mismatch
  would surface minutes later inside the job. ``tasks_per_node``/``nodes`` are therefore compared
  with every job's ``hardware`` up front.
- ``sbatch`` against an unknown partition fails per job, and against an unreachable controller
  the client commands retry for a minute; ``sinfo`` with a short timeout answers both in seconds.
- A job that SLURM requeued (preemption via submitit's USR2 handler, ``scontrol requeue``, a
  timeout with ``max_num_timeout > 0``) is re-run with the same overrides in the same job dir;
  :func:`resume_setting` turns that into ``resume=auto`` so it continues from its newest checkpoint.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import OmegaConf

from ftlab.core.errors import ConfigError, FtlabError
from ftlab.hardware import get_target

#: ``_target_`` of hydra-submitit-launcher's SLURM launcher (``hydra/launcher=slurm`` builds on it).
SLURM_TARGET = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
#: Seconds ``sinfo`` may take before the cluster counts as unreachable (env overrides; a site
#: controller under load can need more than the local cluster's few milliseconds).
SINFO_TIMEOUT_ENV = "FTLAB_SLURM_CHECK_TIMEOUT_S"
SINFO_TIMEOUT_S = 10.0


def restart_count(env: Mapping[str, str] | None = None) -> int:
    """How often SLURM has restarted this job (``SLURM_RESTART_COUNT``; 0 outside SLURM)."""
    env = os.environ if env is None else env
    try:
        return int(env.get("SLURM_RESTART_COUNT", "0") or 0)
    except ValueError:
        return 0


def resume_setting(resume: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The effective ``resume``: a requeued SLURM job with ``resume=null`` resumes automatically
    (submitit requeues with the same overrides and saves no training state of its own)."""
    if resume is None and restart_count(env) > 0:
        return "auto"
    return resume


def is_slurm_launcher(launcher: Any) -> bool:
    return launcher is not None and OmegaConf.select(launcher, "_target_", default=None) == SLURM_TARGET


def check_resources(launcher: Any, hardware: Any, where: str = "") -> None:
    """``tasks_per_node == hardware.devices`` and ``nodes == hardware.num_nodes`` (Lightning's DDP
    under SLURM takes one task per device); GPU hardware must request GPUs."""
    suffix = f" ({where})" if where else ""
    tasks, nodes = launcher.tasks_per_node, launcher.nodes
    if tasks != hardware.devices:
        raise ConfigError("hydra.launcher.tasks_per_node", tasks,
                          f"must equal hardware.devices={hardware.devices}{suffix}: one SLURM task per device; "
                          "launcher resources are fixed per sweep, so sweep hardware in separate --multirun commands")
    if nodes != hardware.num_nodes:
        raise ConfigError("hydra.launcher.nodes", nodes,
                          f"must equal hardware.num_nodes={hardware.num_nodes}{suffix}; "
                          "launcher resources are fixed per sweep, so sweep hardware in separate --multirun commands")
    if get_target(hardware.accelerator).cuda:
        asks = [OmegaConf.select(launcher, k, default=None) for k in ("gpus_per_task", "gpus_per_node", "gres")]
        if not any(asks):
            raise ConfigError("hydra.launcher.gpus_per_task", None,
                              f"1 (or gpus_per_node/gres) for hardware.accelerator=gpu{suffix}; "
                              "without it SLURM gives the job no GPU")


def validate_launcher(cfg: Any) -> None:
    """Validator (``ftlab.preflight.validate.VALIDATORS``): a config composed with its ``hydra`` node
    and ``hydra/launcher=slurm`` must ask SLURM for the job's own device layout."""
    launcher = OmegaConf.select(cfg, "hydra.launcher", default=None) if "hydra" in cfg else None
    if is_slurm_launcher(launcher):
        check_resources(launcher, cfg.hardware)


def _sinfo(args: Sequence[str], timeout_s: float) -> subprocess.CompletedProcess:
    # A SLURM_CONF that names no file is the more specific mistake: reported with or without a client.
    conf = os.environ.get("SLURM_CONF")
    if conf and not os.path.isfile(conf):
        raise FtlabError(f"SLURM is not reachable: SLURM_CONF={conf!r} does not exist")
    exe = shutil.which("sinfo")
    if exe is None:
        raise FtlabError("SLURM is not reachable: `sinfo` is not on PATH (install the SLURM client, or "
                         "start the local cluster with scripts/slurm/start_local_cluster.sh and source its env.sh)")
    try:
        return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as err:
        raise FtlabError(f"SLURM is not reachable: `sinfo` gave no answer within {timeout_s:g}s "
                         f"(controller down? raise {SINFO_TIMEOUT_ENV} for a slow site)") from err


def sinfo_timeout() -> float:
    raw = os.environ.get(SINFO_TIMEOUT_ENV)
    if raw is None:
        return SINFO_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ConfigError(SINFO_TIMEOUT_ENV, raw, "a number of seconds > 0")
    return value


def partitions(timeout_s: float | None = None) -> dict[str, bool]:
    """``{partition: is_default}`` of the cluster; :class:`FtlabError` if it does not answer."""
    proc = _sinfo(["-h", "-o", "%P"], sinfo_timeout() if timeout_s is None else timeout_s)
    if proc.returncode != 0:
        why = (proc.stderr or proc.stdout).strip().splitlines()
        raise FtlabError(f"SLURM is not reachable: sinfo exited {proc.returncode}: {why[0] if why else 'no output'}")
    out: dict[str, bool] = {}
    for line in proc.stdout.split():
        out[line.rstrip("*")] = line.endswith("*")
    return out


def check_cluster(partition: str | None, timeout_s: float | None = None) -> None:
    """The controller answers and ``partition`` exists (``None``: the cluster has a default one)."""
    found = partitions(timeout_s)
    if partition is None:
        if not any(found.values()):
            raise ConfigError("hydra.launcher.partition", None, f"one of {sorted(found)} (the cluster has no default)")
        return
    missing = [p for p in str(partition).split(",") if p not in found]  # sbatch takes a list
    if missing:
        raise ConfigError("hydra.launcher.partition", partition, f"one of {sorted(found)} (unknown: {missing})")
