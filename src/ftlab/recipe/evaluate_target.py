"""Scoring a finished run or a model directory with lm-evaluation-harness exactly as a run's final
numbers are scored: what ``python -m ftlab.evaluate`` runs (its help says which weights and data are
scored). It sits with the recipe because a run's adapter or control is scored on the run's base
model rebuilt from its config (:func:`ftlab.recipe.run.prepare_model`)."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from ftlab.adapters.registry import get_adapter
from ftlab.core.errors import ConfigError, FtlabError
from ftlab.data.tasks import harness_task, harness_task_names, validate_real_task
from ftlab.harness.benchmark_checks import asks_benchmarks
from ftlab.harness.checks import check_benchmarks, model_window
from ftlab.harness.data import run_split_files, run_task_benchmark, whole_file_files
from ftlab.harness.run_scores import run_window, score_run, scores_of
from ftlab.harness.selection import configured_benchmarks
from ftlab.models import build_tokenizer
from ftlab.preflight.compose import compose_config, compose_run
from ftlab.sparsity.pipeline import prepare_masks

WEIGHTS = ("auto", "merged", "adapter", "base")


def _split_overrides(overrides: list[str]) -> tuple[str | None, list[str]]:
    """(task=NAME, the task.* and eval.* overrides); anything else is refused."""
    name, rest = None, []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError("override", item, "KEY=VALUE")
        if key == "task":
            name = value
        elif key.startswith(("task.", "eval.", "+eval.")):
            rest.append(item)
        else:
            raise ConfigError(key, value, "task=NAME, task.* or eval.* keys (the model comes from the directory)")
    return name, rest


def apply_overrides(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """Command-line overrides onto a run's saved config, parsed by Hydra's own override grammar
    (``eval.data.arc_easy={test:/x.jsonl}`` reads as it does for ``python -m ftlab``)."""
    for override in OverridesParser.create().parse_overrides(overrides):
        OmegaConf.update(cfg, override.key_or_group, override.value(), merge=False, force_add=True)
    return cfg


def run_config(run_dir: Path, overrides: list[str]) -> DictConfig:
    """The run's own config with the command line's task overrides."""
    cfg = OmegaConf.load(run_dir / "config.yaml")
    name, rest = _split_overrides(overrides)
    if name is not None and name != cfg.task.name:  # another task: its defaults, then the overrides
        cfg.task = compose_config([f"task={name}", *[o for o in rest if o.startswith("task.")]]).task
        rest = [o for o in rest if not o.startswith("task.")]
    return apply_overrides(cfg, rest)


def _tokenizer(directory: Path, cfg: DictConfig):
    """The directory's own tokenizer when it has one, else the run's (byte tokenizer: no files)."""
    if any((directory / f).is_file() for f in ("tokenizer_config.json", "tokenizer.json")):
        return AutoTokenizer.from_pretrained(str(directory))
    return build_tokenizer(cfg.model)


def _load_hf(directory: Path) -> torch.nn.Module:
    try:
        return AutoModelForCausalLM.from_pretrained(str(directory)).eval()
    except (OSError, ValueError, KeyError) as err:  # transformers' ways of refusing a directory
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FtlabError(f"{directory}: not a loadable HF causal LM ({first})") from err


def _peft_onto(base: torch.nn.Module, adapter_dir: Path) -> torch.nn.Module:
    return PeftModel.from_pretrained(base, str(adapter_dir)).eval()


def run_model(run_dir: Path, cfg: DictConfig, weights: str) -> tuple[torch.nn.Module, Any, str]:
    """(model, tokenizer, which weights) of a run dir."""
    merged, adapter = run_dir / "model", run_dir / "adapter"
    if weights == "auto":
        weights = ("merged" if (merged / "config.json").is_file()
                   else "adapter" if (adapter / "adapter_config.json").is_file()
                   else "base" if not get_adapter(cfg.adapter.name).trains else None)
        if weights is None:
            raise FtlabError(f"{run_dir}: no exported weights (model/ or adapter/); the run needs "
                             f"train.save_merged_model=true or train.save_adapter=true")
    if weights == "merged":
        if not (merged / "config.json").is_file():
            raise ConfigError("--weights", weights, f"a run with an exported model ({merged} is missing)")
        return _load_hf(merged), _tokenizer(merged, cfg), weights
    # adapter / base: the run's base model (and sparsity masks) rebuilt from its config
    from ftlab.recipe.run import prepare_model  # Lightning + peft: only when the base is rebuilt

    tokenizer, base = prepare_model(cfg)
    prepare_masks(cfg, base, tokenizer)
    if weights == "base":
        return base.eval(), tokenizer, weights
    if not (adapter / "adapter_config.json").is_file():
        raise ConfigError("--weights", weights, f"a run with an exported peft adapter ({adapter} is missing)")
    return _peft_onto(base, adapter), tokenizer, weights


def dir_model(model_dir: Path, cfg: DictConfig) -> tuple[torch.nn.Module, Any, str]:
    """(model, tokenizer, kind) of an HF model dir or a peft adapter dir."""
    if (model_dir / "adapter_config.json").is_file():
        base_path = json.loads((model_dir / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base_path or not (Path(base_path) / "config.json").is_file():
            raise FtlabError(f"{model_dir / 'adapter_config.json'}: base_model_name_or_path={base_path!r} is not a "
                             f"local model dir (evaluate the run dir the adapter came from instead)")
        base = _load_hf(Path(base_path))
        return _peft_onto(base, model_dir), _tokenizer(Path(base_path), cfg), "adapter"
    if (model_dir / "config.json").is_file():
        return _load_hf(model_dir), _tokenizer(model_dir, cfg), "merged"
    raise FtlabError(f"{model_dir}: not a run dir (config.yaml), an HF model dir (config.json) "
                     f"or a peft adapter dir (adapter_config.json)")


def target_window(target: Path, cfg: DictConfig, is_run: bool, weights: str) -> int:
    """The evaluated model's window, read from config files only (no weights loaded)."""
    if not is_run:
        if (target / "adapter_config.json").is_file():
            base = json.loads((target / "adapter_config.json").read_text()).get("base_model_name_or_path")
            if base and (Path(base) / "config.json").is_file():
                return model_window(Path(base))
        if (target / "config.json").is_file():
            return model_window(target)
    elif weights in ("auto", "merged") and (target / "model" / "config.json").is_file():
        return model_window(target / "model")
    return run_window(cfg.model)


