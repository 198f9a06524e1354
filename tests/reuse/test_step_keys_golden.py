"""Step keys do not change: every step key of a broad set of composed configs equals the key the
code produced when ``tests/reuse/golden_step_keys.json`` was written. A changed key sends every
existing cache entry of that step (and of every step after it) to a miss; where a key must change
for a real bug, bump the step's ``VERSIONS`` entry and rewrite the file
(``python tests/reuse/test_step_keys_golden.py --write``).

The code's versions (``derived.environment``) are pinned to one value here: they enter the model and
data keys on purpose (an upgrade rebuilds), so the golden keys would otherwise follow every
re-lock of the dependencies. Data files are written with fixed bytes (a file enters by content, not
by path; the cases name them relative to the working directory, because a source of
``task.sources`` enters with its settings, path included)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ftlab.preflight.compose import compose_config
from ftlab.reuse import steps as S

GOLDEN = Path(__file__).resolve().with_name("golden_step_keys.json")
EXPERIMENTS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "conf" / "experiment").glob("*.yaml"))
STAGES = "schedule.stages=[{iters:5,lr:1e-3},{iters:5,lr:5e-4,name:second}]"
ENVIRONMENT = {"ftlab": "golden", "torch": "golden", "transformers": "golden"}


def cases(data: Path) -> dict[str, list[str]]:
    """Name -> overrides. ``data`` holds the fixed files some cases read."""
    instruct = ["task=instruct", f"task.path={data / 'rows.jsonl'}", "task.format=prompt_answer"]
    out: dict[str, list[str]] = {f"experiment={e}": [f"+experiment={e}"] for e in EXPERIMENTS}
    out.update({
        "default": [],
        "lora": ["adapter=lora"],
        "dora": ["adapter=dora"],
        "full": ["adapter=full"],
        "sora": ["adapter=sora"],
        "sdora": ["adapter=sdora"],
        "none": ["adapter=none"],
        "peft_vera": ["adapter=peft", "adapter.peft_type=VERA"],
        "rslora": ["adapter=lora", "adapter.use_rslora=true"],
        "mistral": ["model=tiny_mistral"],
        "qwen2_moe": ["model=tiny_qwen2_moe", "sparsity=unstructured"],
        "base": ["base.enabled=true", "base.seed=3", "model.init_seed=5"],
        "stages": ["schedule=stages", STAGES],
        "stages_base_mask": ["schedule=stages", STAGES, "base.enabled=true", "sparsity=unstructured",
                             "sparsity.importance=wanda"],
        "structured_head": ["sparsity=structured", "sparsity.structure=head", "sparsity.modules=['*.self_attn.*']"],
        "structured_channel": ["sparsity=structured"],
        "nm": ["sparsity=nm"],
        "random": ["sparsity=random", "sparsity.seed=7"],
        "owl": ["sparsity=unstructured", "sparsity.allocation=owl", "sparsity.level=0.5"],
        "owl_wanda": ["sparsity=unstructured", "sparsity.allocation=owl", "sparsity.importance=wanda"],
        "mask_path": ["sparsity=unstructured", f"sparsity.mask_path={data / 'mask.safetensors'}"],
        "mask_instruct": ["sparsity=unstructured", "sparsity.importance=wanda", *instruct],
        "pissa": ["adapter=lora", "adapter.init=pissa"],
        "olora_base": ["adapter=lora", "adapter.init=olora", "base.enabled=true"],
        "eva": ["adapter=lora", "adapter.init=eva"],
        "corda_instruct": ["adapter=lora", "adapter.init=corda", *instruct],
        "instruct": instruct,
        "instruct_chat": ["task=instruct", f"task.path={data / 'chat.jsonl'}", "task.format=messages",
                          f"task.chat_template={data / 'template.jinja'}", "task.last_turn_only=true"],
        "instruct_sources": ["task=instruct", "task.format=prompt_answer", "task.mixture_replacement=true",
                             f"task.sources=[{{path:{data / 'rows.jsonl'},weight:2}},"
                             f"{{path:{data / 'more.jsonl'},weight:1,name:more}}]"],
        "instruct_sources_stages": ["task=instruct", "task.format=prompt_answer", "schedule=stages", STAGES,
                                    f"task.sources=[{{path:{data / 'rows.jsonl'},weight:1}}]"],
        "arithmetic": ["task=arithmetic"],
        "memory": ["train.gradient_checkpointing=true", "train.packing=true", "train.group_by_length=false"],
        "no_reuse": ["reuse.enabled=false", "sparsity=unstructured"],
        "gpu": ["hardware=gpu", "sparsity=unstructured"],
        "multi_gpu": ["hardware=multi_gpu", "sparsity=unstructured"],
        "multi_node": ["hardware=multi_node"],
        "fsdp": ["hardware=fsdp"],
        "cerebras": ["hardware=cerebras"],
    })
    for name in ("magnitude", "gradient", "taylor", "wanda", "random", "sparsegpt"):
        out[f"unstructured_{name}"] = ["sparsity=unstructured", f"sparsity.importance={name}"]
    return out


def write_data(data: Path) -> None:
    data.mkdir(parents=True, exist_ok=True)
    (data / "rows.jsonl").write_text('{"prompt": "a", "answer": "A"}\n{"prompt": "b", "answer": "B"}\n')
    (data / "more.jsonl").write_text('{"prompt": "c", "answer": "C"}\n')
    (data / "chat.jsonl").write_text('{"messages": [{"role": "user", "content": "a"}, '
                                     '{"role": "assistant", "content": "A"}]}\n')
    (data / "template.jinja").write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    save_file({"model.layers.0.mlp.up_proj.weight": torch.ones(256, 128, dtype=torch.bool)}, data / "mask.safetensors")


def step_keys(overrides: list[str]) -> dict[str, str]:
    steps = S.run_steps(S.as_plain(compose_config(overrides)))
    return {label: step.key for label, step in steps.labelled()}


def all_keys() -> dict[str, dict[str, str]]:
    """Every case's keys, composed in the working directory (which gets ``data/``)."""
    data = Path("data")
    write_data(data)
    return {name: step_keys(ov) for name, ov in cases(data).items()}


@pytest.fixture
def pinned_environment(monkeypatch):
    monkeypatch.setattr(S, "environment", lambda: dict(ENVIRONMENT))


def test_every_step_key_equals_the_golden_key(pinned_environment, tmp_path, monkeypatch):
    golden = json.loads(GOLDEN.read_text())
    monkeypatch.chdir(tmp_path)
    now = all_keys()
    assert sorted(now) == sorted(golden), "the cases changed: rewrite the golden file"
    changed = [f"{name}: {label}" for name in golden for label in golden[name] | now[name]
               if golden[name].get(label) != now[name].get(label)]
    assert not changed, f"step keys changed: {changed}"
    assert len({k for keys in golden.values() for k in keys.values()}) > 60  # the cases differ


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    import os
    import tempfile

    S.environment = lambda: dict(ENVIRONMENT)
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        GOLDEN.write_text(json.dumps(all_keys(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
