"""``stage_metrics.csv`` (StageMetrics): one row at the last optimiser step of every stage, with
that stage's threshold and lr, the gates' sparsity, and the task metrics of the model as it stood
at that step; a resume records a stage that ended at the checkpoint if its row is missing."""

from __future__ import annotations

import lightning as L
import pytest

from conftest import read_csv
from ftlab.callbacks.checkpoints import PeriodicCheckpoint
from ftlab.callbacks.stage_metrics import COLUMNS, FILE, StageMetrics, metric_key
from ftlab.data.inference import loss_on
from ftlab.evaluation.metrics import exact_match
from ftlab.training.state import STATE_FILE
from tiny_training import tiny_fit, tiny_parts

STAGES = ["adapter=sora", "adapter.gate_init=normal", "schedule=stages",
          "schedule.stages=[{iters:2,lr:1e-3,sparse_lambda_2:0.01},{iters:3,lr:5e-4,sparse_lambda_2:0.2,name:late}]"]


class EvalProbe(L.Callback):
    """Val loss and exact match of the model after every optimiser step (ftlab's scorers, called here)."""

    def __init__(self, dm, cfg):
        self.dm, self.cfg, self.by_step = dm, cfg, {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        model, tok, c = pl_module.adapted.model, self.dm.tokenizer, self.cfg
        model.eval()
        self.by_step[trainer.global_step] = (
            loss_on(model, tok, self.dm.splits.val, c.task.max_length, c.train.eval_batch_size),
            exact_match(model, tok, self.dm.splits.test[:c.task.eval_examples], c.task.max_new_tokens,
                        c.train.eval_batch_size),
            pl_module.adapted.sparsity())
        model.train()


def test_one_row_per_stage_end_with_its_settings_and_metrics(tmp_path):
    cfg, dm, module = tiny_parts(*STAGES)
    probe = EvalProbe(dm, cfg)
    tiny_fit(cfg, dm, module, [probe, StageMetrics(tmp_path, cfg)], max_steps=5)
    header, rows = read_csv(tmp_path / FILE)
    assert metric_key(cfg) == "eval_exact_match" and header == COLUMNS + ["eval_exact_match"]
    assert [(r["stage"], r["name"], r["step"]) for r in rows] == [("0", "stage0", "2"), ("1", "late", "5")]
    assert [float(r["sparse_lambda_2"]) for r in rows] == [0.01, 0.2]
    assert [float(r["lr"]) for r in rows] == [1e-3, 5e-4]
    for r in rows:
        val, em, sparsity = probe.by_step[int(r["step"])]
        assert float(r["val_loss"]) == pytest.approx(val, abs=1e-5)
        assert float(r["eval_exact_match"]) == pytest.approx(em)
        assert float(r["overall_sparsity"]) == pytest.approx(sparsity, abs=1e-6)
    assert int(rows[-1]["effective_params"]) == module.adapted.effective_params()
    assert int(rows[-1]["trainable_params"]) == module.adapted.trainable_params()


def test_without_evaluation_the_metric_columns_stay_empty(tmp_path):
    cfg, dm, module = tiny_parts(*STAGES, "eval.enabled=false")
    tiny_fit(cfg, dm, module, [StageMetrics(tmp_path, cfg)], max_steps=5)
    header, rows = read_csv(tmp_path / FILE)
    assert metric_key(cfg) is None and header == COLUMNS
    assert [r["step"] for r in rows] == ["2", "5"] and {r["val_loss"] for r in rows} == {""}


def test_resume_at_a_stage_end_records_the_missing_row(tmp_path):
    cfg, dm, module = tiny_parts(*STAGES, "eval.generate=false")
    tiny_fit(cfg, dm, module, [StageMetrics(tmp_path, cfg), PeriodicCheckpoint(tmp_path, 2, at_epoch_end=False)],
             max_steps=2)
    assert [r["step"] for r in read_csv(tmp_path / FILE)[1]] == ["2"]
    (tmp_path / FILE).unlink()  # lost (e.g. written after the checkpoint's copy was taken)
    cfg, dm, module = tiny_parts(*STAGES, "eval.generate=false")
    tiny_fit(cfg, dm, module, [StageMetrics(tmp_path, cfg)], max_steps=5,
             ckpt=tmp_path / "checkpoints" / "checkpoint-epoch0-step2" / STATE_FILE)
    assert [r["step"] for r in read_csv(tmp_path / FILE)[1]] == ["2", "5"]
