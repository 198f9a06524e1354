"""The sweep-job composition the fused and Cerebras launchers share: a job's config is the one
Hydra's basic launcher would run (its overrides applied, its job id and number set) and its dir
the one Hydra's ``run_job`` will create."""

from __future__ import annotations

import os
from pathlib import Path

from hydra import initialize_config_dir
from hydra._internal.callbacks import Callbacks  # what HydraContext holds; Hydra keeps it internal
from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import setup_globals
from hydra.types import HydraContext, RunMode

from ftlab.launchers.sweep_jobs import job_dir, sweep_job_config
from ftlab.preflight.compose import config_dir
from ftlab.preflight.store import register_configs


def test_a_job_is_composed_with_its_overrides_id_and_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    setup_globals()
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        base = loader.load_configuration("config", ["hydra.sweep.dir=sweeps/x"], run_mode=RunMode.MULTIRUN)
        ctx = HydraContext(config_loader=loader, callbacks=Callbacks())
        job = sweep_job_config(ctx, base, ["adapter.r=16", "schedule.lr=3e-3"], 5)
    assert job.adapter.r == 16 and float(job.schedule.lr) == 3e-3
    assert job.hydra.job.id == "5" and job.hydra.job.num == 5  # Hydra types the id as a string
    assert job_dir(job) == Path(os.path.abspath("sweeps/x")) / "5" == tmp_path / "sweeps/x/5"
