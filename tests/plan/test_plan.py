"""``python -m ftlab.plan``: run table, names, stage tree, time/memory estimates, bad input."""

from __future__ import annotations

import json

import pytest

from conftest import cli
from ftlab.adapters.params import model_facts, trainable_params
from ftlab.core.errors import ConfigError
from ftlab.plan.estimate import RunFacts, estimate_memory, estimate_time, fit_line
from ftlab.plan.naming import fmt_value, swept_keys, tag
from ftlab.plan.options import PlanOptions, parse_planner_args
from ftlab.plan.planner import make_plan
from ftlab.plan.priors import Prior
from ftlab.plan.stages import reuse_numbers, stage_tree
from ftlab.preflight.compose import compose_run

TINY = ["task.num_examples=80", "task.eval_examples=4", "train.max_steps=10", "train.batch_size=4",
        "train.log_every_n_steps=5", "train.save_merged_model=false", "train.save_adapter=false",
        "train.save_epoch_checkpoints=false", "eval.generate=false", "task.max_length=32"]
SWEEP = ["model=tiny_llama,tiny_mistral", "adapter.r=4,8", "base.enabled=true", "base.steps=20"]


def test_2x2_sweep_with_controls_table_names_and_reuse(tmp_path):
    out = tmp_path / "plan"
    proc = cli("ftlab.plan", *TINY, *SWEEP, "plan.controls=true", f"plan.dir={out}", f"plan.prior_dirs=[{tmp_path}/none]")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads((out / "plan.json").read_text())
    names = [r["name"] for r in plan["runs"]]
    assert names == ["tiny_llama-lora-r4", "tiny_llama-lora-r8", "tiny_mistral-lora-r4", "tiny_mistral-lora-r8",
                     "tiny_llama-control", "tiny_mistral-control"]
    assert [r["control"] for r in plan["runs"]] == [False] * 4 + [True] * 2
    assert plan["runs"][4]["overrides"][-2:] == ["adapter=none", "sparsity=none"]
    assert "adapter.r=4" not in plan["runs"][4]["overrides"]
    # stdout and plan.md carry the same Markdown table, one row per run
    md = (out / "plan.md").read_text()
    assert md in proc.stdout
    assert all(f"`{n}`" in md for n in names) and md.count("| `tiny_") == 6
    # reuse: each base model (20 it) is built once for its 2 runs + control; 4 fine-tunings of 10 it
    reuse = plan["reuse"]
    assert reuse["naive_iters"] == 4 * (20 + 10) + 2 * 20
    assert reuse["planned_iters"] == 2 * 20 + 4 * 10
    assert reuse["base_models"] == 2 and reuse["shared_base_models"] == 2
    bases = [n for n in plan["stage_tree"] if n["kind"] == "base"]
    assert sorted(len(n["runs"]) for n in bases) == [3, 3]
    assert sum(n["iters"] * len(n["runs"]) for n in plan["stage_tree"]) == reuse["naive_iters"]
    assert sum(n["iters"] for n in plan["stage_tree"]) == reuse["planned_iters"]
    # no prior runs: every estimate is marked as having no basis
    assert all(r["time"]["method"] == "none" and not r["time"]["has_basis"] for r in plan["runs"])
    assert md.count("**no basis**") == 6 and plan["totals"]["runs_without_basis"] == names


def _stages(*stages: tuple[int, float]) -> str:
    return "schedule.stages=[" + ",".join(f"{{iters:{i},lr:{lr}}}" for i, lr in stages) + "]"


def test_stage_tree_merges_identical_history_only():
    common = ["schedule=stages"]
    a = compose_run([*common, _stages((30, 1e-3), (20, 1e-4))])
    b = compose_run([*common, _stages((30, 1e-3), (20, 3e-4))])
    c = compose_run([*common, _stages((30, 2e-3), (20, 1e-4))])  # different first stage: nothing shared
    d = compose_run([*common, _stages((30, 1e-3), (20, 1e-4)), "train.log_every_n_steps=7", "eval.generate=false"])
    tree = stage_tree([a, b, c, d])
    r = reuse_numbers(tree)
    assert tree.trials[0] == tree.trials[3]  # logging/eval keys do not split a stage
    assert tree.trials[0][1] == tree.trials[1][1] and tree.trials[0][2] != tree.trials[1][2]
    assert tree.trials[2][1] != tree.trials[0][1]
    assert r["naive_iters"] == 4 * 50 and r["planned_iters"] == 30 + 20 + 20 + 50
    # a seed changes the base model (init) and so everything after it
    e = compose_run([*common, _stages((30, 1e-3), (20, 1e-4)), "seed=7"])
    assert stage_tree([a, e]).trials[0][0] != stage_tree([a, e]).trials[1][0]
    # reuse.enabled=false: the trial shares nothing
    f = compose_run([*common, _stages((30, 1e-3), (20, 1e-4)), "reuse.enabled=false"])
    assert reuse_numbers(stage_tree([a, f]))["planned_iters"] == 100
    # the keys are the reuse cache's own step keys
    from ftlab.reuse.steps import as_plain, run_steps

    assert tree.trials[0][1:] == [st.key for st in run_steps(as_plain(a)).stages]
    # a plain (non-stage) schedule is not a cached step: identical trials still train twice
    g = compose_run([])
    assert reuse_numbers(stage_tree([g, g]))["planned_iters"] == 2 * g.train.max_steps


