"""Tasks: where examples come from and how they are scored.

A task yields :class:`Example` s (a prompt and its answer; multiple-choice tasks add ``choices``
and ``label``) from a generator or from a local file, plus a plain-text corpus for optional
continued pre-training of the base model. Splits are seeded random partitions of one source.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftlab.errors import ConfigError, FtlabError


@dataclass(frozen=True)
class Example:
    prompt: str
    answer: str
    choices: tuple[str, ...] | None = None  # multiple choice: candidate continuations
    label: int | None = None  # index of the right choice


@dataclass(frozen=True)
class Splits:
    train: list[Example]
    val: list[Example]
    test: list[Example]


class Task:
    """Base: a source of examples. ``metric`` names how ``test`` examples are scored."""

    name = "task"
    metric = "exact_match"  # exact_match (generate + compare) | accuracy (choice log-likelihood)

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.options = dict(cfg.options or {})

    #: keys of ``task.options`` the task reads; anything else is a typo that would change nothing
    option_keys: tuple[str, ...] = ()

    def check_options(self) -> None:
        """Raise :class:`ConfigError` for an option the task does not read or cannot use."""
        for key, value in self.options.items():
            if key not in self.option_keys:
                allowed = f"one of {list(self.option_keys)}" if self.option_keys else "none (it takes no options)"
                raise ConfigError(f"task.options.{key}", value, f"an option of task {self.name}: {allowed}")

    def generate(self, n: int, rng: random.Random) -> list[Example]:
        raise FtlabError(f"task {self.name!r} has no generator: set task.path to a data file")

    def corpus(self, n: int, rng: random.Random) -> list[str]:
        """Raw text for continued pre-training; default: prompts followed by answers."""
        return [ex.prompt + ex.answer for ex in self.generate(n, rng)]

    def load_file(self, path: Path) -> list[Example]:
        return read_prompt_answer_jsonl(path)

    def examples(self, seed: int) -> list[Example]:
        if self.cfg.path:
            path = Path(self.cfg.path)
            if not path.is_file():
                raise ConfigError("task.path", str(path), "an existing data file")
            return self.load_file(path)
        return self.generate(self.cfg.num_examples, random.Random(seed))

    def splits(self, seed: int) -> Splits:
        return split_examples(self.examples(seed), self.cfg.val_fraction, self.cfg.test_fraction, seed)


def split_examples(examples: list[Example], val_fraction: float, test_fraction: float, seed: int) -> Splits:
    """Seeded random partition of one source into train/val/test (each non-empty)."""
    if len(examples) < 3:
        raise FtlabError(f"need at least 3 examples to split into train/val/test, got {len(examples)}")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(order) * val_fraction))
    n_test = max(1, round(len(order) * test_fraction))
    pick = [examples[i] for i in order]
    return Splits(train=pick[n_val + n_test:], val=pick[:n_val], test=pick[n_val:n_val + n_test])


def read_jsonl(path: Path, required: tuple[str, ...]) -> list[dict]:
    """Rows of a JSONL file; a missing field fails naming the field and the line."""
    rows = []
    try:
        with open(path, encoding="utf-8") as fh:
            lines = list(fh)
    except UnicodeDecodeError as err:
        raise FtlabError(f"{path}: not a UTF-8 text file ({err.reason} at byte {err.start}); "
                         "expected JSON Lines (or a .parquet file where the task reads one)") from err
    for lineno, line in enumerate(lines, start=1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise FtlabError(f"{path}:{lineno}: not valid JSON ({err.msg})") from err
            if not isinstance(row, dict):
                raise FtlabError(f"{path}:{lineno}: a JSON {type(row).__name__} is invalid: one object per line "
                                 f"with the fields {list(required)}")
            for key in required:
                if key not in row:
                    raise FtlabError(f"{path}:{lineno}: missing field {key!r} (required: {list(required)})")
            rows.append(row)
    if not rows:
        raise FtlabError(f"{path}: no examples")
    return rows


def numbered_jsonl(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict]]:
    """``(line number, row)`` pairs of :func:`read_jsonl`, so later messages can point at the line."""
    rows = read_jsonl(path, required)
    with open(path, encoding="utf-8") as fh:  # read_jsonl skips blank lines
        numbers = [i for i, line in enumerate(fh, start=1) if line.strip()]
    return list(zip(numbers, rows))


def read_prompt_answer_jsonl(path: Path) -> list[Example]:
    """``{"prompt": str, "answer": str}`` rows. Other types are refused, not ``str()``-ed: a
    ``null`` answer would otherwise train the model toward the text "None"."""
    out = []
    for lineno, row in numbered_jsonl(path, ("prompt", "answer")):
        for key in ("prompt", "answer"):
            if not isinstance(row[key], str) or not row[key]:
                raise FtlabError(f"{path}:{lineno}: field {key!r}={row[key]!r} is invalid: a non-empty string")
        out.append(Example(row["prompt"], row["answer"]))
    return out


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


_TASKS: dict[str, Callable[[Any], Task]] = {}


def register_task(name: str, factory: Callable[[Any], Task]) -> None:
    _TASKS[name] = factory


register_task("capitalization", Capitalization)
register_task("arithmetic", Arithmetic)


def _load_builtin() -> None:
    # Real-dataset tasks register themselves on import (one line per module).
    import ftlab.data.real_tasks  # noqa: F401


def task_names() -> list[str]:
    _load_builtin()
    return sorted(_TASKS)


def build_task(cfg: Any) -> Task:
    _load_builtin()
    if cfg.name not in _TASKS:
        raise ConfigError("task.name", cfg.name, f"one of {task_names()}")
    return _TASKS[cfg.name](cfg)
