"""logger=mlflow: Lightning's MLFlowLogger gets the resolved config as params and every evaluation of
eval.every_n_steps as metrics at its step; the tests read the store back with mlflow's own client."""

from __future__ import annotations

import os

import pytest
from mlflow.tracking import MlflowClient

from conftest import compose, read_csv, run_tiny
from ftlab.training.loggers import get_logger, mlflow_uri


@pytest.fixture(autouse=True)
def _file_store(monkeypatch):
    """The client reading a file store back needs the same opt-in the logger sets for a run."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", os.environ.get("MLFLOW_ALLOW_FILE_STORE", "true"))


def only_run(uri: str, experiment: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r} in {uri}"
    (run,) = client.search_runs([exp.experiment_id])
    return client, run


@pytest.mark.slow
def test_mlflow_gets_params_and_the_eval_log(tmp_path):
    run_dir = tmp_path / "run"
    cfg, _ = run_tiny(run_dir, "logger=mlflow", "eval.every_n_steps=2", "train.max_steps=4",
                      "train.save_epoch_checkpoints=false", "adapter.r=2")
    assert (run_dir / "mlruns").is_dir()  # the local default: a file store inside the run dir
    client, run = only_run(mlflow_uri(cfg, run_dir), cfg.name)
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert run.data.params["adapter/r"] == "2" and run.data.params["train/max_steps"] == "4"
    assert run.data.params["seed"] == str(cfg.seed)
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_loss")}
    _, rows = read_csv(run_dir / "eval_log.csv")
    assert sorted(history) == [int(r["step"]) for r in rows] == [2, 4]
    for row in rows:
        assert history[int(row["step"])] == pytest.approx(float(row["val_loss"]), rel=1e-5)


def test_mlflow_tracking_uri_and_names(tmp_path):
    """logger.tracking_uri / experiment / run_name are used as given; the run dir gets no store."""
    store = (tmp_path / "store").as_uri()
    cfg = compose("logger=mlflow", f"logger.tracking_uri={store}", "logger.experiment=dora-table",
                  "logger.run_name=r16", "adapter.r=16")
    logger = get_logger("mlflow").build(cfg, tmp_path / "run")
    logger.log_metrics({"val_loss": 1.5}, step=3)
    logger.finalize("success")
    client, run = only_run(store, "dora-table")
    assert run.info.run_name == "r16" and run.data.params["adapter/r"] == "16"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_loss")] == [(3, 1.5)]
    assert not (tmp_path / "run" / "mlruns").exists()
