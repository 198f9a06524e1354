"""``task=benchmark task.options.benchmark=NAME``: train on any lm-eval multiple-choice or
generation task's rows, rendered by lm-eval itself.

The rows (``task.path``: a file, a release dir, a ``datasets`` disk dir or a split mapping, as
``eval.data``) are loaded by lm-eval's own ``ConfigurableTask`` built from its installed config,
and every example is what lm-eval would request for it zero-shot: the context from
``fewshot_context(doc, 0)`` and the continuation of each request ``construct_requests`` builds
(``target_delimiter`` + choice, or + target for generation). So the model is trained on exactly
the strings ``eval.benchmarks=[NAME]`` scores.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftlab.core.errors import ConfigError, FtlabError
from ftlab.data.benchmark_files import resolve
from ftlab.data.task_base import Example, Task, register_task

if TYPE_CHECKING:
    from lm_eval.api.task import ConfigurableTask

TRAIN = "train"
RENDERED = ("multiple_choice", "generate_until")


def lm_eval_task(name: str, value: Any, key: str, cache_dir: Path) -> ConfigurableTask:
    """lm-eval's task ``name`` whose only split (``train``) is every file ``value`` names."""
    # lm-eval's import takes seconds: only runs that render rows pay, not every task lookup
    from lm_eval.api.task import ConfigurableTask

    from ftlab.data.lm_eval_catalog import SPLIT_KEYS, task_yaml

    cfg = task_yaml(name, key="task.options.benchmark")
    if cfg.get("output_type") not in RENDERED:
        raise ConfigError("task.options.benchmark", name, f"a task whose lm-eval output_type is one of "
                                                          f"{list(RENDERED)} (got {cfg.get('output_type')})")
    data = resolve(key, value)
    files = [f for paths in data.files.values() for f in paths]
    for split_key in SPLIT_KEYS:
        cfg[split_key] = None
    cfg.update(dataset_path=data.builder, dataset_name=None, training_split=TRAIN, validation_split=TRAIN,
               num_fewshot=0, dataset_kwargs={"data_files": {TRAIN: files}, "cache_dir": str(cache_dir)})
    return ConfigurableTask(config=cfg)


def rendered(task: ConfigurableTask, doc: dict) -> Example:
    """One doc as lm-eval renders it zero-shot: prompt + gold continuation (+ the choices)."""
    ctx = task.fewshot_context(doc, 0)
    requests = task.construct_requests(doc, ctx, metadata=(task.config.task, 0, 1))
    if task.OUTPUT_TYPE == "generate_until":
        return Example(ctx, task.config.target_delimiter + str(task.doc_to_target(doc)))
    args = [r.arguments for r in requests]
    gold = task.doc_to_text(doc) if task.multiple_input else task.doc_to_target(doc)
    if isinstance(gold, str):
        gold = task.doc_to_choice(doc).index(gold)
    prompt, answer = args[gold][0], args[gold][1]
    if task.multiple_input:  # WinoGrande: the choice is in the context, the continuation is shared
        return Example(prompt, answer)
    return Example(prompt, answer, choices=tuple(a[1] for a in args), label=int(gold))


class BenchmarkTask(Task):
    name = "benchmark"
    metric = "exact_match"
    multiple_choice = True  # when its lm-eval task is (accuracy then scores its choices)
    option_keys = ("benchmark",)

    def load_file(self, path: Path) -> list[Example]:
        name = self.options.get("benchmark")
        if not name:
            raise ConfigError("task.options.benchmark", name, "an lm-eval task name (e.g. piqa, arc_easy, gsm8k)")
        with tempfile.TemporaryDirectory(prefix="ftlab-render-") as cache:
            task = lm_eval_task(str(name), str(path), "task.path", Path(cache))
            docs = task.training_docs()
            examples = [rendered(task, doc) for doc in docs]
        if not examples:
            raise FtlabError(f"task.path={str(path)!r}: no rows")
        return examples

    def examples(self, seed: int) -> list[Example]:
        if not self.cfg.path:  # a release dir or disk dir is a directory: Task.examples wants a file
            raise ConfigError("task.path", None, "the benchmark's train split: a file, a release dir or a "
                                                 "datasets save_to_disk dir")
        return self.load_file(Path(self.cfg.path))


register_task(BenchmarkTask)

__all__ = ["BenchmarkTask", "lm_eval_task", "rendered"]
