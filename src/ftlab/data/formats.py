"""Local data files in the layouts published SFT sets use, read through the ``datasets`` library.

``task=instruct`` reads ``task.path`` (``.jsonl``, ``.json`` array, ``.csv``, ``.parquet``, an
``.arrow`` file or a directory written by ``datasets.save_to_disk``; nothing is downloaded) and
turns each row into an :class:`~ftlab.data.task_base.Example` according to ``task.format``:

- ``prompt_answer``: ``{prompt, answer}``; the training text is prompt + answer as written.
- ``alpaca``: ``{instruction, input, output}`` (``input`` optional, may be empty), rendered with
  the Stanford Alpaca prompt that LLM-Adapters (Commonsense170K, Math10K) train with, or with
  ``task.prompt_template`` (a Python format string over ``{instruction}`` and ``{input}``).
- ``messages``: ``{messages: [{role, content}, ...]}`` with roles system/user/assistant.
- ``sharegpt``: ``{conversations: [{from, value}, ...]}`` with ``from`` human/gpt/system
  (user/assistant accepted too).

``task.columns`` maps the format's field names onto the file's (``{prompt: query, answer:
response}`` reads MetaMathQA as prompt_answer). Every malformed row ends in one line naming the
file, the row (1-based, in file order) and the key.
"""

from __future__ import annotations

import string
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from ftlab.core.errors import ConfigError, FtlabError
from ftlab.data.task_base import Example

#: Stanford Alpaca's prompt (also LLM-Adapters' ``generate_prompt``), with and without an input.
ALPACA_PROMPT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)

#: ShareGPT speaker tags -> chat roles.
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system"}
CHAT_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Format:
    """A row layout: its fields (``task.columns`` keys), which of them may be absent, the fields
    a ``task.prompt_template`` may name, and whether rows are conversations."""

    name: str
    fields: tuple[str, ...]
    optional: tuple[str, ...] = ()
    template_fields: tuple[str, ...] = ()
    chat: bool = False


FORMATS = {
    "prompt_answer": Format("prompt_answer", ("prompt", "answer"), template_fields=("prompt",)),
    "alpaca": Format("alpaca", ("instruction", "input", "output"), optional=("input",),
                     template_fields=("instruction", "input")),
    "messages": Format("messages", ("messages",), chat=True),
    "sharegpt": Format("sharegpt", ("conversations",), chat=True),
}

#: ``task.path`` suffixes and the ``datasets`` reader of each (a directory: ``load_from_disk``).
READERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet",
           ".arrow": "arrow"}


def get_format(name: Any, key: str = "task.format") -> Format:
    if name not in FORMATS:
        raise ConfigError(key, name, f"one of {list(FORMATS)}")
    return FORMATS[name]


def check_columns(fmt: Format, columns: Mapping[str, Any], key: str = "task.columns") -> None:
    for field, column in columns.items():
        if field not in fmt.fields:
            raise ConfigError(f"{key}.{field}", column, f"a field of format {fmt.name}: one of {list(fmt.fields)}")
        if not isinstance(column, str) or not column:
            raise ConfigError(f"{key}.{field}", column, "a column name of the file (a non-empty string)")


def check_prompt_template(fmt: Format, template: Any, key: str = "task.prompt_template") -> None:
    if template is None:
        return
    if fmt.chat:
        raise ConfigError(key, template, f"null for format {fmt.name}: conversations are rendered by the "
                                         "chat template (task.chat_template)")
    if not isinstance(template, str):
        raise ConfigError(key, template, "a string")
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as err:
        raise ConfigError(key, template, f"a Python format string ({err})") from err
    if not names <= set(fmt.template_fields) or fmt.template_fields[0] not in names:
        raise ConfigError(key, template, f"a format string naming {{{fmt.template_fields[0]}}} and only "
                                         f"{['{' + f + '}' for f in fmt.template_fields]}")


def is_data_path(path: Path) -> bool:
    """A file with a readable suffix or a directory (``save_to_disk``)."""
    return path.is_dir() or (path.is_file() and path.suffix.lower() in READERS)


