"""What a stage search leaves in its sweep dir: ``search_log.csv`` (one row per evaluated prefix
per rung), ``search_summary.json`` (best trial, iterations executed vs exhaustive, device-hours)
and the stage tree with pruned branches marked (also printed at the end of the search)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftlab.core.io import write_csv, write_json
from ftlab.search.halving import Prediction
from ftlab.search.space import stage_label, trial_level
from ftlab.search.state import SearchState

LOG_FILE = "search_log.csv"
SUMMARY_FILE = "search_summary.json"
LOG_COLUMNS = ["rung", "trial", "stage", "key", "metric", "promoted", "cache_hit", "members", "job",
               "executed_iters", "runtime_s", "overrides"]


def log_rows(state: SearchState) -> list[dict[str, Any]]:
    rows = []
    for i, rung in enumerate(state.rungs, start=1):
        promoted = set(rung.promoted or ([state.best] if state.best is not None and i == len(state.rungs) else []))
        for e in rung.evals:
            rows.append({"rung": i, "trial": e.trial, "stage": rung.stage, "key": e.key,
                         "metric": "" if e.metric is None else e.metric,
                         "promoted": any(t in promoted for t in e.members),
                         "cache_hit": "" if e.cache_hit is None else e.cache_hit,
                         "members": " ".join(map(str, e.members)), "job": "" if e.job is None else e.job,
                         "executed_iters": e.executed_iters, "runtime_s": e.runtime_s,
                         "overrides": " ".join(e.overrides)})
    return rows


def write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    write_csv(path, LOG_COLUMNS, rows)


def render_tree(state: SearchState, metric: str) -> str:
    """The evaluated part of the stage tree. Each node is a prefix: its stage's swept values, the
    metric, and what happened to it (promoted, pruned at rung k, best); a pruned node's unexplored
    descendants are counted, not drawn."""
    evals = {(i, t): e for i, rung in enumerate(state.rungs) for e in rung.evals for t in e.members}
    n_rungs = len(state.rungs)
    common = set.intersection(*(set(trial_level(t)) for t in state.trials)) if state.trials else set()
    lines: list[str] = []

    def status(i: int, e) -> str:
        rung = state.rungs[i]
        if e.metric is None:
            return "pending"
        if i == n_rungs - 1 and rung.promoted is None:
            return "BEST" if state.best in e.members else "done"
        if rung.promoted is None:
            return "pending"
        if any(t in rung.promoted for t in e.members):
            return "promoted"
        return f"pruned at rung {i + 1} ({len(e.members)} trial{'s' if len(e.members) > 1 else ''} stopped)"

    def walk(i: int, members: list[int], indent: str) -> None:
        seen: dict[str, list[int]] = {}
        for t in members:
            e = evals.get((i, t))
            if e is not None:
                seen.setdefault(e.prefix, []).append(t)
        kids = list(seen.items())
        for j, (_prefix, ts) in enumerate(kids):
            e = evals[(i, ts[0])]
            last = j == len(kids) - 1
            text = stage_label(state.trials[e.trial], i + 1)
            varying = [o for o in trial_level(state.trials[e.trial]) if o not in common]
            if i == 0 and varying:
                text = " ".join(varying) + " | " + text
            value = "?" if e.metric is None else f"{e.metric:.4f}"
            hit = " (cache hit)" if e.cache_hit else ""
            lines.append(f"{indent}{'└── ' if last else '├── '}stage {i + 1}: {text}  {metric}={value}{hit}  "
                         f"[{status(i, e)}]")
            if i + 1 < n_rungs:
                walk(i + 1, ts, indent + ("    " if last else "│   "))

    if state.rungs:
        lines.append(f"Stage search tree ({len(state.trials)} trials, {n_rungs} rungs):")
        walk(0, state.rungs[0].alive, "")
    return "\n".join(lines)


def summarize(state: SearchState, options: dict[str, Any], prediction: Prediction, wall_s: float,
              devices: int = 1) -> dict[str, Any]:
    evals = [e for rung in state.rungs for e in rung.evals]
    executed = sum(e.executed_iters for e in evals)
    runtime = sum(e.runtime_s for e in evals)
    best = state.best
    best_eval = next((e for e in state.rungs[-1].evals if best in e.members), None) if state.rungs else None
    return {
        "finished": best is not None,
        "best": None if best is None else {"trial": best, "overrides": state.trials[best],
                                           "metric": None if best_eval is None else best_eval.metric},
        "search": options,
        "trials": len(state.trials),
        "rungs": [{"rung": i, "stage": r.stage, "alive": len(r.alive), "evaluations": len(r.evals),
                   "promoted": None if r.promoted is None else len(r.promoted)}
                  for i, r in enumerate(state.rungs, start=1)],
        "jobs": sum(e.job is not None for e in evals),
        "executed_iters": executed,
        "naive_iters": prediction.naive,
        "exhaustive_reuse_iters": prediction.exhaustive_reuse,
        "predicted_iters": prediction.halving,
        "executed_vs_naive": round(executed / prediction.naive, 4) if prediction.naive else None,
        "executed_vs_exhaustive_reuse": (round(executed / prediction.exhaustive_reuse, 4)
                                         if prediction.exhaustive_reuse else None),
        "stage_runtime_s": round(runtime, 3),
        "device_hours": round(runtime * devices / 3600, 6),
        "wall_s": round(wall_s, 3),  # this invocation
        "wall_s_all_invocations": state.wall_s,  # with the ones a crash interrupted
    }


def write_records(sweep_dir: Path, state: SearchState, options: dict[str, Any], prediction: Prediction,
                  wall_s: float, metric: str, devices: int = 1) -> tuple[dict[str, Any], str]:
    sweep_dir = Path(sweep_dir)
    write_log(sweep_dir / LOG_FILE, log_rows(state))
    tree = render_tree(state, metric)
    summary = {**summarize(state, options, prediction, wall_s, devices), "tree": tree.splitlines()}
    write_json(sweep_dir / SUMMARY_FILE, summary)
    return summary, tree
