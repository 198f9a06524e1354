"""Benchmark settings fail in one line before any model is loaded (the launcher's preflight and
``python -m ftlab.evaluate``)."""

from __future__ import annotations

import pytest

from ftlab.core.errors import FtlabError
from ftlab.evaluate import main
from ftlab.preflight.launch import preflight
from real_task_files import arc_rows, gsm8k_rows, piqa_rows, write_jsonl


def _refused(overrides: list[str]) -> str:
    with pytest.raises(FtlabError) as err:
        preflight(overrides, multirun=False)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_run_preflight_refuses_bad_benchmarks(tmp_path):
    piqa = write_jsonl(tmp_path / "valid.jsonl", piqa_rows(4))
    out = f"hydra.run.dir={tmp_path / 'run'}"
    msg = _refused([out, "eval.benchmarks=[piqa,arc_easyy]", f"eval.data.piqa={piqa}"])
    assert "'arc_easyy' is not a task lm-eval" in msg and "arc_easy" in msg
    assert "eval.data.arc_easy is not set" in _refused([out, "eval.benchmarks=[arc_easy]"])
    val = write_jsonl(tmp_path / "validation.jsonl", arc_rows(3))
    assert "scores its 'test' split" in _refused([out, "eval.benchmarks=[arc_easy]", f"eval.data.arc_easy={{validation:{val}}}"])
    assert "eval.suite='commonsense9'" in _refused([out, "eval.suite=commonsense9"])
    assert not (tmp_path / "run").exists()
    test, train = write_jsonl(tmp_path / "t.jsonl", gsm8k_rows(3)), write_jsonl(tmp_path / "tr.jsonl", gsm8k_rows(6))
    msg = _refused([out, "eval.benchmarks=[gsm8k]", f"eval.data.gsm8k={{test:{test},train:{train}}}"])
    assert "eval.max_gen_toks=256 leaves no room" in msg and "window of 256 tokens" in msg
    # the budget fits, the 5-shot prompts (~745 byte tokens) do not: lm-eval would cut their shots
    msg = _refused([out, "eval.benchmarks=[gsm8k]", f"eval.data.gsm8k={{test:{test},train:{train}}}",
                    "eval.max_gen_toks=32"])
    assert "gsm8k (5-shot) does not fit the model's window of 256 tokens" in msg
    assert "+ eval.max_gen_toks=32 generated" in msg and "set eval.num_fewshot below 5" in msg
    assert not (tmp_path / "run").exists()
    cfgs = preflight([out, "eval.benchmarks=[gsm8k]", f"eval.data.gsm8k={{test:{test},train:{train}}}",
                      "eval.max_gen_toks=32", "eval.num_fewshot=1", "train.max_steps=1"], multirun=False)
    assert cfgs[0].eval.max_gen_toks == 32


def test_run_preflight_measures_its_own_tasks_split(tmp_path):
    """task=gsm8k: the prompts of the run's own seeded test split with shots from its train split."""
    data = write_jsonl(tmp_path / "gsm8k.jsonl", gsm8k_rows(40, seed=1))
    run = [f"hydra.run.dir={tmp_path / 'run'}", "task=gsm8k", f"task.path={data}", "task.max_new_tokens=32"]
    msg = _refused(run)
    assert "task.path: gsm8k (5-shot) does not fit the model's window of 256" in msg
    assert "set task.options.num_fewshot below 5" in msg and not (tmp_path / "run").exists()
    (cfg,) = preflight([*run, "task.options.num_fewshot=1"], multirun=False)
    assert cfg.task.options.num_fewshot == 1


def test_suites_are_yaml_lists(tmp_path):
    (cfg,) = preflight([f"hydra.run.dir={tmp_path / 'r'}"], multirun=False)
    assert list(cfg.eval.suites.commonsense8) == ["boolq", "piqa", "social_iqa", "hellaswag", "winogrande",
                                                  "arc_easy", "arc_challenge", "openbookqa"]
    assert "gsm8k" in cfg.eval.suites.math


def test_evaluate_refuses_a_generation_budget_the_window_cannot_hold(tmp_path, capsys):
    """The issue's ``python -m ftlab.evaluate RUN/model task=gsm8k ...`` on a 256-position model:
    one line before the model loads, instead of lm-eval's assertion."""
    from conftest import compose
    from ftlab.models import build_model, build_tokenizer

    cfg = compose("model=tiny_llama").model
    tok = build_tokenizer(cfg)
    build_model(cfg, tok, seed=0).save_pretrained(str(tmp_path / "model"))
    test, train = write_jsonl(tmp_path / "test.jsonl", gsm8k_rows(3)), write_jsonl(tmp_path / "tr.jsonl", gsm8k_rows(6))
    capsys.readouterr()  # the save's progress bar
    args = [str(tmp_path / "model"), "task=gsm8k", f"task.path={test}", f"task.options.fewshot_path={train}"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "task.max_new_tokens=256 leaves no room" in err and "window of 256" in err
    assert not (tmp_path / "model" / "eval.json").exists()
    # a budget that fits, a 5-shot context that does not: one line naming the shots' key
    assert main([*args, "task.max_new_tokens=32"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "gsm8k (5-shot) does not fit the model's window of 256" in err
    assert "set task.options.num_fewshot below 5" in err
    assert not (tmp_path / "model" / "eval.json").exists()
