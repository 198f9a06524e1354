"""The steps around ``cszoo fit``: ModelZoo fine-tuning preprocessing configs from ftlab's task, the
HF -> CS checkpoint conversion, and the command script that runs them in order, skipping what is done
(unit level, and end to end through the CLI with the stand-in cszoo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, cli
from ftlab.core.errors import ConfigError
from ftlab.data.tasks import build_task
from ftlab.launchers.cerebras_job import write_job_files
from ftlab.launchers.cerebras_options import CerebrasOptions
from ftlab.launchers.cerebras_params import check_supported, cszoo_params
from ftlab.launchers.cerebras_steps import READ_HOOK, job_plan
from ftlab.preflight.compose import compose_run

FIXTURE_BIN = ROOT / "tests" / "fixtures" / "bin"
FAST = ["train.max_steps=20", "train.log_every_n_steps=5", "train.save_every_n_steps=10"]


def hf_dir(root: Path) -> Path:
    """What ``cszoo checkpoint convert`` needs of an HF model dir (the stand-in only checks the files)."""
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 259}))  # the byte tokenizer's ids
    (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {}}))
    return root


def test_preprocessing_configs_are_modelzoo_finetuning_mode_with_the_models_tokenizer(tmp_path: Path):
    hf = hf_dir(tmp_path / "hf")
    cfg = compose_run(["hardware=cerebras", "model=llama3_8b", f"model.name_or_path={hf}", "task.max_length=96"])
    plan = job_plan(cfg, CerebrasOptions(), tmp_path / "sweep" / "0", tmp_path / "sweep")
    job = tmp_path / "sweep" / "0"
    assert [s.name for s in plan.steps] == ["data_train", "data_val", "checkpoint"]
    splits = build_task(cfg.task).splits(int(cfg.seed))
    for split, examples in (("train", splits.train), ("val", splits.val)):
        conf = yaml.safe_load(plan.files[job / f"cszoo_data_{split}.yaml"])
        assert conf["setup"] == {"data": {"source": str(job / "cszoo_data" / f"{split}_examples"), "type": "local"},
                                 "output_dir": str(job / "cszoo_data" / split), "processes": 1, "mode": "finetuning"}
        p = conf["processing"]
        assert p["huggingface_tokenizer"] == str(hf) and p["max_seq_length"] == 96
        assert p["read_hook"] == READ_HOOK and p["read_hook_kwargs"] == {"prompt_key": "prompt", "completion_key": "completion"}
        assert conf["dataset"]["truncate_to_msl"]["prompt_truncation_mode"] == "keep_end"  # as ftlab's encoding
        rows = [json.loads(line) for line in plan.files[job / "cszoo_data" / f"{split}_examples" / "examples.jsonl"].splitlines()]
        assert rows == [{"prompt": e.prompt, "completion": e.answer} for e in examples]
    assert (plan.train_data_dir, plan.val_data_dir) == (str(job / "cszoo_data" / "train"), str(job / "cszoo_data" / "val"))
    conv = plan.steps[-1]
    base = tmp_path / "sweep" / "cszoo_base" / "llama3_8b"
    assert conv.args == ["checkpoint", "convert", "--model", "llama", "--src-fmt", "hf", "--tgt-fmt", "cs-2.9",
                         "--config", str(hf / "config.json"), "--output-dir", str(base), "--no-progress-bar",
                         str(hf / "model.safetensors.index.json")]
    assert plan.checkpoint == str(base / "model_to_cs-2.9.mdl")
    init = cszoo_params(cfg, CerebrasOptions(), None, plan)["trainer"]
    assert init["fit"]["val_dataloader"]["data_dir"] == plan.val_data_dir


def test_byte_tokenizer_is_a_fast_tokenizer_with_ftlabs_ids_and_given_data_skips_preprocessing(tmp_path: Path):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from ftlab.models import build_tokenizer

    cfg = compose_run(["hardware=cerebras"])
    plan = job_plan(cfg, CerebrasOptions(checkpoint_path="/c.mdl"), tmp_path / "0", tmp_path)
    conf = yaml.safe_load(plan.files[tmp_path / "0" / "cszoo_data_train.yaml"])
    tok_dir = tmp_path / "0" / "cszoo_data" / "byte_tokenizer"
    assert conf["processing"]["huggingface_tokenizer"] == str(tok_dir)
    assert conf["dataset"]["sep_token"] is None  # ModelZoo's default "<|sep|>" would sit between prompt and answer
    for path, text in plan.files.items():
        if path.parent == tok_dir:
            tok_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    fast, ours = AutoTokenizer.from_pretrained(tok_dir), build_tokenizer(cfg.model)
    assert isinstance(fast, PreTrainedTokenizerFast)  # ModelZoo's fine-tuning mode needs offset mappings
    for text in ["Capitalize: kol mavet\nAnswer:", " KOL MAVET", "héllo ✓ 日本 \t", "".join(map(chr, range(1, 256)))]:
        assert fast.encode(text, add_special_tokens=False) == ours.encode(text, add_special_tokens=False)
        assert fast(text, return_offsets_mapping=True)["offset_mapping"][-1][1] == len(text)
    assert (fast.eos_token_id, fast.pad_token_id, fast.convert_tokens_to_ids("</s>")) == (ours.eos_token_id, ours.pad_token_id, 1)
    assert plan.checkpoint == "/c.mdl" and [s.name for s in plan.steps] == ["data_train", "data_val"]
    given = job_plan(cfg, CerebrasOptions(checkpoint_path="/c.mdl", train_data_dir="/d"), tmp_path / "1", tmp_path)
    assert given.steps == [] and given.files == {} and given.train_data_dir == "/d"


def test_base_weights_are_required(tmp_path: Path):
    cfg = compose_run(["hardware=cerebras", "model=llama3_8b", f"model.name_or_path={tmp_path / 'missing'}"])
    check_supported(cfg, CerebrasOptions(dry_run=True))  # a dry run may describe another machine's dir
    with pytest.raises(ConfigError) as err:
        check_supported(cfg, CerebrasOptions())
    assert err.value.key == "model.name_or_path"


def test_script_runs_steps_in_order_and_skips_done_ones(tmp_path: Path):
    hf = hf_dir(tmp_path / "hf")
    cfg = compose_run(["hardware=cerebras", f"model.name_or_path={hf}", *FAST])
    opts = CerebrasOptions()
    env = {**os.environ, "PATH": f"{FIXTURE_BIN}{os.pathsep}{os.environ['PATH']}", "FTLAB_TEST_PYTHON": sys.executable}
    for num in (0, 1):
        job = tmp_path / "sweep" / str(num)
        plan = job_plan(cfg, opts, job, tmp_path / "sweep")
        script = write_job_files(cszoo_params(cfg, opts, 1, plan), opts, job, 1, plan)
        proc = subprocess.run(["bash", str(script)], cwd=job, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        calls = [json.loads(line)["argv"][:2] for line in (job / "fake_cszoo_calls.jsonl").read_text().splitlines()]
        expected = [["data_preprocess", "run"]] * 2 + ([["checkpoint", "convert"]] if num == 0 else [])
        assert calls == [*expected, ["fit", str(job / "cszoo_params.yaml")]]
        assert (num == 1) == ("checkpoint done already, skipped" in proc.stdout)
        fit = json.loads((job / "fake_cszoo_call.json").read_text())["argv"]
        assert fit[fit.index("--checkpoint_path") + 1] == plan.checkpoint and Path(plan.checkpoint).is_file()
        # run again: every step is done, only fit runs
        subprocess.run(["bash", str(script)], cwd=job, env=env, capture_output=True, check=True)
        again = [json.loads(line)["argv"][0] for line in (job / "fake_cszoo_calls.jsonl").read_text().splitlines()]
        assert again[len(calls):] == ["fit"]


def test_a_failing_step_stops_the_script_before_fit(tmp_path: Path):
    cfg = compose_run(["hardware=cerebras", *FAST])
    opts = CerebrasOptions(checkpoint_path="/c.mdl", executable="false")
    plan = job_plan(cfg, opts, tmp_path / "0", tmp_path)
    script = write_job_files(cszoo_params(cfg, opts, 1, plan), opts, tmp_path / "0", 1, plan)
    proc = subprocess.run(["bash", str(script)], cwd=tmp_path / "0", capture_output=True, text=True)
    assert proc.returncode != 0 and not plan.steps[0].done.exists()


@pytest.mark.slow
def test_cli_sweep_preprocesses_converts_once_and_fits(tmp_path: Path):
    hf = hf_dir(tmp_path / "hf")
    sweep = tmp_path / "sweep"
    proc = cli("ftlab", "--multirun", "hardware=cerebras", "adapter=full", "sparsity=unstructured",
               "sparsity.level=0.7", "seed=1,2", *FAST, f"model.name_or_path={hf}",
               "hydra.launcher.module_names={q_proj: self_attn.proj_q_dense_layer}",  # a whole dict (row 8)
               f"hydra.sweep.dir={sweep}",
               env={"PATH": f"{FIXTURE_BIN}{os.pathsep}{os.environ['PATH']}", "FTLAB_TEST_PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr
    for num in (0, 1):
        job = sweep / str(num)
        calls = [json.loads(line)["argv"] for line in (job / "fake_cszoo_calls.jsonl").read_text().splitlines()]
        assert [c[:2] for c in calls] == [["data_preprocess", "run"]] * 2 + [["checkpoint", "convert"]] * (num == 0) \
            + [["fit", str(job / "cszoo_params.yaml")]]
        params = json.loads((job / "fake_cszoo_call.json").read_text())["params"]["trainer"]
        assert params["fit"]["train_dataloader"]["data_dir"] == str(job / "cszoo_data" / "train")
        assert json.loads((job / "cszoo_data" / "train" / "data_params.json").read_text())["n_examples"] > 0
        assert params["init"]["checkpoint"]["disable_strict_checkpoint_loading"] is True
        assert json.loads((job / "metrics.json").read_text())["train_steps"] == 20
    assert (sweep / "cszoo_base" / "tiny_llama" / "model_to_cs-2.9.mdl").is_file()


@pytest.mark.parametrize(("overrides", "key"), [
    (["task.num_examples=64"], "train.eval_batch_size"),  # 6 val examples, batch 64: ModelZoo would yield none
    (["task.num_examples=20", "train.eval_batch_size=1"], "train.batch_size"),  # 16 train examples < 16 x 2
])
def test_a_split_smaller_than_its_batch_is_refused_before_launch(tmp_path: Path, overrides, key):
    cfg = compose_run(["hardware=cerebras", "train.accumulate_grad_batches=2", *overrides])
    with pytest.raises(ConfigError) as err:
        job_plan(cfg, CerebrasOptions(checkpoint_path="/c.mdl"), tmp_path / "0", tmp_path)
    assert err.value.key == key and "drops an incomplete batch" in str(err.value)
    assert not list(tmp_path.iterdir())  # nothing written
    ok = compose_run(["hardware=cerebras", "task.num_examples=64", "train.eval_batch_size=6"])
    assert job_plan(ok, CerebrasOptions(checkpoint_path="/c.mdl"), tmp_path / "0", tmp_path).val_data_dir
