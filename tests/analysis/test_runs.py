"""End-to-end runs on a tiny model: output files and columns per adapter, the control run,
determinism, resume equivalence, the wandb logger offline."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

from conftest import run_tiny

pytestmark = pytest.mark.slow

LEADING = ["epoch", "step", "train_loss", "learning_rate", "gpu_memory_mb", "sparsity"]
HISTORY = ["epoch", "step", "train_loss", "val_loss", "epoch_time", "gpu_memory_mb", "trainable_params", "effective_params"]


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("adapter", ["lora", "dora", "full"])
def test_adapter_run_writes_outputs(adapter: str, run_dir: Path) -> None:
    # 240 examples -> 192 train / 8 per batch = 24 batches per epoch: 30 steps cross one epoch end
    run_tiny(run_dir, f"adapter={adapter}", "train.max_steps=30", "train.save_every_n_steps=10")
    header = (run_dir / "loss_log.csv").read_text().splitlines()[0].split(",")
    assert header[:6] == LEADING and header[6:] == ["cpu_rss_mb", "tokens_per_sec"]
    log = rows(run_dir / "loss_log.csv")
    assert [int(r["step"]) for r in log] == list(range(2, 31, 2))
    assert all(r["sparsity"] == "" and float(r["gpu_memory_mb"]) == 0.0 for r in log)
    assert {r["epoch"] for r in log} == {"0", "1"}

    hist = json.loads((run_dir / "training_history.json").read_text())
    assert list(hist) == HISTORY and hist["epoch"] == [0, 1] and hist["step"] == [24, 30]
    assert all(v is not None for v in hist["val_loss"])

    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert ckpts == ["checkpoint-epoch0", "checkpoint-epoch0-step10", "checkpoint-epoch0-step20",
                     "checkpoint-epoch1-step30"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("val_loss", "eval_exact_match", "train_time_s", "samples_per_sec", "tokens_per_sec",
                "peak_memory_mb", "trainable_params", "effective_params"):
        assert key in metrics, key
    assert metrics["train_steps"] == 30
    assert (run_dir / "model" / "model.safetensors").is_file()
    if adapter == "full":
        assert metrics["trainable_params"] == metrics["total_params"]
        assert not (run_dir / "adapter").exists()
    else:
        assert 0 < metrics["trainable_params"] < metrics["total_params"] / 5
        assert (run_dir / "adapter" / "adapter_config.json").is_file()


def test_merged_model_matches_peft_adapter(run_dir: Path) -> None:
    """model/ (merged, HF format) and adapter/ (peft format) on the run's base give the same logits."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from conftest import FAST, compose
    from ftlab.models import build_model, build_tokenizer

    run_tiny(run_dir, "adapter=dora", "train.max_steps=6", "schedule.lr=1e-2")
    merged = AutoModelForCausalLM.from_pretrained(run_dir / "model").eval()
    assert json.loads((run_dir / "adapter" / "adapter_config.json").read_text())["use_dora"] is True
    cfg = compose(*FAST, "adapter=dora")  # the same seeded base model the run started from
    base = build_model(cfg.model, build_tokenizer(cfg.model), seed=cfg.seed)
    peft_model = PeftModel.from_pretrained(base, run_dir / "adapter").eval()
    ids = torch.randint(3, 259, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(peft_model(input_ids=ids).logits, merged(input_ids=ids).logits, atol=1e-5, rtol=1e-5)


def test_control_run_trains_nothing(run_dir: Path) -> None:
    _, metric = run_tiny(run_dir, "adapter=none")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["trainable_params"] == 0 and metrics["train_steps"] == 0
    assert metric == metrics["eval_exact_match"] and "val_loss" in metrics
    assert not (run_dir / "loss_log.csv").exists() and not (run_dir / "checkpoints").exists()
    assert json.loads((run_dir / "training_history.json").read_text())["epoch"] == []


def test_same_seed_same_loss_log(tmp_path: Path) -> None:
    args = ("train.log_measurements=false", "train.save_merged_model=false", "eval.generate=false",
            "train.max_steps=16", "train.accumulate_grad_batches=2", "schedule=cosine")
    run_tiny(tmp_path / "a", *args)
    run_tiny(tmp_path / "b", *args)
    run_tiny(tmp_path / "c", *args, "seed=7")
    a, b, c = ((tmp_path / d / "loss_log.csv").read_bytes() for d in "abc")
    assert a == b and a != c


class Crash(L.Callback):
    """Simulates a killed job: raises after ``at`` optimiser steps (checkpoints were written)."""

    def __init__(self, at: int):
        self.at = at

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.at:
            raise KeyboardInterrupt  # Lightning re-raises after its teardown, like a real SIGINT


# 24 batches per epoch, checkpoints every 10 steps and at the epoch end (step 24)
@pytest.mark.parametrize("crash_at,resume_at", [(13, 10), (27, 24)])  # mid-epoch; from the epoch-end checkpoint
def test_resume_equals_uninterrupted(tmp_path: Path, crash_at: int, resume_at: int) -> None:
    args = ("train.max_steps=30", "train.save_every_n_steps=10", "train.log_measurements=false",
            "eval.generate=false", "adapter.dropout=0.1", "schedule=cosine", "adapter=dora")
    run_tiny(tmp_path / "full", *args)
    with pytest.raises(BaseException):  # noqa: B017 - the simulated kill
        run_tiny(tmp_path / "resumed", *args, callbacks=[Crash(crash_at)])
    assert not (tmp_path / "resumed" / "metrics.json").exists()
    run_tiny(tmp_path / "resumed", *args, "resume=auto")
    metrics = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == resume_at

    full = load_file(tmp_path / "full" / "adapter" / "adapter_model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "adapter" / "adapter_model.safetensors")
    assert full.keys() == resumed.keys()
    for k in full:
        assert torch.equal(full[k], resumed[k]), k
    assert (tmp_path / "full" / "loss_log.csv").read_text() == (tmp_path / "resumed" / "loss_log.csv").read_text()
    hist = [json.loads((tmp_path / d / "training_history.json").read_text()) for d in ("full", "resumed")]
    for key in ("epoch", "step", "train_loss", "val_loss"):
        assert hist[0][key] == hist[1][key], key


def test_wandb_offline_writes_run_dir(run_dir: Path) -> None:
    run_tiny(run_dir, "logger=wandb", "train.max_steps=4", "eval.generate=false", "train.save_merged_model=false")
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert any(f.suffix == ".wandb" and f.stat().st_size > 0 for f in runs[0].iterdir())


def test_local_hf_dir_as_base_model(tmp_path: Path) -> None:
    """``model.name_or_path`` = a local HF dir (here: a run's merged ``model/``, with its saved
    byte tokenizer): the control run on it reproduces the trained run's val_loss."""
    run_tiny(tmp_path / "trained", "adapter=lora", "train.max_steps=8", "schedule.lr=1e-2", "eval.generate=false")
    trained = json.loads((tmp_path / "trained" / "metrics.json").read_text())
    run_tiny(tmp_path / "control", "adapter=none", f"model.name_or_path={tmp_path / 'trained' / 'model'}",
             "model.tokenizer=auto", "eval.generate=false")
    control = json.loads((tmp_path / "control" / "metrics.json").read_text())
    assert control["val_loss"] == pytest.approx(trained["val_loss"], abs=1e-5)
