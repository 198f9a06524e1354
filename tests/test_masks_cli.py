"""``python -m ftlab.masks``: files per level, the same masks a run computes, bad input leaves
nothing behind."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ftlab.masks import main
from ftlab.models import build_model, build_tokenizer
from ftlab.preflight.compose import compose_run
from ftlab.sparsity.compute import compute_masks
from ftlab.sparsity.io import load_masks
from ftlab.sparsity.masks import sparsity_of

ROOT = Path(__file__).resolve().parents[1]
CAL = ["sparsity.calibration.batches=2", "sparsity.calibration.batch_size=4", "task.num_examples=60"]



def test_cli_writes_masks_reports_and_matches_a_run(tmp_path):
    out = tmp_path / "masks"
    args = ["sparsity.importance=wanda", "sparsity.group=row", "sparsity.levels=[0.5,0.7,0.9]", *CAL]
    proc = subprocess.run([sys.executable, "-m", "ftlab.masks", *args, f"hydra.run.dir={out}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "level-0.50", "level-0.70", "level-0.90",
                                                     "summary.csv"]
    with open(out / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["level"] for r in rows] == ["0.5", "0.7", "0.9"]
    # A training run with the same overrides computes the same masks on the fly.
    cfg = compose_run(["sparsity=unstructured", *args[:2], "sparsity.level=0.7", *CAL])
    tok = build_tokenizer(cfg.model)
    expected = compute_masks(cfg, build_model(cfg.model, tok, seed=cfg.seed), tok)
    masks, meta = load_masks(out / "level-0.70" / "mask.safetensors")
    assert set(masks) == set(expected) and all(torch.equal(masks[n], expected[n]) for n in masks)
    assert meta["model"] == "tiny_llama" and meta["importance"] == "wanda" and meta["level"] == 0.7
    for name, entry in meta["layers"].items():
        assert entry["sparsity"] == pytest.approx(sparsity_of(masks[name]))
        assert abs(entry["sparsity"] - 0.7) <= 0.005
    with open(out / "level-0.70" / "layer_sparsity.csv") as fh:
        table = list(csv.DictReader(fh))
    assert {r["layer"] for r in table} == set(masks)
    assert (out / "level-0.70" / "sparsity.png").read_bytes()[:4] == b"\x89PNG"


def test_pt_format(tmp_path):
    out = tmp_path / "pt"
    main(["sparsity=nm", f"hydra.run.dir={out}", "--format=pt"])
    masks, meta = load_masks(out / "level-0.50" / "mask.pt")
    assert meta["method"] == "nm" and meta["level"] == 0.5 and meta["n"] == 2 and meta["m"] == 4
    assert all(m.dtype == torch.bool for m in masks.values())


@pytest.mark.parametrize(("args", "message"), [
    (["sparsity.levels=[0.5,1.0]"], "sparsity.levels[1]=1.0 is invalid: a number in [0, 1)"),
    (["sparsity.level=-0.2"], "sparsity.level=-0.2 is invalid"),
    (["sparsity=nm", "sparsity.n=4", "sparsity.m=2"], "sparsity.n=4 is invalid"),
    (["sparsity=structured", "sparsity.structure=head"], "has no heads"),
    (["sparsity.importance=hessian"], "sparsity.importance='hessian' is invalid"),
    (["sparsity.method=magic"], "sparsity.method='magic' is invalid"),
    (["sparsity=none"], "sparsity='none' is invalid: a pruning method"),
    (["--format=npz"], "--format='npz' is invalid"),
])
def test_bad_input_one_line_no_files(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main([*args, f"hydra.run.dir={out}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ftlab: error: ") and message in err[0]
    assert list(tmp_path.iterdir()) == []  # no output dir, no staging dir


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch, capsys):
    """A level that fails after another was written: the staged files are removed too."""
    import ftlab.sparsity.stats as stats

    calls = {"n": 0}
    real = stats.plot_histogram

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(*a, **k)

    monkeypatch.setattr(stats, "plot_histogram", flaky)
    out = tmp_path / "out"
    with pytest.raises(OSError):
        main(["sparsity.levels=[0.5,0.7]", f"hydra.run.dir={out}"])
    assert calls["n"] == 2
    assert list(tmp_path.iterdir()) == []
