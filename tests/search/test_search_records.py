"""The stage search's records and their readers: the printed tree marks pruned branches,
``ftlab.plan`` predicts the search before it runs, ``ftlab.analyze`` collects the records."""

from __future__ import annotations

import csv
import json

from ftlab.analysis import analyze
from ftlab.plan.options import PlanOptions
from ftlab.plan.planner import make_plan
from ftlab.plan.report import to_json, to_markdown
from ftlab.search.halving import predict
from ftlab.search.records import LOG_FILE, SUMMARY_FILE, write_records
from ftlab.search.state import Evaluation, Rung, SearchState

TRIALS = [[f"schedule.stages.0.lr={a}", f"schedule.stages.1.lr={b}", "seed=1"] for a in (1, 2) for b in (3, 4)]
PREFIXES = [[f"p{a}", f"p{a}{b}"] for a in (1, 2) for b in (3, 4)]


def finished_state() -> SearchState:
    r1 = Rung(1, [0, 1, 2, 3], [Evaluation("p1", "k1", 0, [0, 1], ["j0"], 0, 2.0, False, 5, 1.0, "0"),
                                Evaluation("p2", "k2", 2, [2, 3], ["j1"], 1, 1.5, False, 5, 1.0, "1")], [2, 3])
    r2 = Rung(2, [2, 3], [Evaluation("p23", "k23", 2, [2], ["j2"], 2, 1.2, True, 5, 1.0, "2"),
                          Evaluation("p24", "k24", 3, [3], ["j3"], 3, 1.1, True, 5, 1.0, "3")])
    return SearchState("f", TRIALS, [r1, r2], next_job=4, best=3)


def test_records_log_summary_and_tree(tmp_path):
    pred = predict(PREFIXES, {p: 5 for ch in PREFIXES for p in ch}, eta=2)
    summary, tree = write_records(tmp_path, finished_state(), {"eta": 2, "metric": "val_loss", "mode": "min"},
                                  pred, 12.5, "val_loss")
    with open(tmp_path / LOG_FILE, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["rung"], r["trial"], r["stage"], r["promoted"], r["cache_hit"]) for r in rows] == [
        ("1", "0", "1", "False", "False"), ("1", "2", "1", "True", "False"),
        ("2", "2", "2", "False", "True"), ("2", "3", "2", "True", "True")]
    saved = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert saved["best"] == {"trial": 3, "overrides": TRIALS[3], "metric": 1.1}
    assert (saved["executed_iters"], saved["predicted_iters"], saved["exhaustive_reuse_iters"],
            saved["naive_iters"]) == (20, 20, 30, 40)
    assert saved["device_hours"] == round(4 / 3600, 6) and saved["wall_s"] == 12.5
    lines = tree.splitlines()
    assert lines[1] == "├── stage 1: lr=1  val_loss=2.0000  [pruned at rung 1 (2 trials stopped)]"
    assert lines[2] == "└── stage 1: lr=2  val_loss=1.5000  [promoted]"
    assert lines[3] == "    ├── stage 2: lr=3  val_loss=1.2000 (cache hit)  [done]"
    assert lines[4] == "    └── stage 2: lr=4  val_loss=1.1000 (cache hit)  [BEST]"
    assert "seed=1" not in tree  # trial-level overrides shown only where they differ


def test_analyze_collects_search_records(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    pred = predict(PREFIXES, {p: 5 for ch in PREFIXES for p in ch}, eta=2)
    write_records(sweep, finished_state(), {"eta": 2, "metric": "val_loss", "mode": "min"}, pred, 1.0, "val_loss")
    run = sweep / "3"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"val_loss": 1.1}))
    result = analyze(tmp_path)
    assert result.search.loc[0, "best_trial"] == 3 and result.search.loc[0, "executed_iters"] == 20
    assert result.search.loc[0, "sweep"] == "sweep"
    assert list(result.search_log["rung"]) == ["1", "1", "2", "2"]
    assert (tmp_path / "analysis" / "search_summary.csv").is_file()
    assert (tmp_path / "analysis" / "search_log.csv").is_file()


def test_plan_predicts_the_search_before_it_runs(tmp_path):
    overrides = ["hydra/sweeper=stage_search", "hydra.sweeper.search.eta=2", "schedule=stages",
                 "schedule.stages=[{iters:4,lr:1e-3},{iters:3,lr:1e-3},{iters:3,lr:1e-3}]",
                 "schedule.stages.0.lr=1e-4,3e-3", "schedule.stages.1.lr=1e-4,3e-3", "schedule.stages.2.lr=1e-4,3e-3",
                 "task.num_examples=80", "eval.generate=false"]
    plan = make_plan(overrides, PlanOptions(prior_dirs=[str(tmp_path / "none")], write=False))
    s = plan.search
    assert (s["naive_iters"], s["exhaustive_reuse_iters"], s["halving_iters"]) == (80, 44, 20)
    assert s["evaluations_per_rung"] == [2, 2, 2] and s["trials"] == 8
    assert s["device_hours"]["halving"] is None  # no prior run: no time basis
    assert "## Stage search (hydra/sweeper=stage_search)" in to_markdown(plan)
    assert "| halving search | 20 | ? |" in to_markdown(plan)
    assert to_json(plan)["search"]["halving_iters"] == 20
    plain = make_plan(overrides[2:], PlanOptions(prior_dirs=[str(tmp_path / "none")], write=False))
    assert plain.search is None and "search" not in to_json(plain)
