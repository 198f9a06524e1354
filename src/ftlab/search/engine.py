"""The search loop, independent of Hydra: it is given how to compose a job's run config and how
to launch a batch of jobs (the Hydra sweeper passes its config loader and its launcher).

    for each rung k = 1..n_stages:
        one evaluation per distinct alive prefix (job: the trial truncated to k stages)
        pick up jobs that finished before an interruption; launch the rest as one batch
        read their metrics; promote the best 1/eta of the trials (the last rung: the best one)

Every change is saved to ``search_state.json`` before the next step, so the same command after
a crash reaches the same decisions, and the cache turns every stage trained before into a hit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftlab.core.errors import FtlabError
from ftlab.reuse.steps import run_steps
from ftlab.search.halving import Prediction, predict, promote, survivors
from ftlab.search.options import SearchOptions
from ftlab.search.records import LOG_FILE, SUMMARY_FILE, write_records
from ftlab.search.space import select_trials, truncated_overrides
from ftlab.search.state import Evaluation, Rung, SearchState, harvest, load_or_start
from ftlab.search.trials import TrialChain, check_same_depth, trial_chain

log = logging.getLogger("ftlab.search")

#: overrides -> plain run config (no ``hydra`` node)
Compose = Callable[[list[str]], dict[str, Any]]
#: (job override lists, first job number) -> whatever the launcher returns per job
Launch = Callable[[list[list[str]], int], Sequence[Any]]


@dataclass
class SearchResult:
    state: SearchState
    summary: dict[str, Any]
    tree: str
    prediction: Prediction
    returns: list[Any]


def job_overrides(trial: list[str], chain: TrialChain, k: int, compose: Compose) -> list[str]:
    """Rung ``k``'s job for ``trial`` (the full trial at the last rung). Checked: the job's stage
    keys are the trial's first ``k``, else the longer trials could not resume from it."""
    if k == len(chain.keys):
        return list(trial)
    job = truncated_overrides(trial, chain.stages, k)
    keys = [s.key for s in run_steps(compose(job)).stages]
    if keys != chain.keys[:k]:
        raise FtlabError(f"stage search: truncating '{' '.join(trial)}' to {k} stages changes its cache keys "
                         "(a config value depends on the number of stages)")
    return job


def new_rung(k: int, alive: list[int], trials: list[list[str]], chains: list[TrialChain], compose: Compose) -> Rung:
    groups: dict[str, list[int]] = {}
    for t in alive:
        groups.setdefault(chains[t].prefixes[k - 1], []).append(t)
    evals = [Evaluation(prefix=p, key=chains[ts[0]].keys[k - 1], trial=ts[0], members=ts,
                        overrides=job_overrides(trials[ts[0]], chains[ts[0]], k, compose))
             for p, ts in groups.items()]
    return Rung(k, list(alive), evals)


def evaluate(rung: Rung, state: SearchState, sweep_dir: Path, metric: str, launch: Launch) -> list[Any]:
    """Launch the rung's unfinished evaluations as one batch (after picking up jobs that
    finished before an interruption) and read their metrics."""
    harvest(sweep_dir, rung.evals, rung.stage, metric)
    todo = [e for e in rung.evals if not e.done]
    if not todo:
        state.save(sweep_dir)
        return []
    first = state.next_job
    for i, e in enumerate(todo):
        e.job = first + i
    state.next_job = first + len(todo)
    state.save(sweep_dir)  # before launching: a relaunch after a crash never reuses a job dir
    log.info("rung %d: launching %d of its %d prefixes", rung.stage, len(todo), len(rung.evals))
    results = list(launch([e.overrides for e in todo], first))
    harvest(sweep_dir, todo, rung.stage, metric)
    state.save(sweep_dir)
    missing = [e for e in todo if not e.done]
    if missing:
        raise FtlabError(f"stage search: job {missing[0].job} ('{' '.join(missing[0].overrides)}') left no "
                         f"metrics.json and reuse_record.json under {sweep_dir}")
    return results


def run_search(grid: list[list[str]], opts: SearchOptions, sweep_dir: Path, compose: Compose,
               launch: Launch) -> SearchResult:
    t0 = time.perf_counter()
    sweep_dir = Path(sweep_dir)
    trials = [grid[i] for i in select_trials(len(grid), opts.max_trials, opts.seed)]
    chains = [trial_chain(compose(t)) for t in trials]
    n_rungs = check_same_depth(chains)
    iters = {p: n for ch in chains for p, n in zip(ch.prefixes, ch.iters)}
    prediction = predict([ch.prefixes for ch in chains], iters, opts.eta)
    state, resumed = load_or_start(sweep_dir, trials, opts.as_dict())
    sweep_dir.mkdir(parents=True, exist_ok=True)
    log.info("stage search: %d trials (grid %d), %d rungs, eta=%d, %s %s; predicted %d iterations "
             "(exhaustive with reuse %d, naive %d)%s", len(trials), len(grid), n_rungs, opts.eta, opts.mode,
             opts.metric, prediction.halving, prediction.exhaustive_reuse, prediction.naive,
             f"; resuming {sweep_dir}" if resumed else "")
    returns: list[Any] = []
    alive = list(range(len(trials)))
    for k in range(1, n_rungs + 1):
        if len(state.rungs) < k:
            state.rungs.append(new_rung(k, alive, trials, chains, compose))
            state.save(sweep_dir)
        rung = state.rungs[k - 1]
        returns += evaluate(rung, state, sweep_dir, opts.metric, launch)
        metric = rung.metric_of()
        if k == n_rungs:
            state.best = promote(rung.alive, metric, 1, opts.mode)[0]
            state.save(sweep_dir)
            break
        if rung.promoted is None:
            rung.promoted = promote(rung.alive, metric, survivors(len(rung.alive), opts.eta), opts.mode)
            state.save(sweep_dir)
        kept = sum(1 for e in rung.evals if set(e.members) & set(rung.promoted))
        log.info("rung %d: %d prefixes of %d trials evaluated; promoted %d trials (%d prefixes)",
                 k, len(rung.evals), len(rung.alive), len(rung.promoted), kept)
        alive = rung.promoted
    state.save(sweep_dir)  # the final wall time
    summary, tree = write_records(sweep_dir, state, opts.as_dict(), prediction, time.perf_counter() - t0,
                                  opts.metric, chains[0].devices)
    return SearchResult(state, summary, tree, prediction, returns)


def report(result: SearchResult, sweep_dir: Path, metric: str) -> str:
    s, best = result.summary, result.summary["best"]
    return (f"\n{result.tree}\nbest trial {best['trial']}: {metric}={best['metric']:.6g}  {' '.join(best['overrides'])}\n"
            f"{s['executed_iters']} iterations executed (predicted {s['predicted_iters']}); exhaustive with reuse "
            f"{s['exhaustive_reuse_iters']}, naive {s['naive_iters']} -> {Path(sweep_dir) / LOG_FILE}, "
            f"{Path(sweep_dir) / SUMMARY_FILE}")
