"""The plan of steps is computed once per run: the composition checks compute it, the run takes
it; and one ``python -m ftlab`` run composes its config once on ftlab's side and plans once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftlab.preflight.compose import compose_config
from ftlab.reuse import handover
from ftlab.reuse import steps as S

ROOT = Path(__file__).resolve().parents[2]
FAST = ["task.num_examples=240", "train.max_steps=2", "train.batch_size=8", "eval.enabled=false",
        "sparsity=unstructured"]


@pytest.fixture
def plans(monkeypatch) -> list[dict]:
    """Every plan computed (run_steps calls model_step once per plan)."""
    seen: list[dict] = []
    model_step = S.model_step

    def counted(c):
        seen.append(c)
        return model_step(c)

    monkeypatch.setattr(S, "model_step", counted)
    return seen


def test_the_run_takes_the_plan_the_checks_made_for_its_config_once(plans):
    c = S.as_plain(compose_config(["sparsity=unstructured"]))
    other = S.as_plain(compose_config(["sparsity=nm"]))
    checked = handover.plan_for_checks(c)
    assert handover.plan_for_run(dict(c)) is checked and len(plans) == 1
    assert handover.plan_for_run(c) is not checked and len(plans) == 2  # taken: the next run plans anew
    handover.plan_for_checks(c)
    assert handover.plan_for_run(other).mask.kind == "mask" and len(plans) == 4  # another config: its own
    assert handover.plan_for_run(c) is not checked and len(plans) == 5  # and the slot was dropped


#: One CLI run in a fresh process (Hydra sets up logging and argv for the whole process), counting
#: ftlab's compositions and the plans computed, printed as the last line.
_COUNTED_RUN = """
import json, sys
import ftlab.preflight.compose as compose_module
from ftlab.reuse import steps as S
counts = {"compositions": 0, "plans": 0}
compose, model_step = compose_module.compose, S.model_step
def counted_compose(*a, **k):
    counts["compositions"] += 1
    return compose(*a, **k)
def counted_plan(c):
    counts["plans"] += 1
    return model_step(c)
compose_module.compose, S.model_step = counted_compose, counted_plan
from ftlab.__main__ import main
main(sys.argv[1:])
print(json.dumps(counts))
"""


@pytest.mark.slow
def test_one_cli_run_composes_once_and_plans_once(tmp_path: Path):
    """Hydra's ``@hydra.main`` composes the job's config itself (twice, in Hydra 1.3: its mode, then
    the job): those compositions are Hydra's and inherent. ftlab composes once, before Hydra, to
    check the run; the plan those checks compute is the run's plan."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "FTLAB_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", _COUNTED_RUN, *FAST, f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "mask.json").is_file()  # the run ran, with its mask step
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"compositions": 1, "plans": 1}
