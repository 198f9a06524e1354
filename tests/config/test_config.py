"""Every config option composes; bad values stop at composition with one clear line."""

from __future__ import annotations

import pytest

from conftest import ROOT, cli, compose
from ftlab.core.errors import ConfigError, FtlabError

GROUPS = ["model", "adapter", "sparsity", "schedule", "hardware", "task", "logger"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes(group: str, option: str) -> None:
    """Composition against the schemas (real-data tasks are validated once given a file)."""
    from ftlab.preflight.compose import compose_config

    cfg = compose_config([f"{group}={option}"])
    assert cfg[group].name == option


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes(experiment: str) -> None:
    from ftlab.preflight.compose import compose_config

    cfg = compose_config([f"+experiment={experiment}"])
    assert cfg.name


def test_contract_options_exist() -> None:
    """The option names the README and experiments rely on (foundation subset)."""
    for group, required in {
        "model": ["tiny_llama", "tiny_mistral", "tiny_qwen2", "qwen2_5_4b", "llama3_8b", "mistral_7b", "mixtral_8x7b"],
        "adapter": ["lora", "dora", "full", "none"],
        "schedule": ["constant", "cosine", "linear", "stages"],
        "hardware": ["cpu", "gpu", "multi_gpu"],
        "task": ["capitalization", "arithmetic"],
        "logger": ["csv", "wandb"],
        "experiment": ["quickstart"],
    }.items():
        assert set(required) <= set(options(group)), group
    assert compose().model.name == "tiny_llama"


@pytest.mark.parametrize(
    "override,key",
    [
        ("adapter=lorax", "adapter"),
        ("model=gpt5", "model"),
        ("adapter.r=0", "adapter.r"),
        ("adapter.r=abc", "adapter.r"),
        ("adapter.alpha=0", "adapter.alpha"),
        ("adapter.dropout=1.0", "adapter.dropout"),
        ("adapter.dropout=-0.1", "adapter.dropout"),
        ("schedule.lr=0", "schedule.lr"),
        ("schedule.lr=-1e-3", "schedule.lr"),
        ("train.batch_size=0", "train.batch_size"),
        ("hardware.devices=0", "hardware.devices"),
        ("hardware.precision=8-bit", "hardware.precision"),
        ("task.path=/no/such/file.jsonl", "task.path"),
        ("adpter.r=4", "adpter"),
        ("adapter.sparse_lambda=0.1", "adapter.sparse_lambda"),
        ("logger.mode=sometimes", "logger.mode"),
    ],
)
def test_bad_values_name_the_key(override: str, key: str) -> None:
    extra = ["logger=wandb"] if override.startswith("logger.mode") else []
    with pytest.raises(FtlabError) as err:
        compose(*extra, override)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(key), message


def test_stage_list_errors() -> None:
    with pytest.raises(ConfigError, match=r"schedule.stages\[1\].iters"):
        compose("schedule=stages", "schedule.stages=[{iters:5,lr:1e-3},{iters:0,lr:1e-3}]")
    with pytest.raises(ConfigError, match=r"schedule.stages\[0\].lr"):
        compose("schedule=stages", "schedule.stages=[{iters:5,lr:0}]")
    with pytest.raises(ConfigError, match=r"schedule.stages"):
        compose("schedule=stages", "schedule.stages=[]")


@pytest.mark.parametrize(("args", "new_process"), [(["adapter=lorax"], True), (["adapter.r=0"], False),
                                                 (["--multirun", "adapter.dropout=0.1,1.5"], False)])
def test_cli_bad_input_one_line_exit_2(args: list[str], new_process: bool, tmp_path, refused_in_process) -> None:
    """The first case through a real ``python -m ftlab``, the others through its ``main`` in this process."""
    argv = [*args, f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/sweep"]
    if new_process:
        proc = cli("ftlab", *argv, timeout=120)
        code, stderr = proc.returncode, proc.stderr
    else:
        code, _, stderr = refused_in_process(*argv)
    assert code == 2, stderr
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ftlab: error: "), stderr
    # nothing was launched or written
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("preset,params_b", [("qwen2_5_3b", 3.09), ("qwen2_5_4b", 3.09), ("llama3_8b", 8.0), ("mistral_7b", 7.2),
                                              ("mixtral_8x7b", 46.7)])
def test_presets_build_on_meta(preset: str, params_b: float) -> None:
    from ftlab.adapters.targets import resolve_targets
    from ftlab.models import build_model, count_parameters
    from ftlab.models.build import linear_module_names
    from ftlab.models.structure import expert_parameters

    cfg = compose(f"model={preset}")
    model = build_model(cfg.model, device="meta")
    assert next(model.parameters()).device.type == "meta"
    assert count_parameters(model) / 1e9 == pytest.approx(params_b, rel=0.02)
    targets = resolve_targets(model, cfg.model.target_modules, "model.target_modules")
    experts = set(expert_parameters(model))  # fused MoE expert parameters are targets too
    assert targets and {t.rsplit(".", 1)[-1] for t in targets if t not in experts} <= set(linear_module_names(model))
    assert experts <= set(targets) and bool(experts) == (preset == "mixtral_8x7b")


def test_tiny_models_target_modules_exist() -> None:
    from ftlab.adapters.targets import resolve_targets
    from ftlab.models import build_model, build_tokenizer
    from ftlab.models.build import linear_module_names

    for name in ("tiny_llama", "tiny_mistral", "tiny_qwen2"):
        cfg = compose(f"model={name}")
        model = build_model(cfg.model, build_tokenizer(cfg.model), seed=0)
        targets = resolve_targets(model, cfg.model.target_modules, "model.target_modules")
        assert {t.rsplit(".", 1)[-1] for t in targets} == set(linear_module_names(model)) - {"lm_head"}
        assert model.config.vocab_size == 259  # ByT5 byte vocabulary: 3 specials + 256 bytes


def test_cli_overrides_before_and_after_multirun(tmp_path) -> None:
    """The README's form ``python -m ftlab +experiment=NAME --multirun k=v1,v2`` (flag in the middle)."""
    proc = cli("ftlab", "adapter=none", "--multirun", "seed=1,2", "eval.generate=false", "task.num_examples=60",
               f"hydra.sweep.dir={tmp_path}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir() if (p / "metrics.json").is_file()) == ["0", "1"]


def test_suite_runs_single_threaded() -> None:
    """conftest sets OMP_NUM_THREADS=1 before torch starts (see the comment there)."""
    import torch

    assert torch.get_num_threads() == 1
