"""ftlab's harness path gives lm-eval's own numbers, and ftlab's prompts are lm-eval's requests.

The reference is lm-eval used the way its docs describe: its own ``boolq`` / ``hellaswag`` /
``gsm8k`` task configs (only the dataset pointed at a local file in the published schema) and its
``HFLM`` loading the model from a saved directory. ftlab's side is ``ftlab.harness.score_task``
with ftlab's configs on the in-memory model, reading the same rows in another published layout
where one exists (BoolQ: the original release's ``answer`` vs SuperGLUE's ``label``).
"""

from __future__ import annotations

from pathlib import Path

import lm_eval
import pytest
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from lm_eval.tasks._yaml_loader import load_yaml
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from conftest import compose
from ftlab.data.real_tasks import REAL_TASKS
from ftlab.harness.score import harness_options, score_task
from ftlab.harness.tasks import DataFiles
from ftlab.models import build_model, build_tokenizer
from ftlab.scoring import choice_log_likelihoods
from real_task_files import boolq_rows, gsm8k_rows, hellaswag_rows, write_jsonl, write_parquet

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM = Path(lm_eval.__file__).resolve().parent / "tasks"
UPSTREAM_YAML = {"boolq": "super_glue/boolq/default.yaml", "hellaswag": "hellaswag/hellaswag.yaml",
                 "gsm8k": "gsm8k/gsm8k.yaml"}
GEN_TOKENS = 6  # GSM8K: a few greedy tokens keep the test fast; both sides use the same limit


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, tokenizer, saved dir) of a random tiny Llama with ftlab's byte tokenizer."""
    cfg = compose("model=tiny_llama").model  # the preset with the schema's defaults
    tok = build_tokenizer(cfg)
    model = build_model(cfg, tok, seed=0).eval()
    out = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    return model, tok, out


def upstream_run(task: str, builder: str, files: dict[str, Path], model_dir: Path, cache: Path) -> dict:
    """lm-eval's own task config and model loading; only the dataset is local."""
    cfg = load_yaml(UPSTREAM / UPSTREAM_YAML[task], resolve_func=True)
    cfg.update(dataset_path=builder, dataset_name=None,
               dataset_kwargs={"data_files": {k: str(v) for k, v in files.items()}, "cache_dir": str(cache)})
    if "generation_kwargs" in cfg:
        cfg["generation_kwargs"] = {**cfg["generation_kwargs"], "max_gen_toks": GEN_TOKENS}
    # the byte tokenizer appends EOS: lm-eval is told add_bos_token=False, as its CLI would be
    # (--model_args add_bos_token=False); ftlab derives the same option from the tokenizer
    options = harness_options(AutoTokenizer.from_pretrained(str(model_dir)))
    assert options == {"add_bos_token": False}
    lm = HFLM(pretrained=str(model_dir), tokenizer=str(model_dir), batch_size=4, device="cpu", **options)
    out = lm_eval.simple_evaluate(model=lm, tasks=[cfg], log_samples=True,
                                  task_manager=TaskManager(include_defaults=False))
    return {"results": out["results"][task], "n_shot": out["n-shot"][task], "samples": out["samples"][task]}


def _same_samples(ours: list[dict], theirs: list[dict]) -> None:
    assert len(ours) == len(theirs) > 0
    for a, b in zip(sorted(ours, key=lambda s: s["doc_id"]), sorted(theirs, key=lambda s: s["doc_id"])):
        assert [x[:1] for x in a["arguments"]] == [x[:1] for x in b["arguments"]]  # the prompt strings
        if isinstance(a["filtered_resps"][0], tuple):  # log-likelihoods: (value, is_greedy) per choice
            assert [x[0] for x in a["filtered_resps"]] == pytest.approx([x[0] for x in b["filtered_resps"]], abs=1e-4)
        else:  # generated text after the filter
            assert a["filtered_resps"] == b["filtered_resps"]
        for metric in ("acc", "acc_norm", "exact_match"):
            assert a.get(metric) == b.get(metric)  # per-example identical choices / matches


def _by_variant(score) -> dict[str, float]:
    return {r["variant"]: r["value"] for r in score.records}


def test_boolq_matches_lm_eval(tiny, tmp_path):
    model, tok, model_dir = tiny
    rows = boolq_rows(10, seed=4)
    ours = score_task(model, tok, "boolq", DataFiles(write_jsonl(tmp_path / "dev.jsonl", rows)), batch_size=4)
    superglue = [{"question": r["question"], "passage": r["passage"], "idx": i, "label": int(r["answer"])}
                 for i, r in enumerate(rows)]
    path = write_parquet(tmp_path / "validation.parquet", superglue)
    ref = upstream_run("boolq", "parquet", {"train": path, "validation": path}, model_dir, tmp_path / "cache")
    assert _by_variant(ours) == {"acc": pytest.approx(ref["results"]["acc,none"])}
    assert ours.records[0]["stderr"] == pytest.approx(ref["results"]["acc_stderr,none"])
    assert ours.records[0]["n"] == 10 and ours.records[0]["n_shot"] == ref["n_shot"] == 0
    assert ours.headline == {"eval_accuracy": ref["results"]["acc,none"]}
    _same_samples(ours.samples, ref["samples"])


