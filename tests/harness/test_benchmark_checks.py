"""Early stopping and export settings fail in one line at the preflight, before anything loads."""

from __future__ import annotations

import pytest

from conftest import compose
from ftlab.core.errors import FtlabError
from ftlab.harness.benchmark_checks import check_evaluation
from ftlab.preflight.launch import preflight


@pytest.mark.parametrize("overrides, needle", [
    (["train.early_stopping.metric=eval/piqa"], "train.early_stopping.metric='eval/piqa' is invalid: a metric this "
                                                "run logs at each evaluation: ['val_loss']"),
    (["train.early_stopping.metric=val_loss", "train.early_stopping.mode=lowest"], "train.early_stopping.mode"),
    (["train.early_stopping.metric=val_loss", "train.early_stopping.patience=0"], "train.early_stopping.patience"),
    (["export.checkpoint=first"], "export.checkpoint='first' is invalid: last or best"),
    (["eval.enabled=false", "train.early_stopping.metric=val_loss"], "none (eval.enabled=false)"),
    (["eval.every_n_steps=0"], "eval.every_n_steps=0"),
])
def test_refused_in_one_line(overrides, needle):
    with pytest.raises(FtlabError) as err:
        check_evaluation(compose(*overrides))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_preflight_refuses_before_the_run_dir_exists(tmp_path):
    with pytest.raises(FtlabError, match="train.early_stopping.metric"):
        preflight([f"hydra.run.dir={tmp_path / 'r'}", "train.early_stopping.metric=eval/piqa"], multirun=False)
    assert not (tmp_path / "r").exists()


def test_logged_benchmark_metric_is_accepted(tmp_path):
    piqa = tmp_path / "valid.jsonl"
    piqa.write_text('{"goal": "g", "sol1": "a", "sol2": "b", "label": 0}\n')
    (cfg,) = preflight([f"hydra.run.dir={tmp_path / 'r'}", "eval.every_n_steps=5",
                        "eval.during_training.benchmarks=[piqa]", f"eval.data.piqa={piqa}",
                        "train.early_stopping.metric=eval/piqa", "train.early_stopping.mode=max"], multirun=False)
    assert cfg.train.early_stopping.metric == "eval/piqa"
