"""``hydra/sweeper=stage_search`` for real: plugin discovery, truncated jobs whose stage keys are
the full trials' prefixes, a 2x2x2 search (eta 2, basic launcher) with its records and cache
hits, a resume after an interruption reaching the same decisions, and bad options."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import cli, compose
from ftlab.reuse.steps import as_plain, run_steps
from ftlab.search.space import truncated_overrides
from ftlab.search.state import STATE_FILE

STAGES = "schedule.stages=[{iters:4,lr:1e-3},{iters:3,lr:1e-3},{iters:3,lr:1e-3}]"
TINY = ["schedule=stages", STAGES, "task.num_examples=120", "train.batch_size=8", "train.eval_batch_size=32",
        "task.eval_examples=16", "eval.generate=false", "train.save_merged_model=false", "train.save_adapter=false",
        "train.log_measurements=false"]
GRID = ["schedule.stages.0.lr=1e-4,3e-3", "schedule.stages.1.lr=1e-4,3e-3", "schedule.stages.2.lr=1e-4,3e-3"]
#: the refusals below come before any job: a 2-trial grid is checked the same way and composes 2 trials, not 8
SMALL_GRID = ["schedule.stages.0.lr=1e-4,3e-3"]


def test_the_sweeper_is_a_discoverable_hydra_plugin():
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    names = [p.__name__ for p in Plugins.instance().discover(Sweeper)]
    assert "StageSearchSweeper" in names


def test_a_truncated_trial_has_the_full_trials_prefix_keys():
    trial = [*TINY, "schedule.stages.0.lr=3e-3", "schedule.stages.1.lr=1e-4", "schedule.stages.2.lr=3e-3"]
    full = as_plain(compose(*trial))
    keys = [s.key for s in run_steps(full).stages]
    for k in (1, 2):
        job = truncated_overrides(trial, full["schedule"]["stages"], k)
        assert not any(o.startswith("schedule.stages.") for o in job)
        assert [s.key for s in run_steps(as_plain(compose(*job))).stages] == keys[:k]
    # a different stage-2 value changes stage 2's key and not stage 1's
    other = as_plain(compose(*trial[:-2], "schedule.stages.1.lr=3e-3", "schedule.stages.2.lr=3e-3"))
    okeys = [s.key for s in run_steps(other).stages]
    assert okeys[0] == keys[0] and okeys[1] != keys[1]


def search(tmp_path: Path, *extra: str, name: str = "sweep", grid: list[str] = GRID):
    out = tmp_path / name
    res = cli("ftlab", "--multirun", "hydra/sweeper=stage_search", "hydra.sweeper.search.eta=2", *TINY, *grid,
              f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={out}", *extra, timeout=600,
              env={"OMP_NUM_THREADS": "1"})
    return res, out


def read_log(out: Path) -> list[dict]:
    with open(out / "search_log.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def job_records(out: Path) -> dict[int, dict]:
    return {json.loads(p.read_text())["job_num"]: json.loads(p.read_text()) for p in out.rglob("reuse_record.json")}


@pytest.mark.slow
def test_a_2x2x2_search_its_records_and_a_resume(tmp_path):
    res, out = search(tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = read_log(out)
    # 8 trials -> rung 1: 2 prefixes (4 trials kept = 1 prefix) -> rung 2: 2 -> rung 3: 2
    assert [r["rung"] for r in rows] == ["1", "1", "2", "2", "3", "3"]
    assert [r["promoted"] for r in rows].count("True") == 3
    assert sorted(int(r["job"]) for r in rows) == list(range(6))
    summary = json.loads((out / "search_summary.json").read_text())
    assert summary["executed_iters"] == summary["predicted_iters"] == 2 * 4 + 2 * 3 + 2 * 3
    assert summary["exhaustive_reuse_iters"] == 2 * 4 + 4 * 3 + 8 * 3 and summary["naive_iters"] == 8 * 10
    best = summary["best"]
    last = [r for r in rows if r["rung"] == "3"]
    assert best["metric"] == min(float(r["metric"]) for r in last)
    state = json.loads((out / STATE_FILE).read_text())
    assert best["overrides"] == state["trials"][best["trial"]]
    assert sum(o.startswith("schedule.stages.") for o in best["overrides"]) == 3
    assert "Stage search tree (8 trials, 3 rungs)" in res.stdout and "pruned at rung 1 (4 trials stopped)" in res.stdout
    assert "[BEST]" in res.stdout

    # the prefix a rung trained is a cache hit for the next rung: no stage ran twice
    recs = job_records(out)
    by_job = {int(r["job"]): r for r in rows}
    for job, rec in recs.items():
        k = int(by_job[job]["stage"])
        assert [s["cache_hit"] for s in rec["stages"]] == [True] * (k - 1) + [False]
        assert rec["stages"][-1]["key"] == by_job[job]["key"]
        promoted_before = [r for r in rows if int(r["rung"]) == k - 1 and r["promoted"] == "True"]
        if k > 1:
            assert rec["stages"][k - 2]["key"] == promoted_before[0]["key"]
    executed = [s["key"] for rec in recs.values() for s in rec["stages"] if not s["cache_hit"]]
    assert len(executed) == len(set(executed)) == 6

    # interrupted after rung 2 was launched: rung 2's second job finished but was not read back,
    # rung 3 never started
    decided = [r["promoted"] for r in state["rungs"][:2]]
    state["rungs"] = state["rungs"][:2]
    state["rungs"][1]["promoted"] = None
    for key in ("metric", "run_dir", "cache_hit"):
        state["rungs"][1]["evals"][1][key] = None
    state["best"] = None
    (out / STATE_FILE).write_text(json.dumps(state))
    res2, _ = search(tmp_path)
    assert res2.returncode == 0, res2.stderr[-3000:]
    again = json.loads((out / STATE_FILE).read_text())
    assert [r["promoted"] for r in again["rungs"][:2]] == decided
    assert again["best"] == best["trial"]
    assert again["rungs"][1]["evals"][1]["job"] == 3  # picked up from its run dir, not relaunched
    assert [e["job"] for e in again["rungs"][2]["evals"]] == [6, 7]  # rung 3 relaunched in new job dirs
    recs2 = job_records(out)
    for job in (6, 7):
        assert all(s["cache_hit"] for s in recs2[job]["stages"])  # everything already trained
    summary2 = json.loads((out / "search_summary.json").read_text())
    assert summary2["best"] == best

    # the same command once more: nothing is launched
    res3, _ = search(tmp_path)
    assert res3.returncode == 0 and len(job_records(out)) == 8


@pytest.mark.slow
def test_bad_search_options_stop_with_one_line_and_write_nothing(tmp_path):
    res, out = search(tmp_path, "hydra.sweeper.search.mode=best", grid=SMALL_GRID)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == (
        "ftlab: error: hydra.sweeper.search.mode='best' is invalid: one of ['min', 'max']")
    assert "Traceback" not in res.stderr and not (out / STATE_FILE).exists()
    # another search's state in the sweep dir is refused
    out.mkdir(parents=True, exist_ok=True)
    (out / STATE_FILE).write_text(json.dumps({"version": 1, "fingerprint": "0", "trials": []}))
    res, _ = search(tmp_path, grid=SMALL_GRID)
    assert res.returncode == 2 and "holds search_state.json of another search" in res.stderr
    assert json.loads((out / STATE_FILE).read_text())["fingerprint"] == "0"
