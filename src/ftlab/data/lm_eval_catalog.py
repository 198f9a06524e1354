"""lm-eval's own installed task configs, looked up by name.

ftlab ships no copy of a task config: ``eval.benchmarks=[piqa, arc_easy]`` (and ``task=boolq``'s
final numbers) use the YAML lm-eval installs (its prompts, metrics, filters and few-shot
settings), loaded through lm-eval's index and YAML loader. Only the dataset source is replaced
afterwards (:mod:`ftlab.data.benchmark_files`).
"""

from __future__ import annotations

import difflib
import re
from functools import cache, lru_cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

import lm_eval.tasks as lm_eval_tasks
from lm_eval.tasks import TaskManager
from lm_eval.tasks._yaml_loader import load_yaml

from ftlab.core.errors import FtlabError

SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")
_TASK_LINE = re.compile(rb"^task:[ \t]*['\"]?([^\s'\"#]+)", re.M)


@lru_cache(maxsize=1)
def task_manager() -> TaskManager:
    """lm-eval's index of all its installed configs; built at most once per process (it parses
    ~14k YAML files: 5-20 s on a small CPU) and only when a name is not found in
    :func:`local_manager`'s one directory (an unknown name's closest names, a task whose YAML does
    not spell its name)."""
    return TaskManager()


@lru_cache(maxsize=1)
def config_manager() -> TaskManager:
    """A manager with an empty index, for lm-eval configs ftlab passes whole (``task_config``'s
    dicts: ``include`` and ``!function`` already resolved), which need no name lookup."""
    return TaskManager(include_defaults=False)


@lru_cache(maxsize=1)
def _task_lines() -> dict[str, tuple[Path, ...]]:
    """``task: NAME`` lines of lm-eval's installed YAML files, read as text (no YAML parsing:
    ~1 s instead of the full index's 5-20 s)."""
    found: dict[str, list[Path]] = {}
    for path in sorted(Path(lm_eval_tasks.__file__).parent.rglob("*.yaml")):
        for match in _TASK_LINE.finditer(path.read_bytes()):
            found.setdefault(match.group(1).decode(), []).append(path)
    return {name: tuple(paths) for name, paths in found.items()}


@cache
def local_manager(name: str) -> TaskManager | None:
    """lm-eval's index of the one directory whose YAML names task ``name`` (None when no single
    file does): the same entry the full index holds, at the cost of that directory."""
    paths = _task_lines().get(name, ())
    if len(paths) != 1:
        return None
    return TaskManager(include_defaults=False, include_path=str(paths[0].parent))


def _yaml_entry(tm: TaskManager, name: str) -> Any:
    entry = tm.task_index.get(name)
    return entry if entry is not None and name in tm.all_subtasks and entry.yaml_path is not None else None


def closest_names(name: str, n: int = 5) -> list[str]:
    return difflib.get_close_matches(name, task_manager().all_subtasks, n=n, cutoff=0.6)


def task_entry(name: str, key: str = "eval.benchmarks") -> Any:
    """lm-eval's index entry of YAML task ``name`` (from its own directory's index when the
    name is found there, else from the full index).

    An unknown name fails naming the closest names lm-eval knows; a group or tag (``mmlu``,
    ``ai2_arc``) fails asking for its tasks, whose data files differ."""
    local = local_manager(name)
    entry = _yaml_entry(local, name) if local is not None else None
    if entry is not None:
        return entry
    tm = task_manager()
    entry = tm.task_index.get(name)
    if entry is None:
        near = closest_names(name)
        hint = f"closest: {', '.join(near)}" if near else "see `lm_eval --tasks list`"
        raise FtlabError(f"{key}: {name!r} is not a task lm-eval {lm_eval_version()} knows ({hint})")
    if name not in tm.all_subtasks or entry.yaml_path is None:
        raise FtlabError(f"{key}: {name!r} is an lm-eval group/tag or a Python task, not a YAML task: "
                         f"list its tasks one by one (each reads its own local files)")
    return entry


def task_yaml(name: str, key: str = "eval.benchmarks") -> dict[str, Any]:
    """The installed config of lm-eval task ``name`` (``include:`` and ``!function`` resolved)."""
    return load_yaml(task_entry(name, key).yaml_path, resolve_func=True)


def scored_split(cfg: dict[str, Any]) -> str:
    """The split lm-eval scores: ``test_split`` when the config has one, else ``validation_split``."""
    split = cfg.get("test_split") or cfg.get("validation_split")
    if not split:
        raise FtlabError(f"lm-eval task {cfg.get('task')!r} names no test or validation split")
    return split


def fewshot_source(cfg: dict[str, Any]) -> str | None:
    """The split lm-eval draws few-shot examples from (``fewshot_split``, else ``training_split``)."""
    return cfg.get("fewshot_split") or cfg.get("training_split")


def default_shots(cfg: dict[str, Any]) -> int:
    return int(cfg.get("num_fewshot") or 0)


def lm_eval_version() -> str:
    return version("lm_eval")


__all__ = ["SPLIT_KEYS", "closest_names", "config_manager", "default_shots", "fewshot_source", "lm_eval_version", "scored_split",
           "local_manager", "task_entry", "task_manager", "task_yaml"]
