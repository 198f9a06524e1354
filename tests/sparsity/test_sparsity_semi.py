"""2:4 speed: on a machine without the kernels the validate option and the benchmark say why in
one line (validate: exit 2, nothing written; benchmark: exit 0); the 2:4 pattern check is exact."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ftlab.sparsity.masks import nm_mask
from ftlab.sparsity.semi import is_two_four, unsupported_reason
from ftlab.validate import main as validate_main

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_two_four_pattern():
    w = torch.randn(8, 16)
    pruned = w * nm_mask(w.abs(), 2, 4)
    assert is_two_four(pruned) and not is_two_four(w)
    pruned[3, 5] = 1.0 if pruned[3, 5] == 0 else pruned[3, 5]
    pruned[3, 4] = pruned[3, 6] = pruned[3, 7] = 1.0  # a group with more than 2 non-zeros
    assert not is_two_four(pruned)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cpu_says_why_in_one_line(tmp_path, capsys):
    report = tmp_path / "r.json"
    # python -m ftlab.validate's main in this process (tests/test_validate_cli.py runs a real one)
    with pytest.raises(SystemExit) as exit_:
        validate_main([f"checkpoint={tmp_path}", "mask=m.safetensors", f"report={report}", "speed=2:4"])
    assert exit_.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == f"ftlab: error: speed=2:4 cannot be measured here: {unsupported_reason()}"
    assert not report.exists()
    bench = subprocess.run([sys.executable, "benchmarks/sparse_speed.py"], cwd=ROOT, capture_output=True, text=True,
                           timeout=120, env=ENV)
    assert bench.returncode == 0
    assert bench.stdout.strip() == f"sparse_speed: cannot measure: {unsupported_reason()}"


def test_bad_speed_value_is_one_line(tmp_path):
    from ftlab.core.errors import ConfigError
    from ftlab.validate import parse_args

    with pytest.raises(ConfigError, match=r"speed='4:8' is invalid: one of \['2:4'\]"):
        parse_args([f"checkpoint={tmp_path}", "mask=m", "speed=4:8"])


def test_nm_mask_stays_on_the_scores_device():
    """The mask is built where the scores live (CUDA weights gave a cpu/cuda scatter error);
    the meta device stands in for CUDA here: any device other than the CPU shows the bug."""
    score = torch.empty(8, 16, device="meta")
    assert nm_mask(score, 2, 4).device == score.device
