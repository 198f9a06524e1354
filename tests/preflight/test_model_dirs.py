"""Issue 22, deliverable 2: model dirs and side files are checked before anything is written:
the architecture is a causal LM, every weight's shape (read from the safetensors header, no tensor
loaded) agrees with config.json, and a few-shot file is read and validated up front. A table of
(fault, what the one line must name)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from transformers import BertConfig, BertForMaskedLM, LlamaConfig, LlamaForCausalLM

from ftlab.core.errors import FtlabError
from ftlab.preflight.launch import preflight
from ftlab.preflight.model_checks import weight_shapes
from real_task_files import gsm8k_rows, write_jsonl

TINY = dict(vocab_size=259, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4)


def _edit_config(d: Path, **changes) -> None:
    conf = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**conf, **changes}))


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("model-dirs")
    LlamaForCausalLM(LlamaConfig(**TINY, num_key_value_heads=4)).save_pretrained(root / "llama")
    shutil.copytree(root / "llama", root / "shapes")
    _edit_config(root / "shapes", intermediate_size=192)  # weights say 256
    BertForMaskedLM(BertConfig(**TINY)).save_pretrained(root / "bert")
    shutil.copytree(root / "llama", root / "no-arch")
    _edit_config(root / "no-arch", model_type="t5", architectures=["T5ForConditionalGeneration"])
    shutil.copytree(root / "llama", root / "torn")
    (root / "torn" / "model.safetensors").write_bytes(b"\xff" * 64)
    write_jsonl(root / "gsm8k.jsonl", gsm8k_rows(40))
    write_jsonl(root / "shots-broken.jsonl", [{**r, "answer": "no final number"} for r in gsm8k_rows(5)])
    return root


CASES = [
    ("masked-lm", ["model.name_or_path={d}/bert"], ("model.name_or_path", "bert", "BertForMaskedLM", "causal-LM")),
    ("not-causal-type", ["model.name_or_path={d}/no-arch"], ("model.name_or_path", "no-arch", "model_type='t5'")),
    ("weight-shapes", ["model.name_or_path={d}/shapes"],
     ("model.name_or_path", "shapes", "model.safetensors holds model.layers.0.mlp.down_proj.weight", "[128, 256]", "[128, 192]")),
    ("torn-weights", ["model.name_or_path={d}/torn"], ("model.name_or_path", "torn", "safetensors")),
    ("fewshot-broken", ["task=gsm8k", "task.path={d}/gsm8k.jsonl", "train.batch_size=8",
                        "+task.options.fewshot_path={d}/shots-broken.jsonl"], ("shots-broken.jsonl:1", "'answer'")),
]


@pytest.mark.parametrize("overrides,expect", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_model_dir_and_side_file_faults_fail_up_front(overrides, expect, dirs: Path, tmp_path: Path):
    with pytest.raises(FtlabError) as err:
        preflight([*(o.replace("{d}", str(dirs)) for o in overrides), f"hydra.run.dir={tmp_path}/run"],
                  multirun=False)
    line = f"ftlab: error: {err.value}"
    assert "\n" not in line
    for part in expect:
        assert part in line, f"{part!r} not in {line!r}"
    assert not (tmp_path / "run").exists()


def test_a_consistent_dir_passes_and_its_shapes_come_from_the_header(dirs: Path, tmp_path: Path):
    preflight([f"model.name_or_path={dirs}/llama", f"hydra.run.dir={tmp_path}/run"], multirun=False)
    shapes = weight_shapes(dirs / "llama")
    assert shapes["model.layers.0.mlp.up_proj.weight"] == ("model.safetensors", (256, 128))
