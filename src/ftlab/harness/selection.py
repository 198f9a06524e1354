"""Which lm-eval benchmarks a config asks for: ``eval.suite`` and ``eval.benchmarks``.

A suite is a YAML list under ``eval.suites`` (``commonsense8``, ``math`` in ``conf/config.yaml``;
``+eval.suites.mine=[a,b]`` adds one). Its average is the unweighted mean over its tasks of each
task's headline value, as the DoRA / LLM-Adapters tables report it.
"""

from __future__ import annotations

from typing import Any

from ftlab.core.errors import ConfigError, FtlabError
from ftlab.data.benchmark_files import resolve
from ftlab.data.lm_eval_catalog import task_entry
from ftlab.harness.score import Benchmark, HarnessScore


def suite_tasks(cfg: Any) -> list[str]:
    suite = cfg.eval.get("suite")
    if suite is None:
        return []
    suites = cfg.eval.get("suites") or {}
    if suite not in suites:
        raise ConfigError("eval.suite", suite, f"one of {sorted(suites)} (eval.suites; add one with "
                                               f"+eval.suites.NAME=[task,...])")
    return [str(t) for t in suites[suite]]


def benchmark_names(cfg: Any) -> list[str]:
    """The suite's tasks, then ``eval.benchmarks``, each once, in order."""
    names = [*suite_tasks(cfg), *[str(t) for t in (cfg.eval.get("benchmarks") or [])]]
    return list(dict.fromkeys(names))


def configured_benchmarks(cfg: Any, names: list[str] | None = None) -> list[Benchmark]:
    """One :class:`Benchmark` per name, its files from ``eval.data.<name>`` (checked here: a missing
    path fails naming the key, before any model is loaded)."""
    data = cfg.eval.get("data") or {}
    shots = cfg.eval.get("num_fewshot")
    names = benchmark_names(cfg) if names is None else names
    for name in names:  # every name first: a typo is reported before a missing file
        task_entry(name)
    return [Benchmark(name, resolve(f"eval.data.{name}", data.get(name)), key=f"eval.data.{name}",
                      num_fewshot=shots, max_gen_toks=cfg.eval.get("max_gen_toks"))
            for name in names]


def suite_average(cfg: Any, scores: dict[str, HarnessScore]) -> float | None:
    """Unweighted mean of the suite's tasks' headline values (None without a suite)."""
    tasks = suite_tasks(cfg)
    if not tasks:
        return None
    missing = [t for t in tasks if t not in scores]
    if missing:
        raise FtlabError(f"eval.suite={cfg.eval.suite}: no score for {missing}")
    return sum(scores[t].headline["value"] for t in tasks) / len(tasks)


__all__ = ["benchmark_names", "configured_benchmarks", "suite_average", "suite_tasks"]
