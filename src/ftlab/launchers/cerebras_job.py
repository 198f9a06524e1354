"""One Cerebras job: write its params YAML and command script, run ``cszoo fit``, collect outputs.

Layout of an ftlab job dir after a Cerebras job (``cszoo fit ... -o <job dir>`` writes into it):

    cszoo_params.yaml     the trainer YAML (:mod:`ftlab.launchers.cerebras_params`)
    cszoo_data_train.yaml ``cszoo data_preprocess run --config`` configs (and val), with the task's
    cszoo_data/           examples as JSONL and, once run, the HDF5 data (:mod:`ftlab.launchers.cerebras_steps`)
    cszoo_command.sh      activation, the preparation steps (each skipped when done) and the exact
                          ``cszoo fit`` command line (written also in a dry run)
    cszoo.log             cszoo's stdout and stderr
    <timestamp>/run.log   ModelZoo's run log (what cszoo writes under its model dir), with progress
                          lines ``| Train Device=CSX, Step=N, Loss=X, Rate=R samples/sec, GlobalRate=G samples/sec``
    checkpoint_<step>.mdl ModelZoo checkpoints
    loss_log.csv          ftlab's columns, converted from the progress lines (where the logs have them)
    metrics.json          what the logs allow: train_steps, final_train_loss, samples_per_sec, checkpoints
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from ftlab.core.errors import ConfigError, FtlabError
from ftlab.core.io import CsvAppender, write_json
from ftlab.launchers.cerebras_params import static_plan
from ftlab.launchers.cerebras_steps import JobPlan, Step, step_lines
from ftlab.training.schedules import lr_at, total_steps

PARAMS_FILE = "cszoo_params.yaml"
SCRIPT_FILE = "cszoo_command.sh"
LOG_FILE = "cszoo.log"
_PROGRESS = re.compile(
    r"\|\s*Train Device=[^,]*,\s*Step=(?P<step>\d+),\s*Loss=(?P<loss>[-+0-9.eE]+|nan|inf)"
    r"(?:,\s*Rate=(?P<rate>[0-9.eE+-]+) samples/sec)?(?:,\s*GlobalRate=(?P<grate>[0-9.eE+-]+) samples/sec)?")
_CHECKPOINT = re.compile(r"^checkpoint_(\d+)\.mdl$")


def cszoo_command(opts: Any, params: Path, job_dir: Path, num_csx: int, plan: JobPlan | None = None) -> list[str]:
    """``cszoo fit <yaml> --target_device CSX -o <job dir>`` plus the launcher's options and the base
    checkpoint (``--checkpoint_path``: where ModelZoo takes the base weights from)."""
    plan = plan or static_plan(opts)
    cmd = [opts.executable, "fit", str(params), "--target_device", str(opts.target_device), "-o", str(job_dir),
           "--num_csx", str(num_csx)]
    mounts = [*map(str, opts.mount_dirs), *plan.mounts]
    if mounts:
        cmd += ["--mount_dirs", *mounts]
    if opts.python_paths:
        cmd += ["--python_paths", *map(str, opts.python_paths)]
    if plan.checkpoint:
        cmd += ["--checkpoint_path", str(plan.checkpoint)]
    return cmd + [str(a) for a in opts.extra_args]


def command_script(opts: Any, cmd: list[str], job_dir: Path, steps: list[Step] = ()) -> str:
    """A bash script that activates the ModelZoo environment, runs the preparation ``steps`` that are
    not done yet, then ``cmd``, all in the job dir."""
    lines = ["#!/bin/bash", "# written by ftlab's Cerebras launcher; run it to (re)launch this job", "set -euo pipefail"]
    if opts.python_env:
        lines.append(f"source {shlex.quote(str(Path(opts.python_env) / 'bin' / 'activate'))}")
    lines.append(f"cd {shlex.quote(str(job_dir))}")
    for step in steps:
        lines += step_lines(opts.executable, step)
    lines += ["exec " + shlex.join(cmd), ""]
    return "\n".join(lines)


def check_executable(opts: Any) -> None:
    """The environment to activate exists, or (without one) the executable is on PATH."""
    if opts.python_env:
        activate = Path(opts.python_env) / "bin" / "activate"
        if not activate.is_file():
            raise ConfigError("hydra.launcher.python_env", opts.python_env, "a virtual environment dir with bin/activate")
    elif shutil.which(opts.executable) is None:
        raise ConfigError("hydra.launcher.executable", opts.executable,
                          "an executable on PATH (the ModelZoo CLI), or set hydra.launcher.python_env")


def write_job_files(params: dict, opts: Any, job_dir: Path, num_csx: int, plan: JobPlan | None = None) -> Path:
    """Write the plan's files (examples, preprocessing configs), the params YAML and the command
    script; returns the script."""
    plan = plan or static_plan(opts)
    job_dir.mkdir(parents=True, exist_ok=True)
    for path, text in plan.files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    params_path = job_dir / PARAMS_FILE
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    script = job_dir / SCRIPT_FILE
    cmd = cszoo_command(opts, params_path, job_dir, num_csx, plan)
    script.write_text(command_script(opts, cmd, job_dir, plan.steps))
    script.chmod(0o755)
    return script


def run_script(script: Path, job_dir: Path) -> int:
    """Run the command script, cszoo's output teed into ``cszoo.log``; returns its exit status."""
    with open(job_dir / LOG_FILE, "wb") as log:
        proc = subprocess.run(["bash", str(script)], stdout=log, stderr=subprocess.STDOUT, cwd=job_dir)
    return proc.returncode


