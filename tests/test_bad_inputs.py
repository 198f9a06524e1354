"""Issue 15's acceptance table: wrong inputs across every config group, the data formats, mask and
checkpoint files, resume and hardware. Each one must end the command before anything starts:

- ``preflight`` (what ``python -m ftlab`` runs before Hydra) raises :class:`FtlabError`;
- its line ``ftlab: error: ...`` is one line and names the key or file, the bad value and what is
  allowed (each case lists the substrings that show it);
- nothing is left behind: no run dir (``hydra.run.dir`` / ``hydra.sweep.dir`` point into a fresh
  dir), no cache entry (the test cache dir is unchanged);
- where no file must be read it fails within one composition (measured in the same test) + 1 s.

The CLI path is the same function; a few subprocess cases at the end prove the exit status, the
absence of a traceback and of a run dir end to end, and that an error raised only after Hydra has
created the run dir removes that dir again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from conftest import ROOT, cli
from ftlab.core.errors import FtlabError, report_error
from ftlab.data.checks import _facts
from ftlab.preflight.compose import compose_config, expand_sweep
from ftlab.preflight.launch import preflight
from real_task_files import boolq_rows, gsm8k_rows, hellaswag_rows, write_jsonl, write_parquet


@dataclass(frozen=True)
class Case:
    id: str
    overrides: tuple[str, ...]
    # substrings the one line must contain: the key or file, the bad value, what is allowed
    expect: tuple[str, ...]
    reads_file: bool = False  # a data/mask/checkpoint/model file must be read to find the mistake
    multirun: bool = False
    env: dict = field(default_factory=dict)


def C(id: str, *overrides: str, expect: tuple[str, ...], **kw) -> Case:  # noqa: N802 - table constructor
    return Case(id, tuple(overrides), tuple(expect), **kw)


F = {"reads_file": True}
GPU_LESS = not torch.cuda.is_available()

CASES = [
    # -- model ---------------------------------------------------------------------------------
    C("model-option", "model=gpt5", expect=("model=", "gpt5", "tiny_llama")),
    C("model-dtype", "model.dtype=int8", expect=("model.dtype", "int8", "float32")),
    C("model-tokenizer", "model.tokenizer=sentencepiece", expect=("model.tokenizer", "sentencepiece", "byte")),
    C("model-tokenizer-auto-no-dir", "model.tokenizer=auto", expect=("model.tokenizer", "auto", "name_or_path")),
    C("model-arch", "model.arch=gpt9", expect=("model.arch", "gpt9", "llama")),
    C("model-heads", "model.config.hidden_size=65", expect=("model.config.hidden_size", "65", "multiple of")),
    C("model-kv-heads", "model.config.num_key_value_heads=3", expect=("model.config.num_attention_heads", "4",
                                                                       "num_key_value_heads=3")),
    C("model-zero-layers", "model.config.num_hidden_layers=0", expect=("num_hidden_layers", "0", ">= 1")),
    C("model-config-new-key", "model.config.vocab_size=300", expect=("model.config.vocab_size", "hidden_size",
                                                                       "+model.config.vocab_size=VALUE")),
    C("model-target-modules", "model.target_modules=[qproj]", expect=("model.target_modules", "qproj", "q_proj")),
    C("model-dir-missing", "model.name_or_path={tmp}/no-model", expect=("model.name_or_path", "no-model",
                                                                         "local HF model directory"), **F),
    C("model-dir-empty", "model.name_or_path={tmp}/empty-model", expect=("model.name_or_path", "empty-model",
                                                                          "config.json"), **F),
    C("model-dir-no-weights", "model.name_or_path={tmp}/config-only", expect=("model.name_or_path", "config-only",
                                                                               "weights"), **F),
    C("model-dir-bad-config", "model.name_or_path={tmp}/broken-config", expect=("model.name_or_path",
                                                                                 "broken-config", "config.json"), **F),
    # -- adapter -------------------------------------------------------------------------------
    C("adapter-option", "adapter=lorax", expect=("adapter=", "lorax", "lora")),
    C("adapter-rank", "adapter.r=0", expect=("adapter.r", "0", ">= 1")),
    C("adapter-alpha", "adapter.alpha=0", expect=("adapter.alpha", "0", "> 0")),
    C("adapter-dropout", "adapter.dropout=1.0", expect=("adapter.dropout", "1.0", "[0, 1)")),
    C("adapter-foreign-key", "adapter.sparse_lambda=0.1", expect=("adapter.sparse_lambda", "allowed")),
    C("adapter-targets-empty", "adapter.target_modules=[]", expect=("adapter.target_modules", "[]", "non-empty")),
    C("adapter-targets-unknown", "adapter=sora", "adapter.target_modules=[q_proj,zz]",
      expect=("adapter.target_modules", "zz", "q_proj")),
    C("sora-gate-init", "adapter=sora", "adapter.gate_init=zeros", expect=("adapter.gate_init", "zeros", "ones")),
    C("sora-lambda", "adapter=sora", "adapter.sparse_lambda=-1", expect=("adapter.sparse_lambda", "-1", ">= 0")),
    C("sora-xi-schedule", "adapter=sora", "adapter.xi_schedule=linear", expect=("adapter.xi_schedule", "linear",
                                                                                 "constant")),
    C("masked-dense", "adapter=masked", expect=("adapter", "masked", "sparsity=")),
    # -- sparsity ------------------------------------------------------------------------------
    C("sparsity-level-without-method", "sparsity.level=0.5", expect=("sparsity.level", "0.5", "sparsity=unstructured")),
    C("sparsity-nm-without-method", "sparsity.n=3", expect=("sparsity.n", "3", "sparsity=none")),
    C("sparsity-method", "sparsity.method=magic", expect=("sparsity.method", "magic", "unstructured")),
    C("sparsity-level-range", "sparsity=unstructured", "sparsity.level=1.5", expect=("sparsity.level", "1.5", "[0, 1)")),
    C("sparsity-nm", "sparsity=nm", "sparsity.n=4", "sparsity.m=4", expect=("sparsity.n", "4", "[1, sparsity.m=4)")),
    C("sparsity-importance", "sparsity=unstructured", "sparsity.importance=vibes",
      expect=("sparsity.importance", "vibes", "magnitude")),
    C("sparsity-group", "sparsity=structured", "sparsity.group=row", expect=("sparsity.group", "row", "'layer'")),
    C("sparsity-modules", "sparsity=unstructured", "sparsity.modules=[]", expect=("sparsity.modules", "[]",
                                                                                   "non-empty")),
    C("mask-suffix", "sparsity.mask_path={tmp}/mask.txt", expect=("sparsity.mask_path", "mask.txt", ".safetensors")),
    C("mask-missing", "sparsity.mask_path={tmp}/none.safetensors", expect=("sparsity.mask_path", "none.safetensors",
                                                                            "existing mask file"), **F),
    C("mask-shape", "sparsity.mask_path={tmp}/wrong-shape.safetensors",
      expect=("sparsity.mask_path", "wrong-shape.safetensors", "shape"), **F),
    C("mask-pt-shape", "sparsity.mask_path={tmp}/wrong-shape.pt", expect=("sparsity.mask_path", "wrong-shape.pt",
                                                                           "shape"), **F),
    C("mask-not-bool", "sparsity.mask_path={tmp}/float.safetensors", expect=("sparsity.mask_path", "float.safetensors",
                                                                              "boolean"), **F),
    C("mask-garbage", "sparsity.mask_path={tmp}/garbage.safetensors", expect=("sparsity.mask_path",
                                                                               "garbage.safetensors", "readable"), **F),
    C("mask-pt-pickle", "sparsity.mask_path={tmp}/pickled.pt", expect=("sparsity.mask_path", "pickled.pt",
                                                                        "plain tensors"), **F),
    # -- schedule ------------------------------------------------------------------------------
    C("schedule-option", "schedule=weird", expect=("schedule=", "weird", "cosine")),
    C("schedule-lr", "schedule.lr=0", expect=("schedule.lr", "0", "> 0")),
    C("schedule-warmup", "schedule.warmup_steps=-1", expect=("schedule.warmup_steps", "-1", ">= 0")),
    C("schedule-floor", "schedule.min_lr_ratio=2", expect=("schedule.min_lr_ratio", "2", "[0, 1]")),
    C("stage-without-lr", "schedule=stages", "schedule.stages=[{iters: 3}]",
      expect=("schedule.stages[0].lr", "???", "every stage")),
    C("stage-without-lr-multirun", "schedule=stages", "schedule.stages=[{iters: 3}]", "seed=1,2",
      expect=("schedule.stages[0].lr", "???", "every stage"), multirun=True),
    C("stages-empty", "schedule=stages", "schedule.stages=[]", expect=("schedule.stages", "[]", "non-empty")),
    C("stage-iters", "schedule=stages", "schedule.stages=[{iters: 0, lr: 1e-3}]",
      expect=("schedule.stages[0].iters", "0", ">= 1")),
    # -- hardware ------------------------------------------------------------------------------
    *([C("gpu-on-cpu-machine", "hardware=gpu", expect=("hardware", "gpu", "hardware=cpu")),
       C("multi-gpu-on-cpu-machine", "hardware=multi_gpu", expect=("hardware", "multi_gpu", "CUDA device"))]
      if GPU_LESS else []),
    C("hardware-option", "hardware=tpu_pod", expect=("hardware=", "tpu_pod", "cpu")),
    C("hardware-accelerator", "hardware.accelerator=tpu", expect=("hardware.accelerator", "tpu", "cpu")),
    C("hardware-devices", "hardware.devices=0", expect=("hardware.devices", "0", ">= 1")),
    C("hardware-precision", "hardware.precision=8-bit", expect=("hardware.precision", "8-bit", "bf16-mixed")),
    C("hardware-strategy", "hardware.strategy=bogus", expect=("hardware", "strategy=bogus", "Lightning accepts")),
    C("hardware-cerebras-single", "hardware=cerebras", expect=("hardware", "cerebras", "hydra/launcher=cerebras")),
    C("multirun-multi-process", "hardware.devices=2", "seed=1,2", expect=("hardware.devices", "2",
                                                                           "hydra/launcher=slurm"), multirun=True),
    C("slurm-tasks", "hydra/launcher=slurm", "hydra.launcher.tasks_per_node=2", "seed=1,2",
      expect=("hydra.launcher.tasks_per_node", "2", "hardware.devices=1"), multirun=True),
    # -- task ----------------------------------------------------------------------------------
    C("task-option", "task=unknown", expect=("task=", "unknown", "capitalization")),
    C("task-path-missing", "task.path={tmp}/missing.jsonl", expect=("task.path", "missing.jsonl", "existing")),
    C("task-val-fraction", "task.val_fraction=0", expect=("task.val_fraction", "0", "(0, 1)")),
    C("task-fraction-sum", "task.val_fraction=0.6", "task.test_fraction=0.5", expect=("task.val_fraction",
                                                                                       "1.1", "< 1")),
    C("task-max-length", "task.max_length=0", expect=("task.max_length", "0", ">= 1")),
    C("task-metric", "task.metric=bleu", expect=("task.metric", "bleu", "exact_match")),
    C("task-metric-mc", "task.metric=accuracy", expect=("task.metric", "accuracy", "multiple-choice")),
    C("task-real-no-path", "task=boolq", expect=("task.path", "None", "boolq")),
    C("task-option-typo", "+task.options.max_word=3", expect=("task.options.max_word", "3", "max_words")),
    C("task-option-range", "task.options.max_words=0", expect=("task.options.max_words", "0", ">= 1")),
    C("task-option-ops", "task=arithmetic", "task.options.ops=[x]", expect=("task.options.ops", "x", "'+'")),
    C("task-all-truncated", "task.max_length=3", expect=("task.max_length", "3", "truncated inside their answer")),
    # -- runs that would train nothing (zero optimiser steps) ------------------------------------
    C("zero-steps-synthetic", "task.num_examples=3", expect=("train.batch_size", "16", "at most 1",
                                                             "task.num_examples=3")),
    C("zero-steps-small-source", "task.num_examples=19", expect=("train.batch_size", "16", "at most 15")),
    C("zero-steps-jsonl", "task.path={tmp}/five.jsonl", expect=("train.batch_size", "16", "five.jsonl"), **F),
    C("zero-steps-boolq", "task=boolq", "task.path={tmp}/boolq-small.jsonl", "train.batch_size=32",
      expect=("train.batch_size", "32", "boolq-small.jsonl"), **F),
    C("zero-steps-base", "base.enabled=true", "base.num_examples=8", expect=("base.batch_size", "32", "at most 8")),
    C("source-too-small", "task.path={tmp}/two.jsonl", expect=("task.path", "two.jsonl", "at least 3"), **F),
    # -- data files ----------------------------------------------------------------------------
    C("jsonl-not-json", "task.path={tmp}/not-json.jsonl", expect=("not-json.jsonl:2", "not valid JSON"), **F),
    C("jsonl-missing-field", "task.path={tmp}/no-answer.jsonl", expect=("no-answer.jsonl:1", "'answer'",
                                                                         "required"), **F),
    C("jsonl-non-string", "task.path={tmp}/types.jsonl", expect=("types.jsonl:3", "'prompt'=5", "string"), **F),
    C("jsonl-null-answer", "task.path={tmp}/null-answer.jsonl", expect=("null-answer.jsonl:2", "'answer'=None",
                                                                         "string"), **F),
    C("jsonl-empty", "task.path={tmp}/empty.jsonl", expect=("empty.jsonl", "no examples"), **F),
    C("jsonl-array-rows", "task.path={tmp}/arrays.jsonl", expect=("arrays.jsonl:1", "list", "one object per line"), **F),
    C("jsonl-binary", "task.path={tmp}/binary.jsonl", expect=("binary.jsonl", "UTF-8", "JSON Lines"), **F),
    C("boolq-answer-type", "task=boolq", "task.path={tmp}/boolq-str.jsonl", expect=("boolq-str.jsonl:1", "'yes'",
                                                                                     "true or false"), **F),
    C("boolq-parquet-column", "task=boolq", "task.path={tmp}/boolq-nopassage.parquet",
      expect=("boolq-nopassage.parquet", "'passage'", "required"), **F),
    C("parquet-corrupt", "task=boolq", "task.path={tmp}/corrupt.parquet", expect=("corrupt.parquet",
                                                                                  "not a readable parquet"), **F),
    C("hellaswag-label", "task=hellaswag", "task.path={tmp}/hellaswag-label.jsonl",
      expect=("hellaswag-label.jsonl:1", "'label'=7", "[0, 3]"), **F),
    C("gsm8k-no-final", "task=gsm8k", "task.path={tmp}/gsm8k-nofinal.jsonl", expect=("gsm8k-nofinal.jsonl:1",
                                                                                      "'answer'", "####"), **F),
    # -- train / base / eval / top level ---------------------------------------------------------
    C("train-batch", "train.batch_size=0", expect=("train.batch_size", "0", ">= 1")),
    C("train-accumulate", "train.accumulate_grad_batches=0", expect=("train.accumulate_grad_batches", "0", ">= 1")),
    C("train-clip", "train.gradient_clip_val=-1", expect=("train.gradient_clip_val", "-1", "> 0")),
    C("train-steps", "train.max_steps=0", expect=("train.max_steps", "0", ">= 1")),
    C("train-typo", "train.batch_sise=4", expect=("train.batch_sise", "TrainConfig", "batch_size")),
    C("train-added-key", "+train.lr=1e-3", expect=("train.lr", "TrainConfig", "batch_size")),
    C("base-lr", "base.enabled=true", "base.lr=0", expect=("base.lr", "0", "> 0")),
    C("eval-type", "eval.enabled=maybe", expect=("eval.enabled", "maybe", "bool")),
    C("seed-type", "seed=abc", expect=("seed", "abc", "Integer")),
    C("top-level-added-key", "+lr=1e-3", expect=("lr", "RunConfig", "schedule")),
    C("experiment-option", "+experiment=quickstrat", expect=("experiment", "quickstrat", "quickstart")),
    C("reuse-type", "reuse.enabled=maybe", expect=("reuse.enabled", "maybe", "bool")),
    # -- logger --------------------------------------------------------------------------------
    C("logger-option", "logger=comet", expect=("logger=", "comet", "wandb")),
    C("logger-mode", "logger=wandb", "logger.mode=sometimes", expect=("logger.mode", "sometimes", "offline")),
    C("wandb-online-no-key", "logger=wandb", "logger.mode=online", expect=("logger.mode", "online", "WANDB_API_KEY"),
      env={"WANDB_API_KEY": None, "NETRC": "{tmp}/no-netrc"}),
    # -- output and cache dirs -----------------------------------------------------------------
    C("cache-dir-unwritable", "paths.cache_dir={ro}/cache", "base.enabled=true",
      expect=("paths.cache_dir", "/cache", "writable")),
    C("cache-dir-under-file", "paths.cache_dir={tmp}/five.jsonl/cache", "schedule=stages",
      expect=("paths.cache_dir", "five.jsonl", "not a directory")),
    C("local-cache-unwritable", "paths.local_cache_dir={ro}/local", "base.enabled=true",
      expect=("paths.local_cache_dir", "/local", "writable")),
    C("run-dir-unwritable", "hydra.run.dir={ro}/run", expect=("hydra.run.dir", "/run", "writable")),
    C("mlflow-store-unwritable", "logger=mlflow", "logger.tracking_uri=file:{ro}/mlruns",
      expect=("logger.tracking_uri", "/mlruns", "MLflow's file store")),
    C("sweep-dir-unwritable", "hydra.sweep.dir={ro}/sweep", "seed=1,2", expect=("hydra.sweep.dir", "/sweep", "writable"),
      multirun=True),
    # -- resume / checkpoint files ---------------------------------------------------------------
    C("resume-missing", "resume={tmp}/no-ckpt", expect=("resume", "no-ckpt", "state.ckpt")),
    C("resume-dir-without-state", "resume={tmp}/empty-model", expect=("resume", "empty-model", "has no state.ckpt"),
      **F),
    C("resume-not-checkpoint", "resume={tmp}/five.jsonl", expect=("resume", "five.jsonl", "torch checkpoint"), **F),
    C("resume-truncated", "resume={tmp}/truncated-ckpt", expect=("resume", "truncated-ckpt",
                                                                 "complete torch checkpoint"), **F),
    C("resume-bad-meta", "resume={tmp}/bad-meta-ckpt", expect=("resume", "bad-meta-ckpt", "global_step"), **F),
    C("resume-newer-format", "resume={tmp}/newer-ckpt", expect=("resume", "newer-ckpt/state.ckpt",
                                                                "its state format is 99; this ftlab reads format 1, 2"), **F),
]


def _files(root: Path) -> None:
    """Every bad file the table names, made once."""
    ok = [{"prompt": f"Capitalize: w{i}\nAnswer:", "answer": f" W{i}"} for i in range(5)]
    write_jsonl(root / "five.jsonl", ok)
    write_jsonl(root / "two.jsonl", ok[:2])
    (root / "not-json.jsonl").write_text(json.dumps(ok[0]) + "\n{prompt: oops}\n")
    write_jsonl(root / "no-answer.jsonl", [{"prompt": "p"}])
    write_jsonl(root / "types.jsonl", [*ok[:2], {"prompt": 5, "answer": " five"}, *ok[2:]])
    write_jsonl(root / "null-answer.jsonl", [ok[0], {"prompt": "p", "answer": None}, *ok[1:]])
    (root / "empty.jsonl").write_text("\n\n")
    (root / "arrays.jsonl").write_text('["p", "a"]\n')
    (root / "binary.jsonl").write_bytes(b"\x80\x81\xfe\xff" * 64)
    write_jsonl(root / "boolq-small.jsonl", boolq_rows(20))
    write_jsonl(root / "boolq-str.jsonl", [{**r, "answer": "yes"} for r in boolq_rows(4)])
    write_parquet(root / "boolq-nopassage.parquet", [{k: v for k, v in r.items() if k != "passage"}
                                                     for r in boolq_rows(4)])
    (root / "corrupt.parquet").write_bytes(b"PAR1" + os.urandom(64))
    write_jsonl(root / "hellaswag-label.jsonl", [{**r, "label": 7} for r in hellaswag_rows(4)])
    write_jsonl(root / "gsm8k-nofinal.jsonl", [{**r, "answer": "It is 5."} for r in gsm8k_rows(4)])
    # model dirs
    (root / "empty-model").mkdir()
    (root / "config-only").mkdir()
    (root / "config-only" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (root / "broken-config").mkdir()
    (root / "broken-config" / "config.json").write_text("{not json")
    (root / "broken-config" / "model.safetensors").write_bytes(b"")
    # masks
    from safetensors.torch import save_file

    name = "model.layers.0.self_attn.q_proj.weight"
    save_file({name: torch.ones(3, 3, dtype=torch.bool)}, str(root / "wrong-shape.safetensors"))
    torch.save({name: torch.ones(3, 3, dtype=torch.bool)}, root / "wrong-shape.pt")
    save_file({name: torch.ones(128, 128)}, str(root / "float.safetensors"))
    (root / "garbage.safetensors").write_bytes(os.urandom(256))
    torch.save({name: Path("not a tensor")}, root / "pickled.pt")
    # checkpoints
    trunc = root / "truncated-ckpt"
    trunc.mkdir()
    torch.save({"global_step": 3, "state_dict": {"w": torch.zeros(64, 64)}}, trunc / "state.ckpt")
    data = (trunc / "state.ckpt").read_bytes()
    (trunc / "state.ckpt").write_bytes(data[: len(data) // 2])  # a full disk mid-write
    bad_meta = root / "bad-meta-ckpt"
    bad_meta.mkdir()
    torch.save({"global_step": 3}, bad_meta / "state.ckpt")
    assert zipfile.is_zipfile(bad_meta / "state.ckpt")
    (bad_meta / "meta.json").write_text('{"step": 3}')
    newer = root / "newer-ckpt"  # written by a later ftlab
    newer.mkdir()
    torch.save({"global_step": 3, "state_dict": {}, "ftlab_state": {"format": 99}}, newer / "state.ckpt")
    (newer / "meta.json").write_text('{"global_step": 3, "ftlab_state": {"format": 99}}')


def _unwritable_dir() -> Path | None:
    """A directory where creating a file fails although ``os.access`` may say yes (root): /sys."""
    from ftlab.preflight.environment import unwritable_reason

    for cand in (Path("/sys"), Path("/proc")):
        if cand.is_dir() and unwritable_reason(cand / "x") is not None:
            return cand
    return None


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """(files dir, unwritable dir, seconds of one warm composition, cache dir listing)."""
    root = tmp_path_factory.mktemp("bad-inputs")
    _files(root)
    preflight([f"hydra.run.dir={root}/warm"], multirun=False)  # imports and caches of a valid run
    compose_config([])
    return root, _unwritable_dir()


def _cache_listing() -> list[str]:
    cache = Path(os.environ["FTLAB_CACHE_DIR"])
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")) if cache.is_dir() else []


def _fill(text: str, root: Path, ro: Path | None) -> str:
    return text.replace("{tmp}", str(root)).replace("{ro}", str(ro))


def test_table_has_enough_cases():
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)
    assert sum(c.id.startswith("zero-steps") for c in CASES) >= 4


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_up_front_with_one_line(case: Case, table, tmp_path: Path, monkeypatch):
    root, ro = table
    if "{ro}" in " ".join(case.overrides) and ro is None:
        pytest.skip("no directory on this machine refuses file creation")
    for key, value in case.env.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, _fill(value, root, ro))
    overrides = [_fill(o, root, ro) for o in case.overrides]
    outputs = [] if any(o.startswith(("hydra.run.dir=", "hydra.sweep.dir=")) for o in overrides) else \
        [f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/sweep"]
    cache_before = _cache_listing()

    # The yardstick: composing what the command composes anyway (one config; every job of a
    # sweep), measured right before. On a loaded machine one attempt can lose its time slice
    # between the two measurements: up to 3 attempts, each paying for the data checks afresh.
    timings = []
    for _ in range(1 if case.reads_file else 3):
        _facts.cache_clear()
        t0 = time.perf_counter()
        if case.multirun:
            [compose_config(job) for job in expand_sweep(["seed=1,2"])]
        else:
            compose_config([])
        composition = time.perf_counter() - t0
        t0 = time.perf_counter()
        with pytest.raises(FtlabError) as err:
            preflight([*overrides, *outputs], multirun=case.multirun)
        timings.append((time.perf_counter() - t0, composition))
        if timings[-1][0] < composition + 1.0:
            break

    line = f"ftlab: error: {err.value}"
    assert "\n" not in line, line
    for part in case.expect:
        assert _fill(part, root, ro) in line, f"{part!r} not in {line!r}"
    assert report_error(err.value) == 2  # the CLI's exit status for this error
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()
    assert _cache_listing() == cache_before
    if not case.reads_file:
        assert any(e < c + 1.0 for e, c in timings), f"(preflight s, composition s): {timings}"


def test_valid_small_inputs_pass(table, tmp_path: Path):
    """The checks refuse what cannot work, not what is merely small: one full batch trains."""
    root, _ = table
    out = [f"hydra.run.dir={tmp_path}/run"]
    preflight(["task.num_examples=20", *out], multirun=False)  # 16 train examples = one batch of 16
    preflight([f"task.path={root}/five.jsonl", "train.batch_size=3", *out], multirun=False)
    preflight(["adapter=none", "task.num_examples=3", *out], multirun=False)  # eval-only control: no step
    preflight(["task.max_length=20", *out], multirun=False)  # some answers cut: warned, not refused


def test_partial_truncation_is_reported_in_one_line(table, tmp_path: Path, caplog):
    _facts.cache_clear()
    with caplog.at_level("WARNING", logger="ftlab"):
        preflight(["task.max_length=24", f"hydra.run.dir={tmp_path}/run"], multirun=False)
    lines = [r.getMessage() for r in caplog.records if "truncates" in r.getMessage()]
    assert len(lines) == 1 and "task.max_length=24 truncates" in lines[0] and "of 1600 train examples" in lines[0]


def test_byte_token_count_matches_the_tokenizer():
    from ftlab.data.checks import token_counter
    from ftlab.models import build_tokenizer

    tok = build_tokenizer(compose_config([]).model)
    count = token_counter(tok)
    for text in ("Capitalize: kol mavet\nAnswer:", " KOL MAVET", "ünïcödé ✓", "a\tb\n", ""):
        assert count(text) == len(tok.encode(text, add_special_tokens=False)), text


# -- end to end: the CLI ---------------------------------------------------------------------------

#: (id, args, needle, through a new interpreter): one case runs ``python -m ftlab`` for real, the
#: others the same ``main`` in this process (their refusal comes before Hydra starts)
CLI_CASES = [
    ("zero-steps", ["task.num_examples=3"], "train.batch_size=16", True),
    ("gpu", ["hardware=gpu"], "hardware='gpu'", False) if GPU_LESS else ("tasks", ["task=unknown"], "task='unknown'",
                                                                       False),
    ("stage-lr-multirun", ["--multirun", "schedule=stages", "schedule.stages=[{iters: 3}]", "seed=1,2"],
     "schedule.stages[0].lr", False),
]


@pytest.mark.slow
@pytest.mark.parametrize("args,needle,new_process", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_exit_2_one_line_nothing_left(args: list[str], needle: str, new_process: bool, tmp_path: Path,
                                                    refused_in_process):
    cache = tmp_path / "cache"
    argv = [*args, f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/sweep", f"paths.cache_dir={cache}"]
    if new_process:
        proc = cli("ftlab", *argv, timeout=300)
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    else:
        code, stdout, stderr = refused_in_process(*argv)
    assert code == 2, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ftlab: error: ") and needle in lines[0], stderr
    assert "Traceback" not in stderr + stdout
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists() and not cache.exists()


_LATE_FAILURE = """
import sys
import ftlab.recipe.run
from ftlab.core.errors import ConfigError

