"""The console of a run: one header, one step bar (loss, lr in scientific notation, memory, ETA),
the summary line; library lines once, known-harmless ones filtered; ``FTLAB_VERBOSE=1`` restores."""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import FAST, ROOT, compose, run_tiny
from ftlab.core.console import (
    ConsoleFilter,
    ConsoleFormatter,
    configure_run_console,
    help_requested,
    route_library_loggers,
)
from ftlab.masks import main as masks_main
from ftlab.models import build_model, build_tokenizer
from ftlab.training.progress import (
    StepProgressBar,
    eta_s,
    fmt_count,
    fmt_duration,
    header,
    memory_mb,
    postfix,
)


def test_postfix_shows_small_lr_and_memory():
    text = postfix({"loss": torch.tensor(2.34567), "lr": 1e-4, "mem_mb": 0.0}, 512.4, on_gpu=False)
    assert text == "loss 2.3457 · lr 1.00e-04 · rss 512 MB"
    assert postfix({"lr": 3e-6, "sparsity": 0.3125}, 80.0, on_gpu=True) == "lr 3.00e-06 · gpu 80 MB · sparsity 0.312"


def test_durations_counts_and_eta():
    assert fmt_duration(59.6) == "1:00" and fmt_duration(3725) == "1:02:05"
    assert fmt_count(394_600) == "394.6K" and fmt_count(8_030_000_000) == "8.0B" and fmt_count(12) == "12"
    assert eta_s(0, 10, 5.0) is None and eta_s(5, 10, 5.0) == pytest.approx(5.0)


def test_memory_is_the_process_rss_on_cpu():
    assert memory_mb() > 10  # a Python process with torch loaded holds well over 10 MB


def test_header_names_model_adapter_params_steps_hardware_outputs_and_reuse(tmp_path: Path):
    cfg = compose("sparsity=unstructured", "sparsity.level=0.5")
    model = torch.nn.Linear(100, 10)
    adapted = SimpleNamespace(model=model, trainable_params=lambda: 110)
    record = {"reuse_enabled": True, "base": {"cached": True, "cache_hit": True},
              "mask": {"cached": True, "cache_hit": False}}
    line = header(cfg, adapted, 100, 40, tmp_path, record, stage_hit=True)
    for part in ("ftlab: tiny_llama (llama, 1.0K params) + lora on a unstructured 0.5 sparse base",
                 "trainable 110 / 1.0K params (10.89%)",
                 "100 steps (resuming at 40)", "batch 16", "cpu 32-true",
                 "reuse: base hit, mask built, stage hit (step 40)", f"outputs {tmp_path}"):
        assert part in line, (part, line)
    assert "\n" not in line
    assert "reuse off" in header(compose("reuse.enabled=false"), adapted, 5, 0, tmp_path, {"reuse_enabled": False})
    record["data"] = {"cached": True, "cache_hit": True}  # task=instruct's tokenized data step
    assert "reuse: data hit, base hit, mask built" in header(cfg, adapted, 100, 0, tmp_path, record)


def test_console_filter_and_format(monkeypatch):
    def rec(name: str, level: int, msg: str) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, msg, None, None)

    monkeypatch.delenv("FTLAB_VERBOSE", raising=False)
    flt, fmt = ConsoleFilter(), ConsoleFormatter()
    gpu = rec("lightning.pytorch.utilities.rank_zero", logging.INFO, "GPU available: False, used: False")
    assert not flt.filter(gpu)
    assert flt.filter(rec("ftlab", logging.INFO, "eval_exact_match=1.0"))
    warn = rec("lightning.pytorch.trainer", logging.WARNING, "careful")
    assert not flt.filter(warn) and not flt.filter(rec("py.warnings", logging.WARNING, "UserWarning: ..."))
    assert fmt.format(warn) == "warning (lightning.pytorch.trainer): careful"
    assert flt.filter(rec("lightning.pytorch.trainer", logging.ERROR, "broken"))
    assert flt.filter(rec("ftlab.data", logging.WARNING, "task.max_length truncates ..."))
    assert fmt.format(rec("ftlab", logging.INFO, "summary")) == "summary"
    monkeypatch.setenv("FTLAB_VERBOSE", "1")
    assert flt.filter(gpu)


def test_lightning_lines_are_routed_once(monkeypatch):
    lg = logging.getLogger("lightning.pytorch")
    own = logging.StreamHandler(io.StringIO())
    saved = (list(lg.handlers), lg.propagate)
    lg.addHandler(own)
    lg.propagate = False
    try:
        route_library_loggers()
        assert own not in lg.handlers and lg.propagate
    finally:
        lg.handlers[:] = saved[0]
        lg.propagate = saved[1]


def test_verbose_brings_progress_bars_and_warnings_back(monkeypatch):
    from transformers.utils import logging as hf_logging

    monkeypatch.delenv("FTLAB_VERBOSE", raising=False)
    try:
        assert configure_run_console(hydra_verbose=False) is False
        assert not hf_logging.is_progress_bar_enabled()
        assert configure_run_console(hydra_verbose=True) is True  # hydra.verbose sets FTLAB_VERBOSE
        assert hf_logging.is_progress_bar_enabled()
    finally:
        # not monkeypatch.delenv: it would record the "1" set_verbose wrote and put it back at
        # teardown, leaking verbose mode into every later test's subprocesses
        os.environ.pop("FTLAB_VERBOSE", None)
        hf_logging.enable_progress_bar()


