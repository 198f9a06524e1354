"""lm-eval result dict -> ftlab's metric records; the rows a run's final evaluation scores."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from ftlab.core.errors import FtlabError
from ftlab.data.benchmark_config import task_config
from ftlab.data.benchmark_files import FEWSHOT, SCORED
from ftlab.data.tasks import build_task
from ftlab.harness.data import run_split_files, whole_file_files
from ftlab.harness.records import default_variant, metric_records, pick, variant_name
from real_task_files import boolq_rows, gsm8k_rows, write_jsonl, write_parquet

GSM8K_RESULTS = {"alias": "ftlab_gsm8k", "exact_match,strict-match": 0.25, "exact_match_stderr,strict-match": 0.125,
                 "exact_match,flexible-extract": 0.5, "exact_match_stderr,flexible-extract": "N/A"}


def test_variant_names():
    assert variant_name("acc,none") == ("acc", "acc")
    assert variant_name("acc_norm,none") == ("acc_norm", "acc_norm")
    assert variant_name("exact_match,strict-match") == ("exact_match,strict-match", "exact_match")
    assert variant_name("acc_stderr,none") is None and variant_name("alias") is None


def test_metric_records_and_headline():
    recs = metric_records(GSM8K_RESULTS, n=8, n_shot=5)
    assert recs == [
        {"variant": "exact_match,flexible-extract", "value": 0.5, "stderr": None, "n": 8, "n_shot": 5},
        {"variant": "exact_match,strict-match", "value": 0.25, "stderr": 0.125, "n": 8, "n_shot": 5}]
    assert pick(recs, "exact_match,strict-match", "gsm8k")["value"] == 0.25
    with pytest.raises(KeyError):
        pick(recs, "acc", "gsm8k")  # no acc reported
    gsm8k = {"metric_list": [{"metric": "exact_match"}], "filter_list": [{"name": "strict-match"}, {"name": "x"}]}
    assert default_variant(gsm8k) == "exact_match,strict-match"
    assert default_variant({"metric_list": [{"metric": "word_perplexity"}, {"metric": "bits_per_byte"}]}) == \
        "word_perplexity"


def _task(path, **options):
    return OmegaConf.create({"name": path.stem.split("_")[0], "path": str(path), "val_fraction": 0.2,
                             "test_fraction": 0.25, "options": options})


def test_run_split_is_the_runs_test_split(tmp_path):
    """The rows lm-eval scores for a run are exactly the run's test examples (same seeded split)."""
    path = write_parquet(tmp_path / "boolq_dev.parquet", boolq_rows(20, seed=3))
    cfg = _task(path)
    files = run_split_files(cfg, 7, tmp_path / "out")
    (scored_file,) = files.files[SCORED]
    scored = [json.loads(line) for line in open(scored_file).read().splitlines()]
    test = build_task(OmegaConf.merge(cfg, {"num_examples": 0})).splits(7).test
    assert len(scored) == len(test) == 5 and files.builder == "json"
    assert [f"{r['passage']}\nQuestion: {r['question']}?\nAnswer:" for r in scored] == [e.prompt for e in test]
    assert [r["label"] for r in scored] == [e.label for e in test]  # lm-eval's boolq reads SuperGLUE's label


def test_gsm8k_files_and_shots(tmp_path):
    path = write_jsonl(tmp_path / "gsm8k_test.jsonl", gsm8k_rows(20))
    files = run_split_files(_task(path), 7, tmp_path / "run")
    (pool,) = files.files[FEWSHOT]
    assert len(open(pool).read().splitlines()) == 20 - 4 - 5
    with pytest.raises(FtlabError, match="task.options.fewshot_path"):  # a whole file needs a shot pool
        task_config("gsm8k", whole_file_files(_task(path), tmp_path / "w"), tmp_path / "c", key="task.path",
                    fix="set task.options.fewshot_path=FILE")
    train = write_parquet(tmp_path / "gsm8k_train.parquet", gsm8k_rows(6, seed=1))
    mixed = whole_file_files(_task(path, fewshot_path=str(train)), tmp_path / "m")
    assert mixed.builder == "json"  # formats differ: both as JSONL
    cfg = task_config("gsm8k", mixed, tmp_path / "c", key="task.path", max_gen_toks=7)
    assert cfg["generation_kwargs"]["max_gen_toks"] == 7 and cfg["num_fewshot"] == 5
    assert set(cfg["dataset_kwargs"]["data_files"]) == {"test", "train"}
    assert cfg["dataset_path"] == "json" and cfg["dataset_name"] is None
    zero = whole_file_files(_task(path, num_fewshot=0), tmp_path / "z")
    assert task_config("gsm8k", zero, tmp_path / "c", key="task.path", num_fewshot=0)["num_fewshot"] == 0