def run(cfg, *a, **k):  # what only the run can find out (e.g. weights that do not load)
    raise ConfigError("model.name_or_path", "weights", "loadable weights")

ftlab.recipe.run.run = run
from ftlab.__main__ import main
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_error_after_hydra_started_removes_the_empty_run_dir(tmp_path: Path):
    run_dir, kept = tmp_path / "run", tmp_path / "kept"
    (kept / "checkpoint-step2").mkdir(parents=True)  # a dir of value (e.g. resume=auto) stays
    (kept / "checkpoint-step2" / "meta.json").write_text('{"global_step": 2}')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}
    for d in (run_dir, kept):
        proc = subprocess.run([sys.executable, "-c", _LATE_FAILURE, f"hydra.run.dir={d}"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("ftlab: error: model.name_or_path")
        assert "Traceback" not in proc.stderr
    assert not run_dir.exists()
    assert (kept / "checkpoint-step2").is_dir() and (kept / ".hydra").is_dir()


def test_discard_if_empty_keeps_anything_of_value(tmp_path: Path):
    from ftlab.recipe.rundir import discard_if_empty

    sweep = tmp_path / "sweep"
    job = sweep / "0"
    (job / ".hydra").mkdir(parents=True)
    for name in ("config.yaml", "__main__.log", ".hydra/config.yaml"):
        (job / name).write_text("x")
    (sweep / "multirun.yaml").write_text("x")
    (tmp_path / "other" / "lightning_logs").mkdir(parents=True)
    (tmp_path / "other" / "loss_log.csv").write_text("step,loss\n")
    assert not discard_if_empty(tmp_path / "other") and (tmp_path / "other" / "loss_log.csv").exists()
    assert discard_if_empty(job, sweep) and not sweep.exists()
    shutil.rmtree(tmp_path / "other")