def test_plain_step_bar_of_a_short_run(tmp_path: Path):
    """Without a terminal (SLURM logs, pipes): at most ~10 lines, step counts of the whole run."""
    out = io.StringIO()
    run_tiny(tmp_path / "run", "train.max_steps=30", "schedule.lr=1e-4", "eval.enabled=false",
             "train.save_merged_model=false", callbacks=[StepProgressBar(stream=out, tty=False)])
    lines = out.getvalue().splitlines()
    assert 10 <= len(lines) <= 11 and lines[-1].startswith("train step 30/30 (100%)")
    assert all(re.fullmatch(r"train step \d+/30 \(\d+%\) · loss \d+\.\d{4} · lr 1\.00e-04 · rss \d+ MB · eta "
                            r"\d+:\d\d", ln) for ln in lines), lines


def test_step_bar_of_an_epoch_counted_run_names_the_epoch(tmp_path: Path):
    """train.max_epochs=2 over 40 train examples in batches of 8: steps 1-5 are epoch 1/2, 6-10 epoch 2/2."""
    out = io.StringIO()
    run_tiny(tmp_path / "run", "task.num_examples=50", "train.max_steps=null", "train.max_epochs=2",
             "eval.enabled=false", "train.save_merged_model=false",
             callbacks=[StepProgressBar(stream=out, tty=False, epochs=2)])
    labels = [re.match(r"train epoch (\d)/2 step (\d+)/10 ", ln).groups() for ln in out.getvalue().splitlines()]
    assert labels == [("1" if step <= 5 else "2", str(step)) for step in range(1, 11)]


@pytest.mark.slow
def test_cli_console_of_a_short_run(tmp_path: Path):
    # stdout and stderr into one pipe, in the order a terminal shows them
    proc = subprocess.run([sys.executable, "-m", "ftlab", *FAST, "train.max_steps=20", f"hydra.run.dir={tmp_path}/run"],
                          cwd=ROOT, env={**os.environ, "FTLAB_VERBOSE": ""}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)
    console = proc.stdout
    assert proc.returncode == 0, console
    lines = [ln for ln in console.splitlines() if ln.strip()]
    headers = [ln for ln in lines if ln.startswith("ftlab: tiny_llama (llama, ") and " + lora" in ln]
    assert len(headers) == 1 and "20 steps" in headers[0] and f"outputs {tmp_path}/run" in headers[0]
    bar = [ln for ln in lines if ln.startswith("train step ")]
    assert 10 <= len(bar) <= 11 and "lr 1.00e-03" in bar[-1] and "rss" in bar[-1] and "eta" in bar[-1]
    summary = [ln for ln in lines if ln.startswith("eval_exact_match=")]
    assert len(summary) == 1 and lines[-1] == summary[0]
    for noise in ("GPU available", "TPU available", "Tip:", "eval mode", "Writing model shards", "Epoch ",
                  "LeafSpec", "is_gradient_checkpointing", "mem_mb", "kernels-community", "Traceback"):
        assert noise not in console, noise
    assert all(n == 1 for n in Counter(lines).values()), Counter(lines).most_common(3)
    assert len(lines) == 1 + len(bar) + 1, lines  # header, bar, summary: nothing else
    log = (tmp_path / "run" / "__main__.log").read_text()
    assert "GPU available" in log  # the detail is in the run's log file


def test_help_is_answered_before_parsing(capsys):
    """-h/--help prints the tool's docstring and wins over a bad argument beside it."""
    assert not help_requested(["checkpoint=x"], "doc")
    assert help_requested(["strict=true", "-h"], "the doc")
    assert capsys.readouterr().out == "the doc\n"
    masks_main(["--format=npz", "--help"])  # a bad --format alone exits 2
    out = capsys.readouterr()
    assert out.out.startswith("``python -m ftlab.masks") and out.err == ""


@pytest.mark.slow
def test_console_names_the_loaded_dir_prints_only_computed_metrics_and_no_library_warning(tmp_path: Path):
    """Issue 22, deliverable 7: a model dir under a preset's name, no evaluation, a resume from
    mid-epoch and an epoch shorter than Lightning's logging interval (both warn in Lightning)."""
    model_dir = tmp_path / "my-model"  # another model's weights, though its dims fit the preset's config
    cfg = compose()
    build_model(cfg.model, build_tokenizer(cfg.model), seed=7).save_pretrained(model_dir)
    args = [*FAST, "task.num_examples=100", "train.max_steps=14", "train.save_every_n_steps=4", "eval.enabled=false",
            "train.save_merged_model=false", f"model.name_or_path={model_dir}",
            f"hydra.run.dir={tmp_path}/run"]
    consoles = []
    for extra in ([], ["resume=auto"]):
        if extra:  # cut the run back to a mid-epoch checkpoint, as after a crash
            for ckpt in (tmp_path / "run" / "checkpoints").iterdir():
                if not ckpt.name.endswith("-step4"):
                    shutil.rmtree(ckpt)
        proc = subprocess.run([sys.executable, "-m", "ftlab", *args, *extra], cwd=ROOT,
                              env={**os.environ, "FTLAB_VERBOSE": ""}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout
        consoles.append(proc.stdout)
    for console in consoles:
        lines = [ln for ln in console.splitlines() if ln.strip()]
        header = [ln for ln in lines if ln.startswith("ftlab: ")]
        assert len(header) == 1 and header[0].startswith(f"ftlab: {model_dir} (llama, "), header
        assert "tiny_llama" not in console
        assert lines[-1] == f"trained 14 steps, no evaluation (eval.enabled=false); outputs in {tmp_path}/run"
        assert "nan" not in lines[-1]
        for noise in ("warning (", "Warning", "warn(", "smaller than the logging interval", "before the epoch ended"):
            assert noise not in console, (noise, console)
    log = (tmp_path / "run" / "__main__.log").read_text()
    assert "py.warnings" in log  # the library warnings are kept in the run's log file
