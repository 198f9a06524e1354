"""ftlab's harness path gives lm-eval's own numbers, and ftlab's prompts are lm-eval's requests.

The reference is lm-eval used the way its docs describe, configured here and not through ftlab:
its own installed task config (only the dataset pointed at local files in a published layout) and
its ``HFLM`` loading the model from a saved directory. ftlab's side is ``eval.data.<task>`` /
``task.path`` resolved by ftlab and scored on the in-memory model, reading the same rows in the
layout of a public release (BoolQ: the original release's ``answer`` vs SuperGLUE's ``label``;
PIQA: HF shards in a directory; ARC-Easy: a ``datasets`` save_to_disk dir; WinoGrande: the
release's dev/test files; WikiText: the document-level parquet).
"""

from __future__ import annotations

from pathlib import Path

import datasets
import lm_eval
import pytest
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from lm_eval.tasks._yaml_loader import load_yaml
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from conftest import compose
from ftlab.data.benchmark_files import resolve
from ftlab.data.tasks import harness_task
from ftlab.evaluation.scoring import choice_log_likelihoods
from ftlab.harness.data import run_task_benchmark, whole_file_files
from ftlab.harness.score import Benchmark, harness_options, score_benchmarks
from ftlab.models import build_model, build_tokenizer
from real_task_files import (
    arc_rows,
    boolq_rows,
    gsm8k_rows,
    hellaswag_rows,
    piqa_rows,
    wikitext_rows,
    winogrande_rows,
    write_jsonl,
    write_parquet,
)

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM = Path(lm_eval.__file__).resolve().parent / "tasks"
UPSTREAM_YAML = {"boolq": "super_glue/boolq/default.yaml", "hellaswag": "hellaswag/hellaswag.yaml",
                 "gsm8k": "gsm8k/gsm8k.yaml", "piqa": "piqa/piqa.yaml", "arc_easy": "arc/arc_easy.yaml",
                 "winogrande": "winogrande/default.yaml", "wikitext": "wikitext/wikitext.yaml"}
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
    for split_key in ("training_split", "validation_split", "test_split", "fewshot_split"):
        if cfg.get(split_key) not in files:
            cfg[split_key] = None
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


def ours_by_name(model, tok, task: str, value, **kw):
    """ftlab's ``eval.data.<task>=value`` path."""
    key = f"eval.data.{task}"
    return score_benchmarks(model, tok, [Benchmark(task, resolve(key, value), key, **kw)], batch_size=4)[task]


def ours_run_task(model, tok, task: str, path: Path, tmp: Path, **options):
    """ftlab's ``task=<task> task.path=FILE`` path (python -m ftlab.evaluate ... task.path=FILE)."""
    cfg = compose(f"task={task}", f"task.path={path}")
    cfg.task.options = {**cfg.task.options, **options}
    bench = run_task_benchmark(cfg, whole_file_files(cfg.task, tmp))
    return score_benchmarks(model, tok, [bench], batch_size=4)[bench.name]


def _same_samples(ours: list[dict], theirs: list[dict], metrics=("acc", "acc_norm", "exact_match")) -> None:
    assert len(ours) == len(theirs) > 0
    for a, b in zip(sorted(ours, key=lambda s: s["doc_id"]), sorted(theirs, key=lambda s: s["doc_id"])):
        assert [x[:1] for x in a["arguments"]] == [x[:1] for x in b["arguments"]]  # the prompt strings
        if isinstance(a["filtered_resps"][0], tuple):  # log-likelihoods: (value, is_greedy) per choice
            assert [x[0] for x in a["filtered_resps"]] == pytest.approx([x[0] for x in b["filtered_resps"]], abs=1e-4)
        elif isinstance(a["filtered_resps"][0], float):  # rolling log-likelihood of a document
            assert a["filtered_resps"] == pytest.approx(b["filtered_resps"], abs=1e-3)
        else:  # generated text after the filter
            assert a["filtered_resps"] == b["filtered_resps"]
        for metric in metrics:
            assert a.get(metric) == pytest.approx(b.get(metric), abs=1e-3)  # per-example choices / matches


def _by_variant(score) -> dict[str, float]:
    return {r["variant"]: r["value"] for r in score.records}


