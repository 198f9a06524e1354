"""``python -m ftlab.validate``: the report, exit 0 / 1 / 2, and the checkpoint formats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ftlab.models import build_model, build_tokenizer
from ftlab.preflight.compose import compose_run
from ftlab.sparsity.apply import apply_masks_
from ftlab.sparsity.compute import compute_masks, spec_of
from ftlab.sparsity.io import save_masks
from ftlab.sparsity.stats import describe
from ftlab.validate import main

ROOT = Path(__file__).resolve().parents[1]
LEAKY = "model.layers.1.mlp.down_proj.weight"


@pytest.fixture(scope="module")
def sparse(tmp_path_factory):
    """A pruned tiny Llama saved in HF format, its mask file, and a copy with two leaks."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("validate")
    cfg = compose_run(["sparsity=unstructured", "sparsity.level=0.7"])
    tok = build_tokenizer(cfg.model)
    model = build_model(cfg.model, tok, seed=0)
    masks = compute_masks(cfg, model, tok)
    apply_masks_(model, masks)
    model.save_pretrained(str(root / "good"), safe_serialization=True)
    mask = save_masks(masks, root / "mask.safetensors",
                      describe(masks, model="tiny_llama", method="unstructured", importance="magnitude",
                               target=0.7, spec=spec_of(cfg.sparsity)))
    with torch.no_grad():
        w = dict(model.named_parameters())[LEAKY]
        (i, j), (k, m) = (~masks[LEAKY]).nonzero()[:2].tolist()
        w[i, j], w[k, m] = 0.25, -3.0
    model.save_pretrained(str(root / "leaky"), safe_serialization=True)
    yield root, masks, mask
    torch.set_num_threads(before)


def test_passing_checkpoint_subprocess(sparse, tmp_path):
    root, masks, mask = sparse
    report = tmp_path / "validation_report.json"
    proc = subprocess.run([sys.executable, "-m", "ftlab.validate", f"checkpoint={root / 'good'}", f"mask={mask}",
                           f"report={report}"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "validation passed" in proc.stdout
    data = json.loads(report.read_text())
    assert data["passed"] and data["leaks"] == 0 and data["max_abs_where_pruned"] == 0.0
    assert set(data["layers"]) == set(masks)
    for layer in data["layers"].values():
        assert layer["expected_sparsity"] == pytest.approx(0.7, abs=0.005)
        assert layer["achieved_sparsity"] >= layer["expected_sparsity"]


def test_leaks_fail_with_exit_1(sparse, tmp_path, capsys):
    root, _, mask = sparse
    report = tmp_path / "r.json"
    with pytest.raises(SystemExit) as exc:
        main([f"checkpoint={root / 'leaky'}", f"mask={mask}", f"report={report}"])
    assert exc.value.code == 1
    assert "validation failed: 2 leaks in 1 layers" in capsys.readouterr().err
    data = json.loads(report.read_text())
    assert not data["passed"] and data["leaks"] == 2 and data["max_abs_where_pruned"] == 3.0
    assert data["layers"][LEAKY]["leaks"] == 2 and not data["layers"][LEAKY]["passed"]


def test_state_dict_formats(sparse, tmp_path, capsys):
    """A Lightning checkpoint (``state_dict`` with the module's ``model.`` prefix) and a plain
    ``.safetensors`` file are read as well as a model directory."""
    root, _, mask = sparse
    from safetensors.torch import load_file

    weights = load_file(str(root / "good" / "model.safetensors"))
    ckpt_dir = tmp_path / "checkpoint-epoch0"
    ckpt_dir.mkdir()
    torch.save({"state_dict": {f"model.{k}": v for k, v in weights.items()}, "global_step": 3},
               ckpt_dir / "state.ckpt")
    main([f"checkpoint={ckpt_dir}", f"mask={mask}", f"report={tmp_path / 'a.json'}"])
    main([f"checkpoint={root / 'good' / 'model.safetensors'}", f"mask={mask}", f"report={tmp_path / 'b.json'}"])
    assert json.loads((tmp_path / "a.json").read_text())["passed"]
    assert json.loads((tmp_path / "b.json").read_text())["passed"]


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("case", ["wrong_shape", "not_bool", "unknown_key", "pickled", "missing_arg"])
def test_bad_input_exit_2(sparse, tmp_path, capsys, case):
    root, masks, mask = sparse
    args = [f"checkpoint={root / 'good'}", f"mask={mask}", f"report={tmp_path / 'r.json'}"]
    if case == "wrong_shape":
        bad = {**masks, "model.layers.0.self_attn.o_proj.weight": torch.ones(4, 4, dtype=torch.bool)}
        args[1] = f"mask={save_masks(bad, tmp_path / 'bad.safetensors', {'model': 'tiny_llama'})}"
        expected = "mask for model.layers.0.self_attn.o_proj.weight has shape [4, 4]"
    elif case == "not_bool":
        torch.save({n: m.to(torch.uint8) for n, m in masks.items()}, tmp_path / "u8.pt")
        args[1] = f"mask={tmp_path / 'u8.pt'}"
        expected = "has dtype uint8"
    elif case == "unknown_key":
        args.append("strict=true")
        expected = ("strict='true' is invalid: one of ['checkpoint=...', 'mask=...', 'report=...', 'speed=...', "
                    "'batch=...', 'seq=...']")
    elif case == "pickled":
        torch.save({"model.layers.0.mlp.up_proj.weight": Payload()}, tmp_path / "evil.pt")
        args[0] = f"checkpoint={tmp_path / 'evil.pt'}"
        expected = "a checkpoint of plain tensors (refused"
    else:
        args = args[1:]
        expected = "checkpoint=None is invalid: a path"
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0]
    assert not (tmp_path / "r.json").exists()


def test_a_dir_loaded_through_transformers_prints_no_progress_bar(tmp_path) -> None:
    """A merged MoE dir (experts saved per expert) is read through transformers' loader; its
    "Loading weights" bar stays off the console, as in a run (FTLAB_VERBOSE=1 brings it back)."""
    cfg = compose_run(["model=tiny_mixtral", "sparsity=unstructured", "sparsity.level=0.5"])
    tok = build_tokenizer(cfg.model)
    model = build_model(cfg.model, tok, seed=0)
    masks = compute_masks(cfg, model, tok)
    apply_masks_(model, masks)
    model.save_pretrained(str(tmp_path / "moe"))
    mask = save_masks(masks, tmp_path / "mask.safetensors",
                      describe(masks, model="tiny_mixtral", method="unstructured", importance="magnitude",
                               target=0.5, spec=spec_of(cfg.sparsity)))
    args = [sys.executable, "-m", "ftlab.validate", f"checkpoint={tmp_path / 'moe'}", f"mask={mask}",
            f"report={tmp_path / 'report.json'}"]
    quiet = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "OMP_NUM_THREADS": "1", "FTLAB_VERBOSE": "0"})
    assert quiet.returncode == 0 and "validation passed" in quiet.stdout, quiet.stderr
    assert quiet.stderr == ""
    loud = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "FTLAB_VERBOSE": "1"})
    assert loud.returncode == 0 and "Loading weights" in loud.stderr  # the bar the quiet run left out