def load_table(path: Path) -> datasets.Dataset:
    """The rows of a local file or ``save_to_disk`` directory, as a ``datasets.Dataset``."""
    datasets.disable_progress_bars()  # the console shows ftlab's own lines only
    try:
        if path.is_dir():
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if "train" not in ds:
                    raise FtlabError(f"{path}: a DatasetDict without a 'train' split (splits: {list(ds)}); "
                                     "point task.path at one split's directory")
                ds = ds["train"]
            return ds
        reader = READERS.get(path.suffix.lower())
        if reader is None:
            raise ConfigError("task.path", str(path), f"a file ending in one of {sorted(READERS)} or a "
                                                      "directory written by datasets.save_to_disk")
        if reader == "arrow":
            return datasets.Dataset.from_file(str(path), in_memory=True)
        with tempfile.TemporaryDirectory(prefix="ftlab-data-") as cache:  # no ~/.cache side effects
            loader = {"json": datasets.Dataset.from_json, "csv": datasets.Dataset.from_csv,
                      "parquet": datasets.Dataset.from_parquet}[reader]
            return loader(str(path), cache_dir=cache, keep_in_memory=True)
    except FtlabError:
        raise
    except Exception as err:  # noqa: BLE001 - any reader failure is one line naming the file
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise FtlabError(f"{path}: not a readable {path.suffix or 'dataset directory'} data file "
                         f"({type(err).__name__}: {detail})") from err


def _text(path: Path, row: int, key: str, value: Any, *, optional: bool = False) -> str:
    if optional and value is None:
        return ""
    if not isinstance(value, str) or (not optional and not value):
        raise FtlabError(f"{path}: row {row}: field {key!r}={value!r} is invalid: a non-empty string")
    return value


def _conversation(path: Path, row: int, key: str, value: Any, fmt: Format) -> tuple[tuple[str, str], ...]:
    role_key, content_key = ("from", "value") if fmt.name == "sharegpt" else ("role", "content")
    roles = SHAREGPT_ROLES if fmt.name == "sharegpt" else {r: r for r in CHAT_ROLES}
    if not isinstance(value, list) or not value:
        raise FtlabError(f"{path}: row {row}: field {key!r} is invalid: a non-empty list of "
                         f"{{{role_key!r}, {content_key!r}}} objects")
    turns = []
    for i, msg in enumerate(value):
        where = f"{path}: row {row}: {key}[{i}]"
        if not isinstance(msg, dict) or role_key not in msg or content_key not in msg:
            raise FtlabError(f"{where}={msg!r} is invalid: an object with {role_key!r} and {content_key!r}")
        if msg[role_key] not in roles:
            raise FtlabError(f"{where}.{role_key}={msg[role_key]!r} is invalid: one of {list(roles)}")
        if not isinstance(msg[content_key], str):
            raise FtlabError(f"{where}.{content_key}={msg[content_key]!r} is invalid: a string")
        turns.append((roles[msg[role_key]], msg[content_key]))
    if not any(role == "assistant" and content.strip() for role, content in turns):
        raise FtlabError(f"{path}: row {row}: field {key!r} has no assistant turn with text: nothing to train on")
    return tuple(turns)


def _prompt(fmt: Format, template: str | None, values: dict[str, str]) -> str:
    if template is not None:
        return template.format(**values)
    if fmt.name == "alpaca":
        return (ALPACA_PROMPT if values["input"].strip() else ALPACA_PROMPT_NO_INPUT).format(**values)
    return values["prompt"]


def read_examples(path: Path, fmt: Format, columns: Mapping[str, str] | None = None,
                  prompt_template: str | None = None) -> list[Example]:
    """Every row of ``path`` as an :class:`Example` (conversations carry ``messages``)."""
    columns = dict(columns or {})
    table = load_table(path)
    names = {field: columns.get(field, field) for field in fmt.fields}
    found = list(table.column_names)
    for field, column in names.items():
        if column not in found and field not in fmt.optional:
            via = f" (task.columns.{field})" if field in columns else ""
            raise FtlabError(f"{path}: column {column!r}{via} of format {fmt.name} not found; columns found: "
                             f"{found}; map yours with task.columns.{field}=<column>")
    out = []
    for row_no, row in enumerate(table, start=1):
        if fmt.chat:
            key = names[fmt.fields[0]]
            out.append(Example("", "", messages=_conversation(path, row_no, key, row[key], fmt),
                               where=f"{path}: row {row_no}"))
            continue
        values = {field: _text(path, row_no, column, row.get(column), optional=field in fmt.optional)
                  for field, column in names.items()}
        answer_field = fmt.fields[-1]
        out.append(Example(_prompt(fmt, prompt_template, values), values[answer_field]))
    if not out:
        raise FtlabError(f"{path}: no examples")
    return out
