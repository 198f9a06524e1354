"""BoolQ / HellaSwag / GSM8K: published-schema loading, clear errors, and their scorers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ftlab.core.errors import ConfigError, FtlabError
from ftlab.data.real_tasks import final_number, normalize_number
from ftlab.data.tasks import Example, build_task
from ftlab.evaluation.scoring import choice_accuracy, choice_log_likelihoods
from ftlab.models import build_model, build_tokenizer
from ftlab.preflight.compose import compose_run
from real_task_files import boolq_rows, gsm8k_rows, hellaswag_rows, write_jsonl, write_parquet

ROWS = {"boolq": boolq_rows, "hellaswag": hellaswag_rows, "gsm8k": gsm8k_rows}
REQUIRED = {"boolq": "passage", "hellaswag": "endings", "gsm8k": "answer"}


def task_cfg(name: str, path: Path, **kw):
    return OmegaConf.create({"name": name, "path": str(path), "num_examples": 10, "val_fraction": 0.1,
                             "test_fraction": 0.1, "max_length": 64, "max_new_tokens": 8,
                             "metric": "accuracy", "eval_examples": None, "options": {}, **kw})


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize("name", ["boolq", "hellaswag", "gsm8k"])
def test_loads_published_schema(tmp_path, name, fmt):
    rows = ROWS[name](12, seed=3)
    if fmt == "parquet" and name == "hellaswag":
        rows = [{**r, "label": str(r["label"])} for r in rows]  # the HF mirror stores labels as strings
    path = (write_jsonl if fmt == "jsonl" else write_parquet)(tmp_path / f"{name}.{fmt}", rows)
    examples = build_task(task_cfg(name, path)).examples(seed=0)
    assert len(examples) == 12
    for ex, row in zip(examples, rows):
        if name == "boolq":
            assert ex.choices == (" no", " yes") and ex.label == int(row["answer"])
            assert row["passage"] in ex.prompt and ex.prompt.endswith("?\nAnswer:")
        elif name == "hellaswag":
            assert len(ex.choices) == 4 and ex.label == int(row["label"])
            assert ex.answer == ex.choices[ex.label] == " " + row["endings"][ex.label]
            assert "[step]" not in ex.prompt and row["activity_label"] in ex.prompt
        else:
            assert ex.choices is None and ex.answer.endswith(row["answer"].rsplit("#### ", 1)[1])
            assert row["question"] in ex.prompt


@pytest.mark.parametrize("name", ["boolq", "hellaswag", "gsm8k"])
def test_missing_field_names_field_and_line(tmp_path, name):
    rows = ROWS[name](5)
    del rows[3][REQUIRED[name]]
    path = write_jsonl(tmp_path / "data.jsonl", rows)
    with pytest.raises(FtlabError) as err:
        build_task(task_cfg(name, path)).examples(seed=0)
    msg = str(err.value)
    assert f"{path}:4:" in msg and repr(REQUIRED[name]) in msg and "\n" not in msg


def test_missing_parquet_column_and_bad_values(tmp_path):
    rows = boolq_rows(4)
    for r in rows:
        del r["question"]
    with pytest.raises(FtlabError, match="missing field 'question'"):
        build_task(task_cfg("boolq", write_parquet(tmp_path / "b.parquet", rows))).examples(0)
    rows = boolq_rows(4)
    rows[2]["answer"] = "yes"
    with pytest.raises(FtlabError, match=r":3: field 'answer'='yes' is invalid: true or false"):
        build_task(task_cfg("boolq", write_jsonl(tmp_path / "b.jsonl", rows))).examples(0)
    rows = gsm8k_rows(3)
    rows[1]["answer"] = "no final marker"
    with pytest.raises(FtlabError, match=r":2: field 'answer'.*'#### <number>'"):
        build_task(task_cfg("gsm8k", write_jsonl(tmp_path / "g.jsonl", rows))).examples(0)
    rows = hellaswag_rows(3)
    rows[0]["label"] = 7
    with pytest.raises(FtlabError, match=r":1: field 'label'=7 is invalid: an index in \[0, 3\]"):
        build_task(task_cfg("hellaswag", write_jsonl(tmp_path / "h.jsonl", rows))).examples(0)


def test_composition_requires_path_and_fitting_metric(tmp_path):
    with pytest.raises(ConfigError, match="task.path=None"):
        compose_run(["task=hellaswag"])
    path = write_jsonl(tmp_path / "g.jsonl", gsm8k_rows(5))
    with pytest.raises(ConfigError, match="task.metric='accuracy'.*gsm8k"):
        compose_run(["task=gsm8k", f"task.path={path}", "task.metric=accuracy"])
    with pytest.raises(ConfigError, match="task.metric='bleu'"):
        compose_run(["task.metric=bleu"])
    with pytest.raises(ConfigError, match="task.metric='accuracy'.*multiple-choice"):
        compose_run(["task=arithmetic", "task.metric=accuracy"])


@pytest.mark.parametrize("text,want", [
    ("She pays $1,250.00 in total.\n#### 1,250", "1250"), ("#### -7", "-7"), ("so 3 then 4.50", "4.5"),
    ("twelve", None), ("#### 0.0", "0"), ("answer 12 #### none", "12"),
])
def test_final_number(text, want):
    assert final_number(text) == want
    assert normalize_number("$2,000") == "2000"


def _reference_log_likelihood(model, tok, prompt: str, choice: str) -> float:
    """One sequence at a time, no padding: sum of log p(choice token | everything before it)."""
    p = tok.encode(prompt, add_special_tokens=False)
    c = tok.encode(choice, add_special_tokens=False)
    ids = torch.tensor([p + c])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits.float()[0], dim=-1)
    return sum(float(logp[len(p) + k - 1, c[k]]) for k in range(len(c)))


def test_choice_log_likelihoods_match_unpadded_reference():
    cfg = compose_run([])
    tok = build_tokenizer(cfg.model)
    model = build_model(cfg.model, tok, seed=0).eval()
    examples = [Example("Pick one:", " a", choices=(" a", " bbbbbbb", " cc"), label=0),
                Example("A much longer prompt here:", " yes", choices=(" no", " yes"), label=1)]
    got = choice_log_likelihoods(model, tok, examples, max_length=64, batch_size=3)
    for ex, scores in zip(examples, got):
        want = [_reference_log_likelihood(model, tok, ex.prompt, c) for c in ex.choices]
        assert scores == pytest.approx(want, abs=1e-4)
    norm = choice_log_likelihoods(model, tok, examples, max_length=64, batch_size=5, length_normalize=True)
    # lm-eval's acc_norm: characters of the choice without the " " delimiter
    assert norm[0][1] == pytest.approx(got[0][1] / len("bbbbbbb"), abs=1e-5)
    # accuracy is the fraction whose labelled choice scores highest
    best = [max(range(len(s)), key=s.__getitem__) for s in got]
    want_acc = sum(b == ex.label for b, ex in zip(best, examples)) / len(examples)
    assert choice_accuracy(model, tok, examples, 64, 4) == pytest.approx(want_acc)


def _run_overrides(name: str, path: Path) -> list[str]:
    return [f"task={name}", f"task.path={path}", "task.max_length=96", "task.max_new_tokens=6",
            "task.eval_examples=4", "train.max_steps=3", "train.batch_size=4", "train.eval_batch_size=8",
            "train.log_every_n_steps=1", "train.save_merged_model=false", "train.save_adapter=false",
            "train.save_epoch_checkpoints=false", "adapter.r=2"]


@pytest.mark.slow
@pytest.mark.parametrize("name,key", [("boolq", "eval_accuracy"), ("hellaswag", "eval_accuracy"),
                                      ("gsm8k", "eval_exact_match")])
def test_tiny_model_trains_and_scores(tmp_path, name, key):
    from ftlab.recipe.run import run

    path = write_jsonl(tmp_path / f"{name}.jsonl", ROWS[name](40, seed=1))
    cfg = compose_run(_run_overrides(name, path))
    result = run(cfg, run_dir=tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0.0 <= metrics[key] <= 1.0 and result == metrics[key]
    assert metrics["train_steps"] == 3
