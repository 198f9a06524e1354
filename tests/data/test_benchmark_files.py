"""eval.data.<task> in the layouts of public releases -> the files of lm-eval's splits, and the
one-line errors for what is missing."""

from __future__ import annotations

import datasets
import pytest

from ftlab.core.errors import FtlabError
from ftlab.data.benchmark_config import task_config
from ftlab.data.benchmark_files import SCORED, resolve
from real_task_files import arc_rows, piqa_rows, winogrande_rows, write_jsonl, write_parquet


def test_file_dir_shards_disk_and_mapping(tmp_path):
    one = write_jsonl(tmp_path / "valid.jsonl", piqa_rows(3))
    assert resolve("k", str(one)).files == {SCORED: (str(one),)}
    shards = tmp_path / "hf"
    shards.mkdir()
    a = write_parquet(shards / "validation-00000-of-00002.parquet", piqa_rows(2))
    b = write_parquet(shards / "validation-00001-of-00002.parquet", piqa_rows(2, seed=1))
    dev = tmp_path / "release"
    dev.mkdir()
    d = write_jsonl(dev / "dev.jsonl", winogrande_rows(2))
    assert resolve("k", str(shards)).files == {"validation": (str(a), str(b))}
    got = resolve("k", str(dev))
    assert got.files == {"validation": (str(d),)} and got.builder == "json"
    datasets.DatasetDict({"test": datasets.Dataset.from_list(arc_rows(3))}).save_to_disk(str(tmp_path / "disk"))
    disk = resolve("k", str(tmp_path / "disk"))
    assert disk.builder == "arrow" and list(disk.files) == ["test"] and disk.files["test"][0].endswith(".arrow")
    mapping = resolve("k", {"dev": str(one), "train": str(one)})
    assert mapping.files == {"validation": (str(one),), "train": (str(one),)}


@pytest.mark.parametrize("value, needle", [
    (None, "eval.data.piqa is not set"),
    ("{tmp}/nope.jsonl", "no such file"),
    ("{tmp}/x.csv", "unknown format '.csv'"),
    ("{tmp}/empty", "no split files"),
])
def test_resolve_errors_name_the_key(tmp_path, value, needle):
    (tmp_path / "x.csv").write_text("a,b\n")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FtlabError) as err:
        resolve("eval.data.piqa", None if value is None else value.format(tmp=tmp_path))
    assert needle in str(err.value) and "eval.data.piqa" in str(err.value) and "\n" not in str(err.value)


def test_task_needs_its_scored_and_shot_splits(tmp_path):
    """arc_easy scores 'test': a validation file alone is refused naming the split and the key."""
    val = write_jsonl(tmp_path / "validation.jsonl", arc_rows(3))
    with pytest.raises(FtlabError, match=r"scores its 'test' split.*found: validation.*eval.data.arc_easy.test=FILE"):
        task_config("arc_easy", resolve("eval.data.arc_easy", {"validation": str(val)}), tmp_path,
                    key="eval.data.arc_easy")
    test = write_jsonl(tmp_path / "test.jsonl", arc_rows(3))
    data = resolve("eval.data.arc_easy", {"test": str(test)})
    with pytest.raises(FtlabError, match=r"3-shot.*'train' split.*eval.data.arc_easy.train=FILE"):
        task_config("arc_easy", data, tmp_path, key="eval.data.arc_easy", num_fewshot=3)
    cfg = task_config("arc_easy", data, tmp_path, key="eval.data.arc_easy")
    assert cfg["test_split"] == "test" and cfg["validation_split"] is None and cfg["training_split"] is None
    assert cfg["doc_to_text"] == "Question: {{question}}\nAnswer:"  # lm-eval's installed prompt


def test_unknown_task_names_the_closest(tmp_path):
    with pytest.raises(FtlabError) as err:
        task_config("arc_esy", resolve("k", str(write_jsonl(tmp_path / "t.jsonl", arc_rows(1)))), tmp_path, key="k")
    assert "'arc_esy' is not a task lm-eval" in str(err.value) and "arc_easy" in str(err.value)
