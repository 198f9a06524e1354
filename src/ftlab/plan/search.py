"""What ``hydra/sweeper=stage_search`` will execute, predicted from the plan's stage tree before
anything runs: iterations and device-hours of the exhaustive sweep without reuse, with reuse,
and of successive halving at the stage boundaries (:func:`ftlab.search.halving.predict`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import OmegaConf

from ftlab.plan.stages import StageNode, StageTree
from ftlab.preflight.compose import compose_config
from ftlab.search.halving import predict
from ftlab.search.options import search_options
from ftlab.search.space import select_trials

SWEEPER = "StageSearchSweeper"


def sweeper_search(overrides: list[str]) -> dict[str, Any] | None:
    """``hydra.sweeper.search`` of the composed config when the sweeper is ``stage_search``."""
    plain = [o for o in overrides if "," not in o.partition("=")[2]]
    cfg = compose_config(plain, with_hydra=True)
    sweeper = OmegaConf.select(cfg, "hydra.sweeper")
    if sweeper is None or not str(sweeper.get("_target_", "")).endswith(SWEEPER):
        return None
    return search_options(sweeper.get("search")).as_dict()


def search_numbers(runs: list[Any], tree: StageTree, options: dict[str, Any],
                   seconds: Callable[[StageNode, Any], float | None]) -> dict[str, Any]:
    """Iterations and device-hours of the three ways to run the sweep. ``runs``: the plan's
    runs (``chain`` of node keys; controls are skipped), ``seconds(node, run)``: the planner's
    estimate of one node."""
    runs = [r for r in runs if not r.control]
    runs = [runs[i] for i in select_trials(len(runs), options["max_trials"], options["seed"])]
    nodes = tree.nodes
    chains = [[k for k in r.chain if nodes[k].kind == "train"] for r in runs]
    pred = predict(chains, {k: nodes[k].iters for ch in chains for k in ch}, int(options["eta"]))
    owner = {k: r for r, ch in zip(runs, chains) for k in reversed(ch)}

    def hours(keys: list[str]) -> float | None:
        secs = [seconds(nodes[k], owner[k]) for k in keys]
        return None if any(s is None for s in secs) else sum(s * nodes[k].devices for s, k in zip(secs, keys)) / 3600

    return {**pred.as_dict(), "options": options, "trials": len(runs),
            "device_hours": {"naive": hours([k for ch in chains for k in ch]),
                             "exhaustive_reuse": hours(sorted({k for ch in chains for k in ch})),
                             "halving": hours([k for rung in pred.evaluated for k in rung])}}


def markdown(numbers: dict[str, Any]) -> list[str]:
    o, dh = numbers["options"], numbers["device_hours"]

    def h(x: float | None) -> str:
        return "?" if x is None else f"{x:.4g}"

    return ["## Stage search (hydra/sweeper=stage_search)", "",
            f"Successive halving at the stage boundaries, eta={o['eta']}, {o['mode']} {o['metric']}, "
            f"{numbers['trials']} trials; evaluations per rung: {numbers['evaluations_per_rung']} "
            "(exact for a full grid: which prefixes survive depends on the metric, how many does not).", "",
            "| | iterations | device-hours |", "|---|---|---|",
            f"| exhaustive, no reuse | {numbers['naive_iters']} | {h(dh['naive'])} |",
            f"| exhaustive with reuse | {numbers['exhaustive_reuse_iters']} | {h(dh['exhaustive_reuse'])} |",
            f"| halving search | {numbers['halving_iters']} | {h(dh['halving'])} |", ""]
