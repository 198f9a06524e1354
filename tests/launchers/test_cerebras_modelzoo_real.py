"""Opt-in: ftlab's Cerebras YAMLs against the real ModelZoo (Release_2.10.0, cerebras_pytorch 2.10).

Set ``FTLAB_MODELZOO_PYTHON`` to the python of an environment with cerebras_pytorch 2.10.0 (it needs
torch 2.4.0) and ModelZoo importable (``FTLAB_MODELZOO_PYTHONPATH`` is added to its PYTHONPATH, e.g.
ModelZoo's ``src`` checkout). Without it this test is skipped: the facts it checks are also pinned
without ModelZoo by tests/launchers/test_cerebras_names.py and tests/launchers/test_cerebras_yaml_matrix.py.

What runs there (tests/fixtures/modelzoo_check.py): ModelZoo's ``validate_trainer_params`` on every
YAML of the matrix; for tiny models ModelZoo's own model class, its ``make_model_lora`` with our
``lora_params`` and cerebras.pytorch's glob matching of our ``param_filter``; for gmp the final level
from cerebras.pytorch's schedule classes. A YAML in the old layout (precision fields in the model) is
included as a control that the validation does reject what issue 12 found. And the real ``cszoo fit``
on ModelZoo's CPU backend, through ftlab's launcher, for every adapter and sparsity combination
ftlab allows on Cerebras (:func:`test_real_cszoo_fit_trains_every_variant_on_the_cpu_backend`).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from ftlab.launchers.cerebras_names import modelzoo_param_names
from ftlab.launchers.cerebras_options import CerebrasOptions
from ftlab.launchers.cerebras_params import cszoo_params, pruned_weight_names
from ftlab.preflight.compose import compose_run

PYTHON = os.environ.get("FTLAB_MODELZOO_PYTHON")
#: run by PYTHON in the ModelZoo environment: ModelZoo's checks, its CLI, HF models and checkpoint facts
CHECK = str(ROOT / "tests" / "fixtures" / "modelzoo_check.py")
#: the environment of every ModelZoo subprocess (ModelZoo importable)
ZOO_ENV = {**os.environ, "PYTHONPATH": os.environ.get("FTLAB_MODELZOO_PYTHONPATH", "")}
TINY_MIXTRAL = ["model=mixtral_8x7b", "model.name=tiny_mixtral", "model.tokenizer=byte", "model.name_or_path=null",
                "model.config.hidden_size=128", "model.config.intermediate_size=256", "model.config.num_hidden_layers=2",
                "model.config.num_attention_heads=4", "model.config.num_key_value_heads=2",
                "model.config.num_local_experts=4", "model.config.max_position_embeddings=256"]
PRESETS = {"tiny_llama": ["model=tiny_llama"], "tiny_mistral": ["model=tiny_mistral"], "tiny_mixtral": TINY_MIXTRAL,
           "llama3_8b": ["model=llama3_8b"], "mistral_7b": ["model=mistral_7b"], "mixtral_8x7b": ["model=mixtral_8x7b"]}
VARIANTS = {
    "lora": ["adapter=lora"],
    "full": ["adapter=full"],
    "masked_static": ["adapter=masked", "sparsity=unstructured", "sparsity.level=0.7"],
    "full_gmp": ["adapter=full", "sparsity=unstructured", "sparsity.level=0.7"],
    "stages": ["adapter=lora", "schedule=stages", "schedule.stages=[{iters:30,lr:1e-3},{iters:70,lr:1e-4}]"],
    "fp32": ["adapter=lora", "hardware.precision=float32"],
    "cbfloat16": ["adapter=lora", "hardware.precision=cbfloat16"],
}


@pytest.mark.slow
@pytest.mark.skipif(not PYTHON, reason="set FTLAB_MODELZOO_PYTHON to a python with cerebras_pytorch 2.10 + ModelZoo")
def test_yamls_pass_the_real_modelzoo(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "yaml"
    out.mkdir()
    expected = {}
    for preset, model in PRESETS.items():
        for variant, overrides in VARIANTS.items():
            gmp = variant == "full_gmp"
            opts = CerebrasOptions(train_data_dir=str(data), val_data_dir=str(data), checkpoint_path="/cb/base.mdl",
                                   sparsity_algorithm="gmp" if gmp else "static", sparsity_update_freq=10,
                                   target_device="CPU" if variant == "fp32" else "CSX")  # CSX: refused
            cfg = compose_run(["hardware=cerebras", *model, "train.max_steps=100", *overrides])
            name = f"{preset}-{variant}.yaml"
            (out / name).write_text(yaml.safe_dump(cszoo_params(cfg, opts), sort_keys=False))
            if variant == "full_gmp":  # masked_static: the base is masked before the run (no block)
                expected[name] = sorted(mz for n in pruned_weight_names(cfg) for mz in modelzoo_param_names(cfg.model.arch, n))
    control = yaml.safe_load((out / "tiny_llama-lora.yaml").read_text())
    control["trainer"]["init"]["model"].update({"mixed_precision": True, "fp16_type": "cbfloat16"})
    (out / "zz-control-old-layout.yaml").write_text(yaml.safe_dump(control))

    proc = subprocess.run([PYTHON, CHECK, str(out)],
                          capture_output=True, text=True, env=ZOO_ENV, timeout=1800)
    rows = {r["file"]: r for r in map(json.loads, (ln for ln in proc.stdout.splitlines() if ln.startswith("{")))}
    assert len(rows) == len(PRESETS) * len(VARIANTS) + 1, proc.stderr[-3000:]
    control_row = rows.pop("zz-control-old-layout.yaml")
    assert not control_row["valid"] and "Extra inputs are not permitted" in control_row["error"]
    for name, row in rows.items():
        assert row["valid"], (name, row.get("error"))
        if name in expected and name.startswith("tiny"):
            assert row["sparse_params"] == expected[name] and row["unmatched_globs"] == [], name
        if name.startswith("tiny") and "lora_linears" in row:
            kinds = {n.split(".layers.")[1].split(".", 1)[1] for n in row["lora_linears"]}
            attention = {f"self_attn.proj_{p}_dense_layer" for p in ("q", "k", "v", "output")}
            ffn = {"ffn.ffn.0.linear_layer", "ffn.ffn.0.linear_layer_for_glu", "ffn.ffn.1.linear_layer"}
            assert kinds == (attention if name.startswith("tiny_mixtral") else attention | ffn), name
        if name.endswith("full_gmp.yaml"):
            assert row["gmp_final_level"] == pytest.approx(0.7, abs=1e-6), name


@pytest.mark.slow
@pytest.mark.skipif(not PYTHON, reason="set FTLAB_MODELZOO_PYTHON to a python with cerebras_pytorch 2.10 + ModelZoo")
def test_real_preprocessing_gives_ftlabs_tokens_and_answer_only_loss(tmp_path: Path):
    """The emitted ``cszoo data_preprocess run`` configs, run by the real ModelZoo: every sample's
    tokens are ftlab's ``encode_example`` (prompt + answer + EOS) and the loss covers exactly the
    answer and EOS, as in ftlab's training."""
    from ftlab.data.encoding import IGNORE_INDEX, encode_example
    from ftlab.data.tasks import build_task
    from ftlab.launchers.cerebras_steps import job_plan
    from ftlab.models import build_tokenizer

    cfg = compose_run(["hardware=cerebras", "task.num_examples=200", "train.eval_batch_size=20"])
    job = tmp_path / "0"
    plan = job_plan(cfg, CerebrasOptions(checkpoint_path="/c.mdl"), job, tmp_path)
    for path, text in plan.files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    tok = build_tokenizer(cfg.model)
    examples = build_task(cfg.task).splits(int(cfg.seed))
    for step, split in zip(plan.steps, ("train", "val")):
        subprocess.run([PYTHON, CHECK, "cli", *step.args], env=ZOO_ENV, capture_output=True, check=True, timeout=900)
        (h5,) = sorted(step.output.glob("*.h5"))
        dump = subprocess.run([PYTHON, CHECK, "h5", str(h5)], env=ZOO_ENV, capture_output=True, text=True, check=True)
        rows = [json.loads(line) for line in dump.stdout.splitlines()]
        wanted = [encode_example(tok, e.prompt, e.answer, int(cfg.task.max_length)) for e in getattr(examples, split)]
        assert len(rows) == len(wanted)  # nothing dropped
        for row, enc in zip(rows, wanted):
            n = len(enc.input_ids) - 1  # ModelZoo stores inputs[:-1] and labels[1:]
            assert row["input_ids"][:n] == enc.input_ids[:-1] and row["labels"][:n] == enc.input_ids[1:]
            trained = [lab for lab, m in zip(row["labels"], row["loss_mask"]) if m]
            assert trained == [t for t in enc.labels if t != IGNORE_INDEX]