def _upstream_variants(ref: dict) -> dict[str, float]:
    return {k.replace(",none", ""): v for k, v in ref["results"].items()
            if "," in k and "_stderr" not in k and isinstance(v, float)}


def test_boolq_matches_lm_eval(tiny, tmp_path):
    model, tok, model_dir = tiny
    rows = boolq_rows(10, seed=4)
    ours = ours_run_task(model, tok, "boolq", write_jsonl(tmp_path / "dev.jsonl", rows), tmp_path / "w")
    superglue = [{"question": r["question"], "passage": r["passage"], "idx": i, "label": int(r["answer"])}
                 for i, r in enumerate(rows)]
    path = write_parquet(tmp_path / "validation.parquet", superglue)
    ref = upstream_run("boolq", "parquet", {"train": path, "validation": path}, model_dir, tmp_path / "cache")
    assert _by_variant(ours) == {"acc": pytest.approx(ref["results"]["acc,none"])}
    assert ours.records[0]["stderr"] == pytest.approx(ref["results"]["acc_stderr,none"])
    assert ours.records[0]["n"] == 10 and ours.records[0]["n_shot"] == ref["n_shot"] == 0
    assert ours.headline["value"] == ref["results"]["acc,none"]
    _same_samples(ours.samples, ref["samples"])


def test_hellaswag_matches_lm_eval(tiny, tmp_path):
    model, tok, model_dir = tiny
    rows = hellaswag_rows(10, seed=5)
    rows[0]["ctx_b"] = "then [title] they  go"  # WikiHow markup and a double space: preprocess
    rows[1]["endings"][0] = "[step] a [substeps] b."
    parquet = [{**r, "label": str(r["label"])} for r in rows]  # HF mirror: labels as strings
    ours = ours_by_name(model, tok, "hellaswag", str(write_parquet(tmp_path / "val.parquet", parquet)))
    path = write_jsonl(tmp_path / "hellaswag_val.jsonl", rows)
    ref = upstream_run("hellaswag", "json", {"train": path, "validation": path}, model_dir, tmp_path / "cache")
    assert _by_variant(ours) == {"acc": pytest.approx(ref["results"]["acc,none"]),
                                 "acc_norm": pytest.approx(ref["results"]["acc_norm,none"])}
    assert ours.headline_variant == "acc"  # lm-eval's first metric; task=hellaswag reports acc_norm
    _same_samples(ours.samples, ref["samples"])


def test_gsm8k_matches_lm_eval(tiny, tmp_path):
    model, tok, model_dir = tiny
    test = write_jsonl(tmp_path / "test.jsonl", gsm8k_rows(4, seed=6))
    train = write_jsonl(tmp_path / "train.jsonl", gsm8k_rows(8, seed=7))
    ours = ours_by_name(model, tok, "gsm8k", {"test": str(test), "train": str(train)}, max_gen_toks=GEN_TOKENS)
    ref = upstream_run("gsm8k", "json", {"train": train, "test": test}, model_dir, tmp_path / "cache")
    want = {"exact_match,strict-match": ref["results"]["exact_match,strict-match"],
            "exact_match,flexible-extract": ref["results"]["exact_match,flexible-extract"]}
    assert _by_variant(ours) == pytest.approx(want)
    assert {r["n_shot"] for r in ours.records} == {ref["n_shot"]} == {5}
    _same_samples(ours.samples, ref["samples"])


def test_piqa_hf_shards_dir_matches_lm_eval(tiny, tmp_path):
    model, tok, model_dir = tiny
    release = tmp_path / "piqa"
    release.mkdir()
    val = write_parquet(release / "validation-00000-of-00001.parquet", piqa_rows(10, seed=11))
    write_parquet(release / "train-00000-of-00001.parquet", piqa_rows(6, seed=12))
    ours = ours_by_name(model, tok, "piqa", str(release))
    ref = upstream_run("piqa", "parquet", {"validation": val}, model_dir, tmp_path / "cache")
    assert _by_variant(ours) == pytest.approx(_upstream_variants(ref)) and set(_by_variant(ours)) == {"acc", "acc_norm"}
    assert ours.records[0]["n"] == 10
    _same_samples(ours.samples, ref["samples"])


