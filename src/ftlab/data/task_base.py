"""What every task is made of: examples, splits, the :class:`Task` base, JSONL reading and the
task registry.

A leaf under :mod:`ftlab.data.tasks` (the synthetic tasks and the lookup),
:mod:`ftlab.data.real_tasks` (real datasets) and the other task modules: all register their tasks
here, and :mod:`ftlab.data.tasks` imports them so that every lookup sees them. A task class's
attributes are its spec (``harness``, ``multiple_choice``, ``option_keys``...): callers read those
flags, never a list of task names.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftlab.core.errors import ConfigError, FtlabError
from ftlab.core.plugins import Registry

#: ``task`` keys of the bring-your-own-data formats (read by tasks with ``reads_format``)
FORMAT_KEYS = ("format", "columns", "prompt_template", "chat_template", "last_turn_only", "sources",
               "mixture_replacement", "mixture_shared_split")


@dataclass(frozen=True)
class Example:
    prompt: str
    answer: str
    choices: tuple[str, ...] | None = None  # multiple choice: candidate continuations
    label: int | None = None  # index of the right choice
    # conversations (task=instruct, chat formats): the (role, content) turns as read; after
    # rendering with the chat template (:mod:`ftlab.data.chat`), ``text`` is the whole rendered
    # conversation and ``spans`` the character ranges of ``text`` that carry the loss
    messages: tuple[tuple[str, str], ...] | None = None
    text: str | None = None
    spans: tuple[tuple[int, int], ...] | None = None
    where: str | None = None  # "file: row N" of a row read from a file, for error messages


@dataclass(frozen=True)
class HarnessBenchmark:
    """The benchmark facts of a task whose final numbers lm-eval gives (a :class:`Task`'s
    ``harness``): the harness, the preflight and ``python -m ftlab.evaluate`` read them from the
    task's registered spec, so a benchmark task is one module (plus its ``conf/task`` YAML)."""

    #: lm-eval's task whose installed config scores the run's test split (prompts, metrics, shots)
    lm_eval_task: str
    #: the ``metrics.json`` key of the headline value
    headline_key: str = "eval_accuracy"
    #: lm-eval's variant reported there (``task.options.length_normalize`` picks ``acc_norm`` for ``acc``)
    headline_variant: str = "acc"
    #: ftlab's own metrics (``task.metric``) that can score the task's answers during training
    metrics: tuple[str, ...] = ("accuracy", "exact_match")


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
    #: capability: the task reads ``task.format``/``columns``/``prompt_template``/``chat_template``/
    #: ``last_turn_only`` (a task that does not must refuse them: they would change nothing)
    reads_format = False
    #: capability: ``task.path`` may be a directory (``datasets.save_to_disk``)
    reads_directories = False
    #: capability: examples carry ``choices`` (the only ones ``task.metric=accuracy`` can score)
    multiple_choice = False
    #: capability: a published benchmark whose final numbers come from lm-eval (None: ftlab scores it)
    harness: HarnessBenchmark | None = None

    def check_options(self) -> None:
        """Raise :class:`ConfigError` for an option the task does not read or cannot use."""
        for key, value in self.options.items():
            if key not in self.option_keys:
                allowed = f"one of {list(self.option_keys)}" if self.option_keys else "none (it takes no options)"
                raise ConfigError(f"task.options.{key}", value, f"an option of task {self.name}: {allowed}")
        if not self.reads_format:
            for key in FORMAT_KEYS:
                if self.cfg.get(key):
                    raise ConfigError(f"task.{key}", self.cfg.get(key),
                                      f"unset for task {self.name}: it is read by task=instruct only")

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


#: The task registry: each spec is a :class:`Task` subclass, whose class attributes (``name``,
#: ``harness``, ``multiple_choice``, ``option_keys``...) are read before any task is built, and
#: installed packages add theirs under the entry-point group ``ftlab.tasks`` (look tasks up via
#: :mod:`ftlab.data.tasks`). A name registered twice (an outside task named like a built-in) is an
#: error, as in every other registry, not a silent choice of one.
TASKS: Registry[type[Task]] = Registry("task", "task.name", Task, "ftlab.tasks", classes=True)
register_task = TASKS.register


def task_flag(name: str, flag: str, default: Any = None) -> Any:
    """Capability ``flag`` of registered task ``name`` (``default`` for a name not registered)."""
    return getattr(TASKS.find(name), flag, default)


def registered_tasks() -> dict[str, type[Task]]:
    """``{name: Task subclass}`` of the built-in tasks and those of installed packages."""
    return {task.name: task for task in TASKS.all()}
