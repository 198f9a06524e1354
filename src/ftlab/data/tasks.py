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
from typing import Any

from ftlab.core.errors import ConfigError
from ftlab.data import instruct, real_tasks  # noqa: F401  (register the file-based tasks)
from ftlab.data.task_base import (  # noqa: F401  (re-exported: the names callers import from here)
    Example,
    Splits,
    Task,
    numbered_jsonl,
    read_jsonl,
    read_prompt_answer_jsonl,
    register_task,
    registered_tasks,
    split_examples,
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


register_task("capitalization", Capitalization)
register_task("arithmetic", Arithmetic)


def task_names() -> list[str]:
    return sorted(registered_tasks())


def build_task(cfg: Any) -> Task:
    tasks = registered_tasks()
    if cfg.name not in tasks:
        raise ConfigError("task.name", cfg.name, f"one of {task_names()}")
    return tasks[cfg.name](cfg)