# What ftlab writes that the converter's config leaves to ModelZoo's defaults.
# load_balancing_loss_coef: ftlab writes what its own training uses (0: transformers adds its router
# aux loss only with output_router_logits); the converter copies router_aux_loss_coef regardless.
NOT_IN_CONVERTED = {"model.moe.moe_implementation", "model.moe.load_balancing_loss_coef"}


def _subset(ours, theirs, where=""):
    """Every value of ours equals theirs (nested dicts: recursively); numbers compared as floats."""
    if isinstance(ours, dict):
        for k, v in ours.items():
            if f"{where}.{k}" in NOT_IN_CONVERTED:
                continue
            assert isinstance(theirs, dict) and k in theirs, f"{where}.{k} missing in ModelZoo's config"
            _subset(v, theirs[k], f"{where}.{k}")
    elif isinstance(ours, (int, float)) and not isinstance(ours, bool):
        assert float(ours) == pytest.approx(float(theirs)), where
    else:
        assert ours == theirs, where


@pytest.mark.slow
@pytest.mark.skipif(not PYTHON, reason="set FTLAB_MODELZOO_PYTHON to a python with cerebras_pytorch 2.10 + ModelZoo")
@pytest.mark.parametrize("preset", ["tiny_llama", "tiny_mistral", "tiny_mixtral"])
def test_real_conversion_matches_the_model_block_and_loads_strictly(tmp_path: Path, preset):
    """The emitted ``cszoo checkpoint convert`` on a (random, sharded) HF model: it succeeds, writes the
    file ftlab points ``--checkpoint_path`` at, ModelZoo's converted config agrees with every model
    field ftlab writes, and the weights load into ModelZoo's model built from ftlab's YAML with no
    missing or unexpected key."""
    from ftlab.launchers.cerebras_steps import job_plan

    cfg = compose_run(["hardware=cerebras", *_hf_model(preset, tmp_path / "hf")])
    opts = CerebrasOptions(train_data_dir=str(tmp_path))
    plan = job_plan(cfg, opts, tmp_path / "sweep" / "0", tmp_path / "sweep")
    conv = plan.steps[-1]
    proc = subprocess.run([PYTHON, CHECK, "cli", *conv.args], env=ZOO_ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0 and Path(plan.checkpoint).is_file(), proc.stderr[-3000:]
    converted = yaml.safe_load((conv.output / "config_to_cs-2.9.yaml").read_text())["model"]
    params = cszoo_params(cfg, opts, None, plan)
    _subset(params["trainer"]["init"]["model"], converted, "model")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = subprocess.run([PYTHON, CHECK, "load", str(tmp_path / "params.yaml"), plan.checkpoint], env=ZOO_ENV,
                         capture_output=True, text=True, timeout=900)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["missing"] == [] and result["unexpected"] == [] and result["n_loaded"] > 0, result


# ---------------------------------------------------------------------------- cszoo fit on the CPU backend
#: What ftlab allows on Cerebras, each trained for a few steps by the real ``cszoo fit`` (CPU backend).
FIT_STEPS = 4
FIT_VARIANTS = {
    "lora": ("tiny_llama", ["adapter=lora"]),
    "full": ("tiny_llama", ["adapter=full"]),
    "masked": ("tiny_llama", ["adapter=masked", "sparsity=unstructured", "sparsity.level=0.7"]),
    "full_gmp": ("tiny_llama", ["adapter=full", "sparsity=unstructured", "sparsity.level=0.7",
                                "hydra.launcher.sparsity_algorithm=gmp", "hydra.launcher.sparsity_update_freq=2"]),
    "stages": ("tiny_llama", ["adapter=lora", "schedule=stages", "schedule.stages=[{iters:2,lr:1e-3},{iters:2,lr:1e-4}]"]),
    "mixtral_lora": ("tiny_mixtral", ["adapter=lora"]),
}


def _modelzoo_env(root: Path) -> Path:
    """A ``hydra.launcher.python_env`` whose activation puts the real ModelZoo CLI (``cszoo``) and its
    python first on PATH, as a ModelZoo virtual environment does."""
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    path = os.environ.get("FTLAB_MODELZOO_PYTHONPATH", "")
    (bin_dir / "cszoo").write_text(f'#!/bin/bash\nPYTHONPATH={path} exec {PYTHON} {CHECK} cli "$@"\n')
    (bin_dir / "python").write_text(f'#!/bin/bash\nPYTHONPATH={path} exec {PYTHON} "$@"\n')
    for exe in bin_dir.iterdir():
        exe.chmod(0o755)
    (bin_dir / "activate").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    return root


def _hf_model(preset: str, folder: Path) -> list[str]:
    """A random HF model of the preset saved for conversion; returns the preset's overrides with it."""
    from ftlab.models import build_tokenizer
    from ftlab.models.build import model_config

    cfg = compose_run(["hardware=cerebras", *PRESETS[preset]])
    c = model_config(cfg.model, build_tokenizer(cfg.model))
    keys = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "max_position_embeddings", "tie_word_embeddings", "rms_norm_eps",
            "sliding_window", "num_local_experts", "num_experts_per_tok"]
    hf_config = {k: getattr(c, k) for k in keys if hasattr(c, k)}
    hf_config["rope_theta"] = float((getattr(c, "rope_parameters", None) or {}).get("rope_theta", 10000.0))
    subprocess.run([PYTHON, CHECK, "hf", cfg.model.arch, str(folder), json.dumps(hf_config)], env=ZOO_ENV, check=True,
                   capture_output=True, timeout=600)
    return [*PRESETS[preset], f"model.name_or_path={folder}"]


