"""task=benchmark trains on lm-eval's own rendering of any multiple-choice or generation task:
every example is the request lm-eval builds for that row (built here through lm-eval's API)."""

from __future__ import annotations

from pathlib import Path

import lm_eval
import pytest
from lm_eval.api.task import ConfigurableTask
from lm_eval.tasks._yaml_loader import load_yaml
from omegaconf import OmegaConf

from ftlab.core.errors import ConfigError
from ftlab.data.tasks import build_task
from real_task_files import arc_rows, gsm8k_rows, piqa_rows, winogrande_rows, write_jsonl

UPSTREAM = Path(lm_eval.__file__).resolve().parent / "tasks"
CASES = {"piqa": ("piqa/piqa.yaml", piqa_rows), "arc_easy": ("arc/arc_easy.yaml", arc_rows),
         "winogrande": ("winogrande/default.yaml", winogrande_rows), "gsm8k": ("gsm8k/gsm8k.yaml", gsm8k_rows)}


def lm_eval_requests(yaml: str, path: Path, cache: Path) -> dict[int, list]:
    """doc id -> lm-eval's request arguments, lm-eval configured here (the file as its scored split)."""
    cfg = load_yaml(UPSTREAM / yaml, resolve_func=True)
    for k in ("training_split", "validation_split", "test_split", "fewshot_split"):
        cfg[k] = None
    cfg.update(dataset_path="json", dataset_name=None, validation_split="validation", num_fewshot=0,
               dataset_kwargs={"data_files": {"validation": str(path)}, "cache_dir": str(cache)})
    task = ConfigurableTask(config=cfg)
    task.build_all_requests(rank=0, world_size=1)
    out: dict[int, list] = {}
    for inst in task.instances:
        out.setdefault(inst.doc_id, []).append(inst)
    return {i: [r.arguments for r in sorted(v, key=lambda r: r.idx)] for i, v in out.items()}, task


@pytest.mark.parametrize("name", sorted(CASES))
def test_examples_are_lm_evals_requests(name, tmp_path):
    yaml, rows_of = CASES[name]
    rows = rows_of(6, seed=3)
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    task_cfg = OmegaConf.create({"name": "benchmark", "path": str(path), "options": {"benchmark": name}})
    examples = build_task(task_cfg).load_file(path)
    requests, task = lm_eval_requests(yaml, path, tmp_path / "cache")
    assert len(examples) == len(requests) == 6
    for i, ex in enumerate(examples):
        args = requests[i]
        if name == "gsm8k":
            assert args[0][0] == ex.prompt and ex.answer == " " + rows[i]["answer"]
        elif name == "winogrande":  # the choice sits in the context; the gold context is trained on
            gold = int(rows[i]["answer"]) - 1
            assert (ex.prompt, ex.answer) == tuple(args[gold]) and ex.choices is None
        else:
            assert all(a[0] == ex.prompt for a in args) and ex.choices == tuple(a[1] for a in args)
            assert ex.answer == ex.choices[ex.label] and ex.label == task.doc_to_target(task.validation_docs()[i])


def test_benchmark_task_needs_a_name_and_a_rendered_output_type(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", piqa_rows(3))
    with pytest.raises(ConfigError, match="task.options.benchmark"):
        build_task(OmegaConf.create({"name": "benchmark", "path": str(path), "options": {}})).load_file(path)
    with pytest.raises(ConfigError, match="output_type"):
        build_task(OmegaConf.create({"name": "benchmark", "path": str(path),
                                     "options": {"benchmark": "wikitext"}})).load_file(path)
