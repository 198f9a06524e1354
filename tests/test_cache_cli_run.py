"""``python -m ftlab.cache ls --run OVERRIDES`` describes the cache entries of a run's plan of
steps: the same keys and caching decisions the recipe's StepRunner executes."""

from __future__ import annotations

import json
from pathlib import Path

from ftlab.cache import main
from ftlab.preflight.compose import compose_run
from ftlab.reuse.runner import StepRunner

RUN = ["+experiment=stage_reuse_demo", "sparsity=unstructured"]


def _build_mask(cfg) -> str:
    runner = StepRunner(cfg)
    step = runner.steps.mask
    runner.run(step, lambda: {"m": 1}, lambda out, art: (art / "m.json").write_text(json.dumps(out)),
               lambda art: json.loads((art / "m.json").read_text()))
    return step.key


def test_ls_run_lists_the_plan_of_steps_with_their_entries(tmp_path, capsys):
    overrides = [*RUN, f"paths.cache_dir={tmp_path / 'cache'}"]
    key = _build_mask(compose_run(overrides))
    assert main(["ls", "--json", "--run", *overrides]) == 0  # the cache dir is the run's paths.cache_dir
    rows = {r["step"]: r for r in json.loads(capsys.readouterr().out)}
    assert list(rows) == ["model", "mask", "train", "stage 1", "stage 2"]
    assert rows["mask"]["key"] == key and rows["mask"]["in_cache"] and rows["mask"]["size"] > 0
    assert rows["stage 1"]["cached"] == "yes" and not rows["stage 1"]["in_cache"]
    assert rows["model"]["cached"] == "no" and rows["model"]["size"] is None
    assert main(["ls", "--run", *overrides]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith(f"mask      {key[:16]}  in cache") and "missing (the run builds it)" in out[3]
    assert out[-1] == f"1 of 3 cached steps in {Path(tmp_path / 'cache')}"


def test_ls_run_says_why_a_step_is_not_cached(tmp_path, capsys):
    (tmp_path / "cache").mkdir()
    assert main(["ls", "--run", *RUN, "reuse.enabled=false", f"paths.cache_dir={tmp_path / 'cache'}"]) == 0
    out = capsys.readouterr().out
    assert "not cached: no (reuse.enabled=false)" in out and "0 of 0 cached steps" in out