def parse_progress(text: str) -> list[dict[str, float]]:
    """Progress lines of a ModelZoo log -> ``[{step, loss, rate, global_rate}]`` (last one per step)."""
    rows: dict[int, dict[str, float]] = {}
    for m in _PROGRESS.finditer(text):
        step = int(m["step"])
        rows[step] = {"step": step, "loss": float(m["loss"]),
                      "rate": float(m["rate"]) if m["rate"] else float("nan"),
                      "global_rate": float(m["grate"]) if m["grate"] else float("nan")}
    return [rows[s] for s in sorted(rows)]


def find_run_logs(job_dir: Path) -> list[Path]:
    """ModelZoo run logs under the job dir (oldest first), else cszoo's captured output."""
    logs = sorted((p for p in job_dir.rglob("run*.log") if p.is_file()), key=lambda p: (p.stat().st_mtime, str(p)))
    return logs or [p for p in (job_dir / LOG_FILE,) if p.is_file()]


def checkpoints(job_dir: Path) -> list[str]:
    found = [(int(m[1]), p) for p in job_dir.rglob("checkpoint_*.mdl") if (m := _CHECKPOINT.match(p.name))]
    return [str(p.relative_to(job_dir)) for _, p in sorted(found)]


def write_loss_log(rows: list[dict[str, float]], cfg: Any, path: Path) -> None:
    """``loss_log.csv`` in ftlab's columns; the lr is ftlab's schedule (the YAML reproduces it),
    memory is not reported by the appliance (empty), throughput is ModelZoo's ``Rate``."""
    from ftlab.callbacks.loss_log import COLUMNS  # Lightning (heavy): only when cszoo's logs are converted

    steps = total_steps(cfg.schedule, cfg.train.max_steps)
    out = CsvAppender(path, COLUMNS + ["samples_per_sec"])
    out.open()
    for r in rows:
        out.append({"epoch": 0, "step": int(r["step"]), "train_loss": f"{r['loss']:.6f}",
                    "learning_rate": f"{lr_at(int(r['step']) - 1, cfg.schedule, steps):.6e}",
                    "gpu_memory_mb": "", "sparsity": "", "samples_per_sec": f"{r['rate']:.2f}"})


def collect(job_dir: Path, cfg: Any, returncode: int) -> dict[str, Any]:
    """Convert what cszoo left in the job dir into ftlab's files; returns the metrics written."""
    rows: list[dict[str, float]] = []
    for log in find_run_logs(job_dir):
        rows = parse_progress(log.read_text(errors="replace")) or rows
    if rows:
        write_loss_log(rows, cfg, job_dir / "loss_log.csv")
    metrics: dict[str, Any] = {"backend": "cerebras", "cszoo_returncode": returncode,
                               "checkpoints": checkpoints(job_dir)}
    if rows:
        last = rows[-1]
        metrics.update({"train_steps": int(last["step"]), "final_train_loss": last["loss"],
                        "samples_per_sec": last["global_rate"] if last["global_rate"] == last["global_rate"]
                        else last["rate"]})
    write_json(job_dir / "metrics.json", metrics)
    return metrics


def run_job(cfg: Any, params: dict, opts: Any, job_dir: Path, num_csx: int,
            plan: JobPlan | None = None) -> dict[str, Any] | None:
    """Write the job's files; unless ``dry_run``, run its script (preparation steps, then cszoo fit)
    and collect. Raises on failure."""
    script = write_job_files(params, opts, job_dir, num_csx, plan)
    if opts.dry_run:
        return None
    code = run_script(script, job_dir)
    metrics = collect(job_dir, cfg, code)
    if code != 0:
        tail = (job_dir / LOG_FILE).read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise FtlabError(f"cszoo exited {code} in {job_dir}: {tail[0]} (full log: {job_dir / LOG_FILE})")
    return metrics
