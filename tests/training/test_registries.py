"""Schedule and logger registries: a new one is a spec, read by the lr function, the plan of
steps, the trainer and the composition checks without any other edit."""

from __future__ import annotations

import pytest
from lightning.pytorch.loggers import CSVLogger

from ftlab.core.errors import ConfigError, fail
from ftlab.preflight.compose import compose_run
from ftlab.preflight.environment import check_logger
from ftlab.reuse.steps import as_plain, run_steps
from ftlab.training.loggers import LoggerSpec, get_logger, register_logger
from ftlab.training.schedules import ScheduleSpec, get_schedule, is_staged, lr_at, register_schedule
from ftlab.training.trainer import build_logger

#: A schedule registered by this test: half the lr after warm-up.
HALF = register_schedule(ScheduleSpec("test_half", lambda progress, floor: 0.5, doc="lr / 2"))


def test_builtin_schedules_and_staged_flag():
    assert {s for s in ("constant", "cosine", "linear", "stages") if get_schedule(s).staged} == {"stages"}
    with pytest.raises(ValueError, match="a decay function, or staged=True"):
        register_schedule(ScheduleSpec("broken", None))


def test_a_registered_schedule_drives_the_lr_and_the_plan():
    cfg = compose_run(["schedule=constant", "schedule.name=test_half", "schedule.warmup_steps=2", "schedule.lr=0.01"])
    assert [lr_at(i, cfg.schedule, 10) for i in (0, 1, 2, 9)] == pytest.approx([0.005, 0.01, 0.005, 0.005])
    assert not is_staged(cfg.schedule) and run_steps(as_plain(cfg)).stages == []
    staged = compose_run(["schedule=stages", "schedule.stages=[{iters:2,lr:1e-3},{iters:3,lr:5e-4}]"])
    assert is_staged(staged.schedule) and len(run_steps(as_plain(staged)).stages) == 2


def test_unknown_schedule_and_logger_are_one_line():
    with pytest.raises(ConfigError, match=r"schedule.name='nope' is invalid: one of \[.*'test_half'"):
        compose_run(["schedule.name=nope"])
    with pytest.raises(ConfigError, match=r"logger.name='nope' is invalid: one of \['csv'"):
        compose_run(["logger.name=nope"])
    with pytest.raises(ConfigError, match="logger.mode='loud'"):
        compose_run(["logger=wandb", "logger.mode=loud"])


def test_a_registered_logger_is_built_by_the_trainer(tmp_path):
    built = []

    def build(cfg, run_dir):
        built.append(run_dir)
        return CSVLogger(save_dir=str(run_dir), name="test_logs", version="")

    register_logger(LoggerSpec("test_csv", build))
    cfg = compose_run(["logger.name=test_csv"])
    logger = build_logger(cfg, tmp_path)
    assert built == [tmp_path] and logger.name == "test_logs"
    assert isinstance(get_logger("csv").build(cfg, tmp_path), CSVLogger)


def test_the_launch_preflight_runs_a_loggers_own_machine_checks(tmp_path):
    calls = []

    def machine(logger_cfg):
        calls.append(logger_cfg.name)
        fail("logger.token", None, "a token for the test service")

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    register_logger(LoggerSpec("test_store", lambda cfg, run_dir: None,
                               local_store=lambda lg: ("logger.store", str(blocker / "sub"), "the test store")))
    register_logger(LoggerSpec("test_online", lambda cfg, run_dir: None, check_machine=machine))
    with pytest.raises(ConfigError, match=r"logger.store='.*a_file/sub' is invalid: a writable directory for "
                                          r"the test store"):
        check_logger(compose_run(["logger.name=test_store"]))
    with pytest.raises(ConfigError, match=r"logger.token=None is invalid: a token for the test service"):
        check_logger(compose_run(["logger.name=test_online"]))
    assert calls == ["test_online"]
    check_logger(compose_run([]))  # csv: nothing outside the run dir, no credentials
