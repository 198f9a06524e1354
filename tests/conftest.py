"""Shared helpers: compose a run like the CLI does and run it in-process on a tiny model."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# One intra-op thread per process: tests start subprocesses (CLI runs, DDP ranks, SLURM jobs) on a
# 2-core machine, and oversubscribed OpenMP threads slow tiny-model steps down by 10-100x.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The reuse cache of every run the tests start (in-process or CLI) lives in a throw-away dir,
# never in the checkout's experiments/.cache (tests that study the cache set paths.cache_dir).
os.environ.setdefault("FTLAB_CACHE_DIR", tempfile.mkdtemp(prefix="ftlab-test-cache-"))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

#: Overrides that make a run take a couple of seconds on a tiny model.
FAST = [
    "task.num_examples=240",
    "train.max_steps=12",
    "train.batch_size=8",
    "train.eval_batch_size=32",
    "train.log_every_n_steps=2",
    "task.eval_examples=16",
    "task.max_new_tokens=8",
]


def compose(*overrides: str):
    from ftlab.preflight.compose import compose_run

    return compose_run(list(overrides))


def assert_refused(overrides: list[str], message: str) -> None:
    """Composing ``overrides`` ends in one :class:`ConfigError` line starting with ``message``."""
    from ftlab.core.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        compose(*overrides)
    assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)


def run_tiny(run_dir: Path, *overrides: str, callbacks: list | None = None):
    """Compose ``FAST + overrides`` and run it into ``run_dir``; returns (cfg, task metric)."""
    from ftlab.recipe.run import run

    cfg = compose(*FAST, *overrides)
    return cfg, run(cfg, run_dir=run_dir, extra_callbacks=callbacks)


def cli(*args: str, cwd: Path | None = None, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m <args>`` as a user would type it."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd or ROOT, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows) of a CSV a run wrote (loss_log.csv, stage_metrics.csv, ...)."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"


@pytest.fixture
def refused_in_process(capsys, monkeypatch):
    """``python -m ftlab ARGV`` run by the same ``ftlab.__main__.main`` in this process, for an input
    the preflight refuses before Hydra starts: a new interpreter adds ~10 s of imports and nothing
    the assertions read. Returns (exit status, stdout, stderr); a command that gets past the
    preflight fails the test (Hydra is never started here)."""
    from ftlab import __main__ as entry  # the package's entry point: loaded only by the tests that use it

    def passed_the_preflight() -> None:
        raise AssertionError("the preflight let this command through to Hydra")

    monkeypatch.setattr(entry, "hydra_main", passed_the_preflight)

    def call(*argv: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_:
            entry.main(list(argv))
        out = capsys.readouterr()
        return exit_.value.code, out.out, out.err

    return call
