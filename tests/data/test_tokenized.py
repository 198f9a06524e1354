"""Tokenized data as a cached step: built once, read memory-mapped, the same tokens and batch
order as an in-memory run; a source file changed after the plan is refused; a 9-job sweep over
one file tokenizes it once."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from lightning.pytorch import Callback
from safetensors.torch import load_file

from conftest import cli, compose, run_tiny
from ftlab.artifacts.manifest import tokenizer_fingerprint
from ftlab.core.errors import FtlabError
from ftlab.data.datamodule import TaskDataModule
from ftlab.data.encoding import encode
from ftlab.data.tokenized import tokenized_bytes
from ftlab.models import build_tokenizer
from ftlab.reuse.runner import StepRunner


def _alpaca(path: Path, n: int = 80) -> Path:
    rows = [{"instruction": f"Upper-case w{i}", "input": "" if i % 3 else f"x{i}", "output": f"W{i}"}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _cfg(tmp_path: Path, *extra: str):
    return compose("task=instruct", f"task.path={_alpaca(tmp_path / 'a.jsonl')}", "train.batch_size=4",
                   f"paths.cache_dir={tmp_path / 'cache'}", *extra)


def _batches(dm: TaskDataModule, n: int = 5) -> list:
    it = iter(dm.train_dataloader())
    return [next(it)["input_ids"].tolist() for _ in range(n)]


def test_built_once_memory_mapped_and_same_as_in_memory(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    tok = build_tokenizer(cfg.model)
    first = StepRunner(cfg)
    assert first.steps.data is not None and first.steps.data.cached
    dm = TaskDataModule(cfg, tok, runner=first)
    dm.setup()
    second = StepRunner(cfg)
    hit = TaskDataModule(cfg, tok, runner=second)
    hit.setup()
    assert first.records["data"]["cache_hit"] is False and second.records["data"]["cache_hit"] is True
    assert isinstance(hit.train_data.ids, np.memmap)
    assert hit.splits.train == [] and len(hit.train_data) == 64  # train lives on as the arrays only
    plain = TaskDataModule(cfg, tok)  # no runner: tokenized in memory, as every other task
    plain.setup()
    assert isinstance(plain.train_data, list)
    assert [list(e.input_ids) for e in hit.train_data] == [list(e.input_ids) for e in plain.train_data]
    assert [encode(tok, ex, 512) for ex in hit.splits.val] == list(hit.val_data)
    assert hit.splits.val == plain.splits.val and hit.splits.test == plain.splits.test  # what evaluation reads
    assert _batches(hit) == _batches(plain)  # the same data order (the sampler reads only the count)


def test_key_follows_the_data_not_the_adapter(tmp_path: Path) -> None:
    key = StepRunner(_cfg(tmp_path)).steps.data.key
    assert StepRunner(_cfg(tmp_path, "adapter.r=4", "train.batch_size=8")).steps.data.key == key
    assert StepRunner(_cfg(tmp_path, "task.max_length=256")).steps.data.key != key
    assert StepRunner(_cfg(tmp_path, "task.prompt_template='{instruction} {input}'")).steps.data.key != key
    assert StepRunner(compose("task=capitalization")).steps.data is None  # generated tasks: no data step


def test_a_dataset_directory_and_a_tokenizer_enter_the_key_by_content(tmp_path: Path) -> None:
    rows = [{"instruction": f"Upper-case w{i}", "input": "", "output": f"W{i}"} for i in range(40)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    time.sleep(0.01)  # the copy's files get other modification times
    shutil.copytree(tmp_path / "saved", tmp_path / "copy")

    def key(path: Path) -> str:
        return StepRunner(compose("task=instruct", f"task.path={path}")).steps.data.key

    assert key(tmp_path / "saved") == key(tmp_path / "copy")  # the same rows elsewhere: the same step
    rows[3]["output"] = "X3"  # one byte of one row
    shutil.rmtree(tmp_path / "copy")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "copy"))
    assert key(tmp_path / "saved") != key(tmp_path / "copy")
    # a model dir's tokenizer: its files other than weights, by content
    tok_dir = tmp_path / "model"
    tok_dir.mkdir()
    (tok_dir / "tokenizer.json").write_text('{"v": 1}')
    (tok_dir / "model.safetensors").write_bytes(b"weights")
    first = tokenizer_fingerprint(str(tok_dir))
    (tok_dir / "model.safetensors").write_bytes(b"other weights")
    assert tokenizer_fingerprint(str(tok_dir)) == first
    (tok_dir / "tokenizer.json").write_text('{"v": 2}')
    assert tokenizer_fingerprint(str(tok_dir)) != first


def test_file_changed_between_plan_and_run_is_refused(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    runner = StepRunner(cfg)  # the plan: its key holds the file's content hash
    _alpaca(tmp_path / "a.jsonl", n=81)
    with pytest.raises(FtlabError, match="a.jsonl: the data file changed between the plan and the run"):
        TaskDataModule(cfg, build_tokenizer(cfg.model), runner=runner).setup()


@pytest.mark.slow
def test_a_nine_job_sweep_tokenizes_once(tmp_path: Path) -> None:
    data = _alpaca(tmp_path / "a.jsonl")
    common = ["task=instruct", f"task.path={data}", "train.max_steps=1", "train.batch_size=4", "eval.enabled=false",
              "train.save_adapter=false", "train.save_merged_model=false", "train.save_epoch_checkpoints=false",
              f"paths.cache_dir={tmp_path / 'cache'}"]
    res = cli("ftlab", "--multirun", *common, "adapter.r=2,4,8", "schedule.lr=1e-3,2e-3,3e-3",
              f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert res.returncode == 0, res.stderr[-2000:]
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "sweep").glob("*/reuse_record.json"))]
    assert len(records) == 9
    assert sorted(r["data"]["cache_hit"] for r in records) == [False] + [True] * 8
    assert len({r["data"]["key"] for r in records}) == 1
    listing = cli("ftlab.cache", "ls", "--run", *common)
    assert listing.returncode == 0 and f"data      {records[0]['data']['key'][:16]}  in cache" in listing.stdout


class Crash(Callback):
    """Interrupts a fit after step ``at`` (Lightning re-raises after its teardown, like a SIGINT)."""

    def __init__(self, at: int):
        self.at = at

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.at:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_resume_on_the_cached_data_is_exact(tmp_path: Path) -> None:
    """Packed rows, epochs and a mid-epoch resume over the memory-mapped step give the weights and
    loss log of an uninterrupted run; both runs after the first read the store's entry."""
    data = _alpaca(tmp_path / "a.jsonl", n=60)
    args = ("task=instruct", f"task.path={data}", f"paths.cache_dir={tmp_path / 'cache'}", "train.packing=true",
            "train.max_steps=null", "train.max_epochs=2", "train.batch_size=2", "train.save_every_n_steps=2",
            "train.log_every_n_steps=1", "train.log_measurements=false", "eval.generate=false", "adapter.dropout=0.1", "task.max_length=48")
    run_tiny(tmp_path / "full", *args)
    with pytest.raises(BaseException):  # noqa: B017 - the simulated kill
        run_tiny(tmp_path / "resumed", *args, callbacks=[Crash(9)])
    run_tiny(tmp_path / "resumed", *args, "resume=auto")
    metrics = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == 8  # mid-way through the second epoch
    full_metrics = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert metrics["train_steps"] == full_metrics["train_steps"] == 12  # 48 examples packed in 12 rows: 6 steps per epoch
    records = [json.loads((tmp_path / d / "reuse_record.json").read_text())["data"] for d in ("full", "resumed")]
    assert [r["cache_hit"] for r in records] == [False, True]
    full = load_file(tmp_path / "full" / "adapter" / "adapter_model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "adapter" / "adapter_model.safetensors")
    assert full.keys() == resumed.keys() and all(torch.equal(full[k], resumed[k]) for k in full)
    assert (tmp_path / "full" / "loss_log.csv").read_text() == (tmp_path / "resumed" / "loss_log.csv").read_text()


def test_plan_estimates_the_artifact_size(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    runner = StepRunner(cfg)
    TaskDataModule(cfg, build_tokenizer(cfg.model), runner=runner).setup()
    artifact = runner.store.lookup(runner.steps.data.key).artifact
    actual = sum(f.stat().st_size for f in artifact.glob("*.npy"))
    assert 0.8 * actual <= tokenized_bytes(cfg) <= 1.2 * actual
