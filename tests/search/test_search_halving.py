"""The stage search's pure parts: halving math, promotion ties, prediction, override truncation,
options and the resumable state file."""

from __future__ import annotations

import itertools
import math
import time

import pytest

from ftlab.core.errors import ConfigError, FtlabError
from ftlab.search.halving import badness, group, predict, promote, rung_sizes, survivors
from ftlab.search.options import search_options
from ftlab.search.space import (
    hydra_literal,
    select_trials,
    stage_index,
    stage_label,
    truncated_overrides,
)
from ftlab.search.state import STATE_FILE, Evaluation, Rung, load_or_start


def test_rung_sizes_divide_by_eta_and_never_reach_zero():
    assert rung_sizes(27, 3, 3) == [27, 9, 3]
    assert rung_sizes(8, 3, 2) == [8, 4, 2]
    assert rung_sizes(5, 4, 3) == [5, 1, 1, 1]
    assert survivors(2, 3) == 1


def test_promote_min_max_and_missing_metric_last():
    metric = {0: 0.5, 1: 0.2, 2: float("nan"), 3: None, 4: 0.9}
    assert promote(range(5), metric, 2, "min") == [0, 1]
    assert promote(range(5), metric, 2, "max") == [0, 4]
    assert badness(None, "min") == math.inf and badness(float("nan"), "max") == math.inf


def test_promotion_ties_are_broken_by_trial_index_whatever_the_input_order():
    metric = {7: 1.0, 3: 1.0, 5: 1.0, 1: 2.0}
    assert promote([7, 5, 3, 1], metric, 2, "min") == [3, 5]
    assert promote([1, 3, 5, 7], metric, 2, "min") == [3, 5]


def test_group_by_prefix_keeps_first_appearance_order():
    assert group([4, 0, 2, 1], {0: "b", 1: "a", 2: "b", 4: "a"}) == {"b": [0, 2], "a": [1, 4]}


def _grid(*sizes: int) -> list[list[str]]:
    """Trials of a full grid in Hydra's order (first key slowest); prefix ids as value tuples."""
    return [["/".join(map(str, combo[: k + 1])) for k in range(len(sizes))]
            for combo in itertools.product(*(range(n) for n in sizes))]


def test_prediction_of_the_demo_grid():
    prefixes = _grid(3, 3, 3)
    iters = {p: 20 for chain in prefixes for p in chain}
    pred = predict(prefixes, iters, eta=3)
    assert pred.naive == 27 * 3 * 20
    assert pred.exhaustive_reuse == (3 + 9 + 27) * 20
    assert [len(r) for r in pred.evaluated] == [3, 3, 3]
    assert pred.halving == 9 * 20
    assert pred.as_dict()["halving_vs_naive"] <= 0.15


def test_prediction_is_independent_of_the_key_order_for_a_full_grid():
    # stage 3 swept slowest: trials with equal prefixes are not contiguous in index order
    prefixes = [[f"{a}", f"{a}/{b}", f"{a}/{b}/{c}"] for c, a, b in itertools.product(range(2), range(2), range(2))]
    iters = {p: 10 for chain in prefixes for p in chain}
    assert [len(r) for r in predict(prefixes, iters, eta=2).evaluated] == [2, 2, 2]


def test_stage_index_and_labels():
    assert stage_index("schedule.stages.1.lr=1e-5") == 1
    assert stage_index("+schedule.stages.12.name=x") == 12
    assert stage_index("schedule.lr=1e-3") is None
    assert stage_label(["seed=1", "schedule.stages.0.lr=1e-5", "schedule.stages.1.lr=3e-5"], 2) == "lr=3e-5"
    assert stage_label(["seed=1"], 1) == "stage 1"


def test_truncation_replaces_per_stage_overrides_by_the_composed_list():
    stages = [{"iters": 20, "lr": 1e-05, "name": None}, {"iters": 20, "lr": 0.003, "name": "b's"},
              {"iters": 5, "lr": 1.0, "name": None}]
    out = truncated_overrides(["seed=1", "schedule.stages.0.lr=1e-5", "schedule.stages=[{iters:1}]",
                               "schedule.stages.2.lr=1.0"], stages, 2)
    assert out == ["seed=1", "schedule.stages=[{iters:20,lr:1e-05,name:null},{iters:20,lr:0.003,name:'b\\'s'}]"]


def test_hydra_literal_round_trips_through_the_override_grammar():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    value = [{"iters": 3, "lr": 3e-05, "on": True, "x": None, "s": "a b", "l": [1, 2.5]}]
    parsed = OverridesParser.create().parse_overrides([f"k={hydra_literal(value)}"])[0]
    assert parsed.value() == value
    with pytest.raises(TypeError):
        hydra_literal(object())


def test_select_trials_is_seeded_and_ordered():
    assert select_trials(5, None, 0) == [0, 1, 2, 3, 4]
    picked = select_trials(27, 10, 3)
    assert picked == sorted(picked) and len(set(picked)) == 10 and picked == select_trials(27, 10, 3)
    assert picked != select_trials(27, 10, 4)


def test_search_options_are_checked():
    assert search_options({"eta": 2, "mode": "max", "metric": "eval_accuracy"}).eta == 2
    for bad, key in [({"eta": 0}, "eta"), ({"mode": "best"}, "mode"), ({"max_trials": 0}, "max_trials"),
                     ({"etta": 3}, "etta")]:
        with pytest.raises(ConfigError, match=f"hydra.sweeper.search.{key}"):
            search_options(bad)


def test_state_round_trips_and_refuses_another_search(tmp_path):
    trials = [["a=1"], ["a=2"]]
    t0 = time.perf_counter()
    state, resumed = load_or_start(tmp_path, trials, {"eta": 2})
    assert not resumed
    state.rungs.append(Rung(1, [0, 1], [Evaluation("p", "k", 0, [0, 1], ["a=1"], job=0, metric=0.5,
                                                   run_dir="x")], promoted=[0]))
    state.next_job = 1
    state._clock -= 5.0  # as if this invocation had run 5 s
    state.save(tmp_path)
    again, resumed = load_or_start(tmp_path, trials, {"eta": 2})
    assert resumed and again == state and again.rungs[0].evals[0].done
    again._clock -= 2.0  # a second invocation: wall time adds up over the invocations
    again.save(tmp_path)
    # the recorded wall time is the two invocations' 5 s + 2 s plus what really passed in this test
    assert 7.0 <= load_or_start(tmp_path, trials, {"eta": 2})[0].wall_s <= 7.0 + (time.perf_counter() - t0) + 0.01
    with pytest.raises(FtlabError, match="another search"):
        load_or_start(tmp_path, trials, {"eta": 3})
    (tmp_path / STATE_FILE).write_text("{broken")
    with pytest.raises(FtlabError, match="unreadable"):
        load_or_start(tmp_path, trials, {"eta": 2})
