"""``task=instruct``: your own instruction or chat data from a local file (see :mod:`ftlab.data.formats`).

Exact match on the test split compares the generated text with the answer (the last assistant
turn of a conversation), as for the generated tasks.
"""

from __future__ import annotations

from pathlib import Path

from ftlab.data.formats import check_columns, check_prompt_template, get_format, is_data_path, read_examples
from ftlab.data.task_base import Example, Task, register_task
from ftlab.errors import ConfigError


class Instruct(Task):
    name = "instruct"
    reads_format = True
    reads_directories = True

    def check_options(self) -> None:
        super().check_options()
        fmt = get_format(self.cfg.get("format"))
        check_columns(fmt, dict(self.cfg.get("columns") or {}))
        check_prompt_template(fmt, self.cfg.get("prompt_template"))
        if not fmt.chat:
            for key in ("chat_template", "last_turn_only"):
                if self.cfg.get(key):
                    raise ConfigError(f"task.{key}", self.cfg.get(key),
                                      f"unset for format {fmt.name}: it applies to messages|sharegpt only")

    def examples(self, seed: int) -> list[Example]:
        path = self.cfg.path
        if not path or not is_data_path(Path(path)):
            raise ConfigError("task.path", path, "a local .jsonl/.json/.csv/.parquet/.arrow file or a directory "
                                                 "written by datasets.save_to_disk (task=instruct reads no "
                                                 "generator)")
        fmt = get_format(self.cfg.format)
        return read_examples(Path(path), fmt, dict(self.cfg.get("columns") or {}), self.cfg.get("prompt_template"))


register_task("instruct", Instruct)