def target_tokenizer(target: Path, cfg: DictConfig, is_run: bool, weights: str):
    """The tokenizer the evaluated model will use, loaded from files only (no weights)."""
    if not is_run:
        if (target / "adapter_config.json").is_file():
            base = json.loads((target / "adapter_config.json").read_text()).get("base_model_name_or_path")
            if base and (Path(base) / "config.json").is_file():
                return _tokenizer(Path(base), cfg)
        return _tokenizer(target, cfg)
    if weights in ("auto", "merged") and (target / "model" / "config.json").is_file():
        return _tokenizer(target / "model", cfg)
    return build_tokenizer(cfg.model)


def load_target(target: Path, cfg: DictConfig, is_run: bool, weights: str, device: str | None):
    """(model on its device, tokenizer, which weights)."""
    model, tokenizer, weights = run_model(target, cfg, weights) if is_run else dir_model(target, cfg)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device), tokenizer, weights


def evaluate_benchmarks(args: argparse.Namespace, target: Path, cfg: DictConfig, is_run: bool) -> dict[str, Any]:
    """eval.suite / eval.benchmarks on the target's weights, as a run scores them after training."""
    benchmarks = configured_benchmarks(cfg)  # names and files first: a typo fails before anything loads
    limit = cfg.eval.get("limit")
    check_benchmarks([(b, "eval.max_gen_toks") for b in benchmarks], target_window(target, cfg, is_run, args.weights),
                     target_tokenizer(target, cfg, is_run, args.weights), limit)
    model, tokenizer, weights = load_target(target, cfg, is_run, args.weights, args.device)
    scores = score_run(model, tokenizer, cfg, own_task=False)
    return {"target": str(target.resolve()), "kind": "run" if is_run else "model", "weights": weights,
            "limit": limit, **scores}