def test_arc_easy_datasets_disk_dir_matches_lm_eval(tiny, tmp_path):
    model, tok, model_dir = tiny
    test_rows, train_rows = arc_rows(10, seed=13), arc_rows(5, seed=14)
    datasets.DatasetDict({"test": datasets.Dataset.from_list(test_rows),
                          "train": datasets.Dataset.from_list(train_rows)}).save_to_disk(str(tmp_path / "arc_disk"))
    ours = ours_by_name(model, tok, "arc_easy", str(tmp_path / "arc_disk"))
    test = write_jsonl(tmp_path / "ARC-Easy-Test.jsonl", test_rows)
    ref = upstream_run("arc_easy", "json", {"test": test}, model_dir, tmp_path / "cache")
    assert _by_variant(ours) == pytest.approx(_upstream_variants(ref))
    assert ours.records[0]["n"] == 10
    _same_samples(ours.samples, ref["samples"])


def test_piqa_release_with_labels_files_matches_lm_eval(tiny, tmp_path):
    """PIQA's official release: rows without answers, ``<split>-labels.lst`` beside them, an
    unlabelled tests.jsonl; lm-eval reads the same rows with the labels joined by the test."""
    model, tok, model_dir = tiny
    release = tmp_path / "physicaliqa-train-dev"
    release.mkdir()
    for split, rows in (("valid", piqa_rows(10, seed=21)), ("train", piqa_rows(6, seed=22))):
        write_jsonl(release / f"{split}.jsonl", [{"id": f"{split}-{i}", **{k: r[k] for k in ("goal", "sol1", "sol2")}}
                                                 for i, r in enumerate(rows)])
        (release / f"{split}-labels.lst").write_text("".join(f"{r['label']}\n" for r in rows))
    write_jsonl(release / "tests.jsonl", [{k: r[k] for k in ("goal", "sol1", "sol2")} for r in piqa_rows(3, seed=23)])
    ours = ours_by_name(model, tok, "piqa", str(release))
    val = write_jsonl(tmp_path / "valid_hf.jsonl", [{"id": f"valid-{i}", **r} for i, r in enumerate(piqa_rows(10, seed=21))])
    ref = upstream_run("piqa", "json", {"validation": val}, model_dir, tmp_path / "cache")
    assert _by_variant(ours) == pytest.approx(_upstream_variants(ref)) and set(_by_variant(ours)) == {"acc", "acc_norm"}
    assert ours.records[0]["n"] == 10
    _same_samples(ours.samples, ref["samples"])


def _arc_release_row(row: dict) -> dict:
    """A row of ARC's release JSONL (ARC-V1-Feb2018): the question nests its stem and choices."""
    choices = [{"text": t, "label": lab} for t, lab in zip(row["choices"]["text"], row["choices"]["label"])]
    return {"id": row["id"], "question": {"stem": row["question"], "choices": choices}, "answerKey": row["answerKey"]}


def test_arc_easy_release_nested_jsonl_matches_lm_eval(tiny, tmp_path):
    """ARC's release directory (ARC-Easy-Train/Dev/Test.jsonl, nested rows) as ``eval.data.arc_easy``."""
    model, tok, model_dir = tiny
    test_rows = arc_rows(10, seed=24)
    release = tmp_path / "ARC-V1-Feb2018" / "ARC-Easy"
    release.mkdir(parents=True)
    for split, rows in (("Test", test_rows), ("Train", arc_rows(5, seed=25)), ("Dev", arc_rows(4, seed=26))):
        write_jsonl(release / f"ARC-Easy-{split}.jsonl", [_arc_release_row(r) for r in rows])
    (release / "ARC-Easy-Test.csv").write_text("not read\n")
    ours = ours_by_name(model, tok, "arc_easy", str(release))
    ref = upstream_run("arc_easy", "json", {"test": write_jsonl(tmp_path / "test_hf.jsonl", test_rows)},
                       model_dir, tmp_path / "cache")
    assert _by_variant(ours) == pytest.approx(_upstream_variants(ref))
    assert ours.records[0]["n"] == 10
    _same_samples(ours.samples, ref["samples"])