@pytest.mark.slow
def test_planned_sharing_matches_what_the_cache_does(tmp_path):
    """Two trials sharing stage 1: the plan's tree says which stages the second trial gets from the
    cache; running both (cache in tmp) must show exactly those hits, under the same keys."""
    from ftlab.recipe.run import run

    common = [*TINY, "schedule=stages", f"paths.cache_dir={tmp_path}/cache"]
    jobs = [[*common, _stages((4, 1e-3), (3, 1e-4))], [*common, _stages((4, 1e-3), (3, 3e-4))]]
    sweep = "schedule.stages=[{iters:4,lr:1e-3},{iters:3,lr:1e-4}],[{iters:4,lr:1e-3},{iters:3,lr:3e-4}]"
    plan = make_plan([*common, sweep], PlanOptions(prior_dirs=[]))
    assert plan.reuse["naive_iters"] == 14 and plan.reuse["planned_iters"] == 10
    for i, job in enumerate(jobs):
        run(compose_run(job), run_dir=tmp_path / str(i))
    records = [json.loads((tmp_path / str(i) / "reuse_record.json").read_text()) for i in range(2)]
    for i, (r, rec) in enumerate(zip(plan.runs, records)):
        stage_keys = [k for k in r.chain if plan.tree.nodes[k].kind == "train"]
        assert [st["key"] for st in rec["stages"]] == stage_keys
        # a stage is a hit exactly when an earlier trial of the plan already had it
        earlier = {k for other in plan.runs[:i] for k in other.chain}
        assert [st["cache_hit"] for st in rec["stages"]] == [k in earlier for k in stage_keys]
    assert [st["cache_hit"] for st in records[1]["stages"]] == [True, False]


def test_meta_device_counts_match_the_built_adapters():
    from ftlab.adapters.registry import get_adapter
    from ftlab.models import build_model, build_tokenizer

    for adapter in ("lora", "dora", "full"):
        cfg = compose_run([f"adapter={adapter}"] + (["adapter.r=4"] if adapter != "full" else []))
        tok = build_tokenizer(cfg.model)
        adapted = get_adapter(adapter).build(build_model(cfg.model, tok, seed=0), cfg.adapter, cfg)
        facts = model_facts(cfg.model)
        assert trainable_params(facts, cfg) == adapted.trainable_params(), adapter
        base = sum(p.numel() for n, p in adapted.model.named_parameters() if "lora_" not in n)
        assert facts.total == base


def _prior(bs: int, peak: float, time_s: float = 10.0, steps: int = 100, **kw) -> Prior:
    fields = dict(path=f"prior-bs{bs}", model="m", hardware="gpu", accelerator="gpu", devices=1,
                  precision="bf16-mixed", batch_size=bs, accumulate=1, adapter="lora", task="t", max_length=64,
                  steps=steps, train_time_s=time_s, tokens_per_sample=50.0, total_params=1_000_000,
                  peak_memory_mb=peak)
    fields.update(kw)
    return Prior(**fields)


FACTS = RunFacts(model="m", hardware="gpu", accelerator="gpu", devices=1, precision="bf16-mixed", batch_size=8,
                 accumulate=1, adapter="lora", task="t", max_length=64, total_params=1_000_000)


def test_time_estimate_exact_scaled_and_none():
    exact = estimate_time(FACTS, [_prior(8, 1.0, time_s=20.0), _prior(4, 1.0)])
    assert exact.method == "exact" and exact.sec_per_step == pytest.approx(0.2) and exact.basis == ["prior-bs8"]
    # bs 4 -> 8 doubles tokens per step; a model twice as large doubles again
    scaled = estimate_time(FACTS.__class__(**{**FACTS.__dict__, "total_params": 2_000_000}), [_prior(4, 1.0)])
    assert scaled.method == "scaled" and scaled.sec_per_step == pytest.approx(0.1 * 2 * 2)
    assert scaled.basis == ["prior-bs4"]
    # the same setup at two other batch sizes: seconds/step = overhead + cost x samples
    fit = estimate_time(FACTS, [_prior(2, 1.0, time_s=20.0), _prior(4, 1.0, time_s=30.0)])
    assert fit.method == "fit" and fit.sec_per_step == pytest.approx(0.1 + 0.05 * 8)
    none = estimate_time(FACTS, [_prior(8, 1.0, accelerator="cpu", hardware="cpu")])
    assert none.method == "none" and none.sec_per_step is None and not none.has_basis