def evaluate_target(args: argparse.Namespace) -> dict[str, Any]:
    target: Path = args.target
    if not target.is_dir():
        raise ConfigError("target", str(target), "an existing run dir or model dir")
    is_run = (target / "config.yaml").is_file()
    name, rest = _split_overrides(args.overrides)
    if is_run:
        cfg = run_config(target, args.overrides)
        whole_file = any(o.startswith("task.path=") for o in args.overrides)
    else:
        if name is None and not any(o.startswith(("eval.suite=", "eval.benchmarks=")) for o in rest):
            raise ConfigError("task", None, f"task=NAME for a model dir, one of {harness_task_names()} "
                                            f"(or eval.suite=NAME / eval.benchmarks=[...])")
        cfg = compose_run([*([f"task={name}"] if name else []), *rest])
        whole_file = True
    if args.batch_size is not None:
        cfg.train.eval_batch_size = args.batch_size
    if name is None and asks_benchmarks(cfg) and any(o.startswith(("eval.", "+eval.")) for o in rest):
        return evaluate_benchmarks(args, target, cfg, is_run)
    task = harness_task(cfg.task.name)
    if task is None:
        raise ConfigError("task", cfg.task.name, f"one of {harness_task_names()} (the benchmarks lm-eval scores)")
    validate_real_task(cfg)
    with tempfile.TemporaryDirectory(prefix="ftlab-evaluate-") as tmp:
        # the data and the settings first: a bad file or budget fails before any model is loaded
        files = (whole_file_files(cfg.task, Path(tmp)) if whole_file
                 else run_split_files(cfg.task, cfg.seed, Path(tmp)))
        bench = run_task_benchmark(cfg, files)
        check_benchmarks([(bench, "task.max_new_tokens")], target_window(target, cfg, is_run, args.weights),
                         target_tokenizer(target, cfg, is_run, args.weights))
        model, tokenizer, weights = load_target(target, cfg, is_run, args.weights, args.device)
        events: list[dict[str, Any]] = []
        score = scores_of(model, tokenizer, cfg, [bench], None, events)[bench.name]
    return {"target": str(target.resolve()), "kind": "run" if is_run else "model", "weights": weights,
            "task": cfg.task.name, "data": {"file": str(Path(cfg.task.path).resolve()),
                                            "rows": "all" if whole_file else "the run's test split",
                                            "seed": None if whole_file else cfg.seed},
            task.harness.headline_key: score.headline["value"], "eval_benchmark": score.summary(),
            **({"eval_cache": events} if events else {})}


def write_eval(path: Path, data: dict[str, Any]) -> None:
    """Whole or not at all: a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def benchmark_lines(result: dict[str, Any]) -> list[str]:
    """One line per benchmark (headline ± stderr, n, shots), then the suite's average."""
    lines = [f"{name}: {b['headline']}={b['value']:.4f}±{b['stderr'] or 0:.4f} ({b['n']} examples, "
             f"{b['n_shot']}-shot, {b['harness']})" for name, b in result["benchmarks"].items()]
    if "benchmark_average" in result:
        lines.append(f"{result['benchmark_suite']} average (unweighted mean of {len(result['benchmarks'])} tasks): "
                     f"{result['benchmark_average']:.4f}")
    return lines


def result_lines(result: dict[str, Any], out: Path) -> list[str]:
    """What the command prints: one line per benchmark (or the task's line with every variant),
    then where ``eval.json`` went."""
    if "benchmarks" in result:
        return [*benchmark_lines(result), f"wrote {out}"]
    key = next(k for k in ("eval_accuracy", "eval_exact_match") if k in result)
    bench = result["eval_benchmark"]
    parts = [f"{r['variant']}={r['value']:.4f}±{r['stderr'] or 0:.4f}" for r in bench["metrics"]]
    return [f"{result['task']} ({bench['metrics'][0]['n']} examples, {bench['metrics'][0]['n_shot']}-shot, "
            f"{bench['harness']}): {key}={result[key]:.4f} [{bench['headline']}]; {', '.join(parts)}",
            f"wrote {out}"]