@pytest.mark.slow
@pytest.mark.skipif(not PYTHON, reason="set FTLAB_MODELZOO_PYTHON to a python with cerebras_pytorch 2.10 + ModelZoo")
def test_real_cszoo_fit_trains_every_variant_on_the_cpu_backend(tmp_path: Path):
    """``python -m ftlab --multirun hardware=cerebras ...`` with the real ModelZoo: preprocessing,
    conversion, (for a frozen sparse base) masking, then ``cszoo fit`` on ModelZoo's CPU backend for
    a few steps. Every run ends with finite losses and a checkpoint; the sparse runs keep their
    zeros in it; masked LoRA's optimiser state holds the LoRA tensors only."""
    from conftest import cli, read_csv

    venv = _modelzoo_env(tmp_path / "modelzoo_env")
    models = {p: _hf_model(p, tmp_path / f"hf_{p}") for p in {p for p, _ in FIT_VARIANTS.values()}}
    results = {}
    for variant, (preset, overrides) in FIT_VARIANTS.items():
        sweep = tmp_path / variant
        proc = cli("ftlab", "--multirun", "hardware=cerebras", *models[preset], *overrides,
                   f"train.max_steps={FIT_STEPS}", "train.log_every_n_steps=1", "train.eval_batch_size=2",
                   "hardware.precision=bfloat16",  # the CPU backend's half type (a CS-X's default: cbfloat16)
                   "task.num_examples=64", f"hydra.launcher.python_env={venv}", "hydra.launcher.target_device=CPU",
                   f"hydra.launcher.base_checkpoint_dir={tmp_path / 'bases'}", f"hydra.sweep.dir={sweep}",
                   timeout=1800)
        job = sweep / "0"
        log = (job / "cszoo.log").read_text(errors="replace")[-3000:] if (job / "cszoo.log").exists() else ""
        assert proc.returncode == 0, (variant, proc.stderr[-2000:], log)
        _, rows = read_csv(job / "loss_log.csv")
        losses = [float(r["train_loss"]) for r in rows]
        assert [int(r["step"]) for r in rows] == list(range(1, FIT_STEPS + 1)), variant
        assert all(math.isfinite(v) for v in losses), (variant, losses)
        ckpt = job / f"checkpoint_{FIT_STEPS}.mdl"
        assert ckpt.is_file(), variant
        cfg = compose_run(["hardware=cerebras", *models[preset], *overrides[:3]])
        globs = sorted({f"*{mz}" for n in pruned_weight_names(cfg) for mz in modelzoo_param_names(cfg.model.arch, n)})
        masked = job / "cszoo_masked_base" / "masked_base.mdl"
        facts = subprocess.run([PYTHON, CHECK, "ckpt", str(ckpt), json.dumps(globs or ["-"]),
                                *([str(masked)] if masked.is_file() else [])],
                               env=ZOO_ENV, capture_output=True, text=True, check=True, timeout=600)
        results[variant] = json.loads(facts.stdout.strip().splitlines()[-1])
        results[variant]["losses"] = losses
        print(variant, json.dumps({k: v for k, v in results[variant].items() if k != "zeros"}))
    for variant in ("masked", "full_gmp"):
        zeros = results[variant]["zeros"]
        assert zeros and all(v == pytest.approx(0.7, abs=1e-3) for v in zeros.values()), (variant, zeros)
    kept = results["masked"]["base_zeros_kept"]
    assert kept and all(kept.values()) and set(kept) == set(results["masked"]["zeros"])
    for variant in ("masked", "lora", "stages", "mixtral_lora"):  # AdamW: two moments per trained element
        r = results[variant]
        assert r["lora_numel"] > 0 and r["optimizer_state_numel"] == 2 * r["lora_numel"], (variant, r)