def test_winogrande_release_files_match_lm_eval(tiny, tmp_path):
    """The release's dev.jsonl is the validation split lm-eval scores; its unlabelled test.jsonl is
    not read."""
    model, tok, model_dir = tiny
    release = tmp_path / "winogrande_1.1"
    release.mkdir()
    dev = write_jsonl(release / "dev.jsonl", winogrande_rows(10, seed=15))
    write_jsonl(release / "test.jsonl", winogrande_rows(4, seed=16, labelled=False))
    ours = ours_by_name(model, tok, "winogrande", str(release))
    ref = upstream_run("winogrande", "json", {"validation": dev}, model_dir, tmp_path / "cache")
    assert _by_variant(ours) == pytest.approx(_upstream_variants(ref)) and ours.headline_variant == "acc"
    _same_samples(ours.samples, ref["samples"])


def test_wikitext_perplexities_match_lm_eval(tiny, tmp_path):
    """Rolling log-likelihood over windows of the model's 256 positions: word/byte perplexity and
    bits per byte, per document and aggregated."""
    model, tok, model_dir = tiny
    rows = wikitext_rows(4, seed=17)
    assert max(len(r["page"]) for r in rows) > 256  # longer than the window: several rolling windows
    ours = ours_by_name(model, tok, "wikitext", str(write_parquet(tmp_path / "wikitext-2-test.parquet", rows)))
    ref = upstream_run("wikitext", "json", {"test": write_jsonl(tmp_path / "t.jsonl", rows)}, model_dir,
                       tmp_path / "cache")
    got, want = _by_variant(ours), _upstream_variants(ref)
    assert set(got) == {"word_perplexity", "byte_perplexity", "bits_per_byte"}
    assert got == pytest.approx(want, rel=1e-4)
    assert ours.headline_variant == "word_perplexity"
    _same_samples(ours.samples, ref["samples"], metrics=())
    for a, b in zip(sorted(ours.samples, key=lambda s: s["doc_id"]), sorted(ref["samples"], key=lambda s: s["doc_id"])):
        assert a["word_perplexity"] == pytest.approx(b["word_perplexity"], rel=1e-4)


def test_training_prompts_are_lm_evals_requests(tiny, tmp_path):
    """ftlab trains on the strings lm-eval scores: prompt + " " + choice / answer per task."""
    model, tok, model_dir = tiny
    cases = {"boolq": boolq_rows(3, seed=1), "hellaswag": hellaswag_rows(3, seed=2), "gsm8k": gsm8k_rows(3, seed=3)}
    cases["hellaswag"][0]["ctx_b"] = "then [title] x"
    for task, rows in cases.items():
        path = write_jsonl(tmp_path / f"{task}.jsonl", rows)
        train = write_jsonl(tmp_path / f"{task}_train.jsonl", gsm8k_rows(6, seed=9)) if task == "gsm8k" else None
        examples = harness_task(task)(OmegaConf.create({"options": {}})).load_file(path)
        if task == "gsm8k":
            got = ours_by_name(model, tok, "gsm8k", {"test": str(path), "train": str(train)}, max_gen_toks=1).samples
        else:  # the run task's path: BoolQ's release rows (answer: bool) in the layout lm-eval reads
            got = ours_run_task(model, tok, task, path, tmp_path / task).samples
        first = min(got, key=lambda s: s["doc_id"])
        ex = examples[first["doc_id"]]
        if task == "gsm8k":
            shots_text, _, query = first["arguments"][0][0].rpartition("\n\n")
            assert query == ex.prompt
            shots = harness_task(task)(OmegaConf.create({"options": {}})).load_file(train)
            assert set(shots_text.split("\n\n")) <= {s.prompt + s.answer for s in shots}
        else:
            assert [tuple(a[:2]) for a in first["arguments"]] == [(ex.prompt, c) for c in ex.choices]


def test_lm_eval_scores_the_continuation_ftlab_trains_on(tiny, tmp_path):
    """lm-eval's log-likelihoods are the ones of the choice tokens right after the prompt (no EOS
    from the byte tokenizer in between): they equal ftlab's own per-choice computation."""
    model, tok, _ = tiny
    path = write_jsonl(tmp_path / "hs.jsonl", hellaswag_rows(6, seed=8))
    examples = harness_task("hellaswag")(OmegaConf.create({"options": {}})).load_file(path)
    ours = choice_log_likelihoods(model, tok, examples, max_length=4096, batch_size=4)
    theirs = {s["doc_id"]: [r[0] for r in s["filtered_resps"]]
              for s in ours_by_name(model, tok, "hellaswag", str(path)).samples}
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