def test_hellaswag_matches_lm_eval(tiny, tmp_path):
    model, tok, model_dir = tiny
    rows = hellaswag_rows(10, seed=5)
    rows[0]["ctx_b"] = "then [title] they  go"  # WikiHow markup and a double space: preprocess
    rows[1]["endings"][0] = "[step] a [substeps] b."
    parquet = [{**r, "label": str(r["label"])} for r in rows]  # HF mirror: labels as strings
    ours = score_task(model, tok, "hellaswag", DataFiles(write_parquet(tmp_path / "val.parquet", parquet)),
                      batch_size=4)
    path = write_jsonl(tmp_path / "hellaswag_val.jsonl", rows)
    ref = upstream_run("hellaswag", "json", {"train": path, "validation": path}, model_dir, tmp_path / "cache")
    assert _by_variant(ours) == {"acc": pytest.approx(ref["results"]["acc,none"]),
                                 "acc_norm": pytest.approx(ref["results"]["acc_norm,none"])}
    assert ours.headline == {"eval_accuracy": ref["results"]["acc_norm,none"]}
    _same_samples(ours.samples, ref["samples"])


def test_gsm8k_matches_lm_eval(tiny, tmp_path):
    model, tok, model_dir = tiny
    test = write_jsonl(tmp_path / "test.jsonl", gsm8k_rows(4, seed=6))
    train = write_jsonl(tmp_path / "train.jsonl", gsm8k_rows(8, seed=7))
    ours = score_task(model, tok, "gsm8k", DataFiles(test, train), batch_size=4, max_gen_toks=GEN_TOKENS)
    ref = upstream_run("gsm8k", "json", {"train": train, "test": test}, model_dir, tmp_path / "cache")
    want = {"exact_match,strict-match": ref["results"]["exact_match,strict-match"],
            "exact_match,flexible-extract": ref["results"]["exact_match,flexible-extract"]}
    assert _by_variant(ours) == pytest.approx(want)
    assert {r["n_shot"] for r in ours.records} == {ref["n_shot"]} == {5}
    _same_samples(ours.samples, ref["samples"])


def test_training_prompts_are_lm_evals_requests(tiny, tmp_path):
    """ftlab trains on the strings lm-eval scores: prompt + " " + choice / answer per task."""
    model, tok, model_dir = tiny
    cases = {"boolq": boolq_rows(3, seed=1), "hellaswag": hellaswag_rows(3, seed=2), "gsm8k": gsm8k_rows(3, seed=3)}
    cases["hellaswag"][0]["ctx_b"] = "then [title] x"
    for task, rows in cases.items():
        path = write_jsonl(tmp_path / f"{task}.jsonl", rows)
        train = write_jsonl(tmp_path / f"{task}_train.jsonl", gsm8k_rows(6, seed=9)) if task == "gsm8k" else None
        examples = REAL_TASKS[task](OmegaConf.create({"options": {}})).load_file(path)
        got = score_task(model, tok, task, DataFiles(path, train), batch_size=4, max_gen_toks=1).samples
        first = min(got, key=lambda s: s["doc_id"])
        ex = examples[first["doc_id"]]
        if task == "gsm8k":
            shots_text, _, query = first["arguments"][0][0].rpartition("\n\n")
            assert query == ex.prompt
            shots = REAL_TASKS[task](OmegaConf.create({"options": {}})).load_file(train)
            assert set(shots_text.split("\n\n")) <= {s.prompt + s.answer for s in shots}
        else:
            assert [tuple(a[:2]) for a in first["arguments"]] == [(ex.prompt, c) for c in ex.choices]


def test_lm_eval_scores_the_continuation_ftlab_trains_on(tiny, tmp_path):
    """lm-eval's log-likelihoods are the ones of the choice tokens right after the prompt (no EOS
    from the byte tokenizer in between): they equal ftlab's own per-choice computation."""
    model, tok, _ = tiny
    path = write_jsonl(tmp_path / "hs.jsonl", hellaswag_rows(6, seed=8))
    examples = REAL_TASKS["hellaswag"](OmegaConf.create({"options": {}})).load_file(path)
    ours = choice_log_likelihoods(model, tok, examples, max_length=4096, batch_size=4)
    theirs = {s["doc_id"]: [r[0] for r in s["filtered_resps"]]
              for s in score_task(model, tok, "hellaswag", DataFiles(path), batch_size=4).samples}
    for i, lls in enumerate(ours):
        assert lls == pytest.approx(theirs[i], abs=1e-3)


class _Tok:
    """Just ``encode``: special tokens before (``bos``) or after (``eos``) the text."""

    def __init__(self, where: str):
        self.where = where

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [ord(c) for c in text]
        if not add_special_tokens:
            return ids
        return [1, *ids] if self.where == "bos" else [*ids, 2]


def test_only_eos_appending_tokenizers_change_lm_evals_defaults(tiny):
    assert harness_options(tiny[1]) == {"add_bos_token": False}  # ByT5: appends </s>
    assert harness_options(_Tok("eos")) == {"add_bos_token": False}
    assert harness_options(_Tok("bos")) == {}  # Llama-style BOS: lm-eval's default (BOS prepended)
