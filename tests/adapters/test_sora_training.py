"""SoRA / SDoRA end to end: the lambda sweep, the logs, resume, and the sparsifying stages."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import read_csv
from ftlab.preflight.compose import compose_run
from ftlab.recipe.run import run
from ftlab.training.state import META_FILE, STATE_FILE, find_latest_checkpoint

pytestmark = pytest.mark.slow

# tiny_llama linears as (in, out); two decoder layers
DIMS = {"q_proj": (128, 128), "k_proj": (128, 64), "v_proj": (128, 64), "o_proj": (128, 128),
        "gate_proj": (128, 256), "up_proj": (128, 256), "down_proj": (256, 128)}
LAYERS = [f"model.layers.{i}.{kind}.{t}" for i in range(2)
          for kind, ts in (("self_attn", ["q_proj", "k_proj", "v_proj", "o_proj"]),
                           ("mlp", ["gate_proj", "up_proj", "down_proj"])) for t in ts]
FAST = ["task.num_examples=200", "train.batch_size=16", "eval.generate=false", "train.log_measurements=false",
        "train.save_merged_model=false", "base.enabled=false"]


def test_lambda_sweep_more_lambda_more_zero_gates(tmp_path):
    """``sora_lambda_sweep`` through the CLI: lambda 0.1 < 0.3 < 0.5 gives strictly more zero gates."""
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "-m", "ftlab", "--multirun", "+experiment=sora_lambda_sweep", *FAST,
         "task.num_examples=400", "train.max_steps=30", "train.save_adapter=false",
         "train.save_epoch_checkpoints=false", f"paths.cache_dir={tmp_path / 'cache'}",
         f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    by_lambda = {}
    for job in sorted(p for p in sweep.iterdir() if (p / "metrics.json").is_file()):
        lam = float(next(o.split("=")[1] for o in (job / ".hydra" / "overrides.yaml").read_text().split()
                         if o.startswith("adapter.sparse_lambda=")))
        by_lambda[lam] = json.loads((job / "metrics.json").read_text())
    assert sorted(by_lambda) == [0.1, 0.3, 0.5]
    sparsity = [by_lambda[lam]["sparsity"] for lam in (0.1, 0.3, 0.5)]
    assert 0 < sparsity[0] < sparsity[1] < sparsity[2] < 1, sparsity
    effective = [by_lambda[lam]["effective_params"] for lam in (0.1, 0.3, 0.5)]
    assert effective[0] > effective[1] > effective[2]
    assert len({m["trainable_params"] for m in by_lambda.values()}) == 1


@pytest.mark.parametrize("name", ["sora", "sdora"])
def test_logs_and_effective_params(tmp_path, name):
    cfg = compose_run([*FAST, f"adapter={name}", "adapter.r=4", "adapter.gate_init=normal",
                       "adapter.sparse_lambda_2=0.05", "train.max_steps=12", "train.log_every_n_steps=4"])
    run(cfg, run_dir=tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    header, rows = read_csv(tmp_path / "sparsity_log.csv")
    assert header == ["epoch", "step", "overall_sparsity", *LAYERS]
    assert [int(r["step"]) for r in rows] == [4, 8, 12]
    last = rows[-1]
    per_layer = [float(last[n]) for n in LAYERS]
    assert all(v * 4 == int(v * 4) for v in per_layer)  # fractions of 4 gates
    assert float(last["overall_sparsity"]) == pytest.approx(sum(per_layer) / len(per_layer), abs=1e-6)
    assert float(last["overall_sparsity"]) == pytest.approx(metrics["sparsity"], abs=1e-6)
    assert 0 < metrics["sparsity"] < 1

    # hand count: live ranks k per layer from the log, k * (in + out) + k gates (+ out magnitudes)
    expected = 0
    for n in LAYERS:
        fan_in, fan_out = DIMS[n.rsplit(".", 1)[1]]
        k = round(4 * (1 - float(last[n])))
        expected += k * (fan_in + fan_out) + k + (fan_out if name == "sdora" else 0)
    assert metrics["effective_params"] == expected
    full = sum(4 * (i + o) + 4 + (o if name == "sdora" else 0) for i, o in DIMS.values()) * 2
    assert metrics["trainable_params"] == full > expected

    _, loss_rows = read_csv(tmp_path / "loss_log.csv")
    assert [float(r["sparsity"]) for r in loss_rows] == pytest.approx([float(r["overall_sparsity"]) for r in rows])
    history = json.loads((tmp_path / "training_history.json").read_text())
    assert history["sparsity"][-1] == pytest.approx(metrics["sparsity"])
    assert history["effective_params"][-1] == expected

    adapter = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert adapter["use_dora"] is (name == "sdora")
    ranks = {k.replace("\\", ""): v for k, v in adapter["rank_pattern"].items()}
    for n in LAYERS:
        k = round(4 * (1 - float(last[n])))
        if k:
            assert ranks[n] == k
        else:
            assert ranks.get(n, 0) == (1 if name == "sdora" else 0)


def _gates(ckpt_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt_dir / STATE_FILE, map_location="cpu", weights_only=True)
    return {k: v for k, v in state["state_dict"].items() if "lora_" in k}, state["optimizer_states"][0]


def test_resume_mid_training_gives_the_same_gates(tmp_path):
    """Interrupted at step 15 (mid-epoch, mid-stage) and resumed == uninterrupted, gates bit for bit."""
    overrides = [*FAST, "adapter=sora", "adapter.r=4", "adapter.gate_init=normal", "adapter.gate_lr=2e-2",
                 "schedule=stages", "schedule.stages=[{iters:8,lr:1e-2},{iters:12,lr:5e-3,sparse_lambda_2:0.02}]",
                 "adapter.sparse_lambda_2=5e-3", "train.save_every_n_steps=5", "train.log_every_n_steps=5",
                 "reuse.enabled=false", "train.save_adapter=false"]
    full = tmp_path / "full"
    run(compose_run(overrides), run_dir=full)

    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    for d in (cut / "checkpoints").iterdir():
        if json.loads((d / META_FILE).read_text())["global_step"] > 15:
            shutil.rmtree(d)
    for f in ("metrics.json", "adapter", "model"):
        shutil.rmtree(cut / f, ignore_errors=True) if (cut / f).is_dir() else (cut / f).unlink(missing_ok=True)
    assert json.loads((find_latest_checkpoint(cut) / META_FILE).read_text())["global_step"] == 15
    run(compose_run([*overrides, "resume=auto"]), run_dir=cut)

    a, opt_a = _gates(find_latest_checkpoint(full))
    b, opt_b = _gates(find_latest_checkpoint(cut))
    gate_keys = [k for k in a if k.endswith("lora_gate")]
    assert len(gate_keys) == 14 and a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert any((a[k] == 0).any() for k in gate_keys)  # the prox did zero some gates
    # both parameter groups (main and gates) carried their AdamW state through the resume
    assert [g["name"] for g in opt_a["param_groups"]] == ["main", "gates"]
    assert [g["lr"] for g in opt_a["param_groups"]] == [g["lr"] for g in opt_b["param_groups"]]
    for i, st in opt_a["state"].items():
        assert torch.equal(st["exp_avg_sq"], opt_b["state"][i]["exp_avg_sq"])
    assert (full / "sparsity_log.csv").read_text() == (cut / "sparsity_log.csv").read_text()
    assert (full / "stage_metrics.csv").read_text() == (cut / "stage_metrics.csv").read_text()
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (full, cut))
    assert ma["sparsity"] == mb["sparsity"] and ma["effective_params"] == mb["effective_params"]


def test_sparsify_stages_raise_xi_and_record_metric_vs_effective_params(tmp_path):
    stages = "schedule.stages=[{name:dense,iters:10,lr:1e-2},{iters:5,lr:1e-2},{iters:5,lr:1e-2}]"
    cfg = compose_run(["+experiment=sora_sparsify", *FAST, stages, "adapter.r=4", "adapter.xi_max=0.1",
                       "eval.generate=true", "task.eval_examples=4", "task.max_new_tokens=4",
                       f"paths.cache_dir={tmp_path / 'cache'}", "train.save_adapter=false"])
    run(cfg, run_dir=tmp_path / "run")
    out = tmp_path / "run"
    header, rows = read_csv(out / "stage_metrics.csv")
    assert header == ["stage", "name", "step", "sparse_lambda_2", "lr", "overall_sparsity", "effective_params",
                      "trainable_params", "val_loss", "eval_exact_match"]
    assert [(r["stage"], r["name"], r["step"]) for r in rows] == [("0", "dense", "10"), ("1", "stage1", "15"),
                                                                  ("2", "stage2", "20")]
    assert [float(r["sparse_lambda_2"]) for r in rows] == pytest.approx([0.0, 0.05, 0.1])  # linear 0 -> xi_max
    sparsity = [float(r["overall_sparsity"]) for r in rows]
    effective = [int(r["effective_params"]) for r in rows]
    assert sparsity == sorted(sparsity) and sparsity[-1] > sparsity[0]
    assert effective == sorted(effective, reverse=True) and effective[-1] < effective[0]
    assert all(0.0 <= float(r["eval_exact_match"]) <= 1.0 and float(r["val_loss"]) > 0 for r in rows)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["effective_params"] == effective[-1]
    assert metrics["val_loss"] == pytest.approx(float(rows[-1]["val_loss"]), abs=1e-5)
    _, slog = read_csv(out / "sparsity_log.csv")
    assert float(slog[-1]["overall_sparsity"]) == pytest.approx(sparsity[-1], abs=1e-6)
