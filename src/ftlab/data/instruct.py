"""``task=instruct``: your own instruction or chat data from a local file (see :mod:`ftlab.data.formats`).

Exact match on the test split compares the generated text with the answer (the last assistant
turn of a conversation), as for the generated tasks.
"""

from __future__ import annotations

from pathlib import Path

from ftlab.core.errors import ConfigError
from ftlab.data.formats import (
    Format,
    check_columns,
    check_prompt_template,
    get_format,
    is_data_path,
    read_examples,
)
from ftlab.data.mixture import MIXTURE_KEYS, mixture_splits, source_specs
from ftlab.data.task_base import Example, Splits, Task, register_task


class Instruct(Task):
    name = "instruct"
    reads_format = True
    reads_directories = True
    source_counts: dict[str, int] | None = None  # a mixture's realised train examples per source

    def check_options(self) -> None:
        super().check_options()
        formats = self.check_sources()
        template = self.cfg.get("prompt_template")
        if template is not None:  # it renders the prompt/answer rows; a mixture's conversations ignore it
            for fmt in [f for f in formats if not f.chat] or formats[:1]:
                check_prompt_template(fmt, template)
        if not any(fmt.chat for fmt in formats):
            names = "|".join(dict.fromkeys(fmt.name for fmt in formats))
            for key in ("chat_template", "last_turn_only"):
                if self.cfg.get(key):
                    raise ConfigError(f"task.{key}", self.cfg.get(key),
                                      f"unset for format {names}: it applies to messages|sharegpt only")

    def check_sources(self) -> list[Format]:
        """The formats of the task's rows: ``task.format``, or each ``task.sources`` entry's (a
        mixture may hold conversations and prompt/answer rows)."""
        if self.cfg.get("sources") is None:
            for key in MIXTURE_KEYS:
                if self.cfg.get(key):
                    raise ConfigError(f"task.{key}", self.cfg.get(key),
                                      "false without task.sources: it applies to a mixture only")
            fmt = get_format(self.cfg.get("format"))
            check_columns(fmt, dict(self.cfg.get("columns") or {}))
            return [fmt]
        if self.cfg.path:
            raise ConfigError("task.path", self.cfg.path, "null when task.sources is set (give each file there)")
        return [spec["format"] for spec in source_specs(self.cfg)]

    def read_source(self, spec: dict) -> list[Example]:
        return read_examples(Path(spec["path"]), spec["format"], spec["columns"], self.cfg.get("prompt_template"))

    def splits(self, seed: int) -> Splits:
        """One file split seeded; or a mixture of ``task.sources`` (:mod:`ftlab.data.mixture`)."""
        if self.cfg.get("sources") is None:
            return super().splits(seed)
        splits, self.source_counts = mixture_splits(self.cfg, seed, self.read_source)
        return splits

    def examples(self, seed: int) -> list[Example]:
        if self.cfg.get("sources") is not None:  # every source's rows (the preflight counts them)
            return [ex for spec in source_specs(self.cfg) for ex in self.read_source(spec)]
        path = self.cfg.path
        if not path or not is_data_path(Path(path)):
            raise ConfigError("task.path", path, "a local .jsonl/.json/.csv/.parquet/.arrow file or a directory "
                                                 "written by datasets.save_to_disk (task=instruct reads no "
                                                 "generator)")
        fmt = get_format(self.cfg.format)
        return read_examples(Path(path), fmt, dict(self.cfg.get("columns") or {}), self.cfg.get("prompt_template"))


register_task(Instruct)