def test_memory_fit_and_batch_size_recommendation():
    a, b = fit_line([(2, 1000.0), (4, 1400.0), (8, 2200.0)])
    assert (a, b) == (pytest.approx(600.0), pytest.approx(200.0))
    priors = [_prior(2, 1000.0), _prior(4, 1400.0)]
    mem = estimate_memory(FACTS, priors, static_mb=300.0, analytic_per_sample_mb=1.0, device_mb=10240.0,
                          safety_factor=0.65)
    assert mem.method == "fit" and mem.peak_mb == pytest.approx(600 + 200 * 8)
    assert mem.max_batch_size == int((0.65 * 10240 - 600) // 200) and mem.fits
    one = estimate_memory(FACTS, priors[:1], 300.0, 1.0, 10240.0, 0.7)
    assert one.method == "one-point" and one.per_sample_mb == pytest.approx((1000 - 300) / 2)
    none = estimate_memory(FACTS, [], 300.0, 5.0, None, 0.65)
    assert none.method == "analytic" and none.peak_mb == pytest.approx(300 + 5 * 8) and none.max_batch_size is None


@pytest.mark.slow
def test_estimate_for_a_run_identical_to_a_finished_prior(tmp_path):
    from ftlab.recipe.run import run

    run(compose_run(TINY), run_dir=tmp_path / "priors" / "0")
    measured = json.loads((tmp_path / "priors" / "0" / "metrics.json").read_text())["train_time_s"]
    plan = make_plan(TINY, PlanOptions(prior_dirs=[str(tmp_path / "priors")]))
    (r,) = plan.runs
    assert r.time.method == "exact" and r.time.basis == [str(tmp_path / "priors" / "0")]
    assert abs(r.seconds - measured) <= 0.2 * measured
    assert plan.totals["device_hours_naive"] == pytest.approx(r.seconds / 3600)
    # a larger batch on the same setup is scaled from it, and says so
    bigger = make_plan([*TINY, "train.batch_size=8"], PlanOptions(prior_dirs=[str(tmp_path / "priors")]))
    assert bigger.runs[0].time.method == "scaled" and bigger.runs[0].seconds == pytest.approx(2 * r.seconds)


def test_naming_helpers():
    assert swept_keys([["a=1", "b=2"], ["a=1", "b=3"]]) == ["b"]
    assert [fmt_value(v) for v in ("0.30", "3e-4", "8", "tiny/x")] == ["0.3", "0.0003", "8", "tiny_x"]
    assert tag("schedule.stages", "[{iters:100,lr:1e-3},{iters:50,lr:1e-4}]") == "100x0.001_50x0.0001"
    assert tag("sparsity.mode", "sparse_to_sparse") == "s2s" and tag("adapter.sparse_lambda", "0.30") == "l0.3"
    long = tag("task.options", "{" + "x" * 60 + "}")
    assert len(long) == len("options") + 32 and long != tag("task.options", "{" + "y" * 60 + "}")


def test_planner_options_fail_with_one_line():
    with pytest.raises(ConfigError, match=r"plan.safety_factor=1.5 is invalid"):
        parse_planner_args(["plan.safety_factor=1.5"])
    with pytest.raises(ConfigError, match=r"plan.contrls='<unknown key>'.*controls"):
        parse_planner_args(["plan.contrls=true"])


@pytest.mark.parametrize("bad,key,new_process", [("+experiment=no_such_experiment", "experiment", True),
                                                 ("adapter.rank=4", "adapter.rank", False)])
def test_bad_input_fails_like_a_run(tmp_path, bad, key, new_process, capsys):
    """The first case through a real ``python -m ftlab.plan``, the other through its ``main`` in this process."""
    from ftlab.core.errors import FtlabError
    from ftlab.plan.__main__ import main as plan_main
    from ftlab.preflight.launch import preflight

    out = tmp_path / "plan"
    if new_process:
        plan = cli("ftlab.plan", bad, f"plan.dir={out}")
        code, stdout, stderr = plan.returncode, plan.stdout, plan.stderr
    else:
        code = plan_main([bad, f"plan.dir={out}"])
        stdout, stderr = capsys.readouterr()
    with pytest.raises(FtlabError) as err:  # what `python -m ftlab` checks before launching
        preflight([bad], multirun=True)
    assert code == 2
    assert stderr.strip() == f"ftlab: error: {err.value}"
    assert stderr.startswith(f"ftlab: error: {key}") and len(stderr.strip().splitlines()) == 1
    assert not out.exists() and stdout == ""
