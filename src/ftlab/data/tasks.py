"""Tasks: where examples come from and how they are scored.

A task yields :class:`Example` s (a prompt and its answer; multiple-choice tasks add ``choices``
and ``label``) from a generator or from a local file, plus a plain-text corpus for optional
continued pre-training of the base model. Splits are seeded random partitions of one source.

The synthetic tasks and the lookup by name live here; the building blocks and the registry in
:mod:`ftlab.data.task_base`, the real datasets in :mod:`ftlab.data.real_tasks` (imported here,
so their tasks are registered before any lookup).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from ftlab.core.errors import ConfigError, fail
from ftlab.data import benchmark_task, instruct  # noqa: F401  (register the file-based tasks)
from ftlab.data.real_tasks import RealTask
from ftlab.data.task_base import (  # noqa: F401  (re-exported: the names callers import from here)
    TASKS,
    Example,
    HarnessBenchmark,
    Splits,
    Task,
    numbered_jsonl,
    read_jsonl,
    read_prompt_answer_jsonl,
    register_task,
    registered_tasks,
    split_examples,
    task_flag,
)


def _word(rng: random.Random, lo: int, hi: int) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(lo, hi)))


class Capitalization(Task):
    """Upper-case pseudo-words. The corpus pairs words with their capitals in another format,
    so a briefly pre-trained base model knows the letter mapping but not the task's format."""

    name = "capitalization"
    option_keys = ("min_words", "max_words", "min_word_len", "max_word_len")

    def check_options(self) -> None:
        super().check_options()
        o = {"min_words": 1, "max_words": 3, "min_word_len": 2, "max_word_len": 6, **self.options}
        for key in self.option_keys:
            if isinstance(o[key], bool) or not isinstance(o[key], int) or o[key] < 1:
                raise ConfigError(f"task.options.{key}", o[key], "an integer >= 1")
        for lo, hi in (("min_words", "max_words"), ("min_word_len", "max_word_len")):
            if o[lo] > o[hi]:
                raise ConfigError(f"task.options.{hi}", o[hi], f"an integer >= task.options.{lo}={o[lo]}")

    def _words(self, rng: random.Random) -> list[str]:
        o = self.options
        n = rng.randint(o.get("min_words", 1), o.get("max_words", 3))
        return [_word(rng, o.get("min_word_len", 2), o.get("max_word_len", 6)) for _ in range(n)]

    def generate(self, n: int, rng: random.Random) -> list[Example]:
        out = []
        for _ in range(n):
            text = " ".join(self._words(rng))
            out.append(Example(f"Capitalize: {text}\nAnswer:", f" {text.upper()}"))
        return out

    def corpus(self, n: int, rng: random.Random) -> list[str]:
        out = []
        for _ in range(n):
            text = " ".join(self._words(rng))
            out.append(f"{text} => {text.upper()}.")
        return out


class Arithmetic(Task):
    """Integer addition/subtraction. The corpus states facts in words ("3 plus 4 is 7.")."""

    name = "arithmetic"
    _WORDS = {"+": "plus", "-": "minus"}
    option_keys = ("max_operand", "ops")

    def check_options(self) -> None:
        super().check_options()
        hi = self.options.get("max_operand", 50)
        if isinstance(hi, bool) or not isinstance(hi, int) or hi < 0:
            raise ConfigError("task.options.max_operand", hi, "an integer >= 0")
        ops = list(self.options.get("ops", ["+", "-"]))
        if not ops or not set(ops) <= set(self._WORDS):
            raise ConfigError("task.options.ops", ops, f"a non-empty list of {list(self._WORDS)}")

    def _problem(self, rng: random.Random) -> tuple[int, str, int, int]:
        hi = int(self.options.get("max_operand", 50))
        a, b = rng.randint(0, hi), rng.randint(0, hi)
        op = rng.choice(list(self.options.get("ops", ["+", "-"])))
        return a, op, b, a + b if op == "+" else a - b

    def generate(self, n: int, rng: random.Random) -> list[Example]:
        out = []
        for _ in range(n):
            a, op, b, r = self._problem(rng)
            out.append(Example(f"Compute: {a}{op}{b}\nAnswer:", f" {r}"))
        return out

    def corpus(self, n: int, rng: random.Random) -> list[str]:
        out = []
        for _ in range(n):
            a, op, b, r = self._problem(rng)
            out.append(f"{a} {self._WORDS[op]} {b} is {r}.")
        return out


register_task(Capitalization)
register_task(Arithmetic)


def task_names() -> list[str]:
    return sorted(registered_tasks())


def build_task(cfg: Any) -> Task:
    return TASKS.get(cfg.name)(cfg)


def harness_task(name: str) -> type[RealTask] | None:
    """The registered task ``name`` when its spec says lm-eval gives its final numbers (``harness``
    set on a :class:`RealTask`, which can check and rewrite its rows for lm-eval); None otherwise."""
    factory = TASKS.find(name)
    if isinstance(factory, type) and issubclass(factory, RealTask) and factory.harness is not None:
        return factory
    return None


def harness_task_names() -> list[str]:
    """The registered tasks lm-eval scores (``task=NAME`` of ``python -m ftlab.evaluate``)."""
    return [name for name in task_names() if harness_task(name) is not None]


def checked_rows(name: str, path: Path) -> list[dict]:
    """The rows of harness task ``name``'s file ``path``, checked and in lm-eval's layout
    (:meth:`RealTask.harness_rows`)."""
    task = harness_task(name)
    if task is None:
        raise ConfigError("task", name, f"one of {harness_task_names()} (the benchmarks lm-eval scores)")
    return task.harness_rows(Path(path))


def validate_real_task(cfg: Any) -> None:
    """At composition: a metric that fits the task's answers; a harness task needs its file."""
    t = cfg.task
    if t.metric == "accuracy" and not task_flag(t.name, "multiple_choice", False):
        choices = [n for n in task_names() if task_flag(n, "multiple_choice", False)]
        fail("task.metric", t.metric, f"a generation metric for task {t.name} "
             f"('accuracy' scores multiple-choice tasks: {choices})")
    task = harness_task(t.name)
    if task is None:
        return
    if not t.path:
        fail("task.path", t.path, f"a local JSONL or parquet file in the published {t.name} format")
    if t.metric not in task.harness.metrics:
        fail("task.metric", t.metric, f"one of {list(task.harness.metrics)} for task {t.name}")
    options = t.options or {}
    shots = options.get("num_fewshot")
    if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int) or shots < 0):
        fail("task.options.num_fewshot", shots, "null (lm-eval's default) or an integer >= 0")
    extra = options.get("fewshot_path")
    if extra is not None and not Path(extra).is_file():
        fail("task.options.fewshot_path", extra, f"null or an existing {t.name} train file (JSONL or parquet)")
