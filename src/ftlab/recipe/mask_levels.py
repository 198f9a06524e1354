"""The masks a training run with the same overrides would compute (same groups, same base model, same
calibration batches), at one or several levels, written under the run dir that ``hydra.run.dir``
names. What ``python -m ftlab.masks`` runs; it sits with the recipe because it rebuilds the run's
base model (:func:`ftlab.recipe.run.prepare_model`). The files it writes are listed in the
command's help."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from safetensors.torch import save_file

from ftlab.core.errors import ConfigError
from ftlab.core.io import CsvAppender
from ftlab.preflight.compose import compose_config, compose_run
from ftlab.sparsity import stats
from ftlab.sparsity.check import check_targets
from ftlab.sparsity.compute import compute_pruned_for_levels, importance_of, layouts_for, spec_of
from ftlab.sparsity.io import save_masks
from ftlab.sparsity.methods import all_methods, get_method
from ftlab.sparsity.selection import select_modules, transposed_parameters

CONFIG_NAME = "masks"
SUMMARY_COLUMNS = ["level", "target", "overall_sparsity", "mask"]


def level_dir(target: float) -> str:
    return f"level-{target:.2f}"


def levels_of(sparsity_cfg: Any) -> list[float]:
    if get_method(sparsity_cfg.method).needs_n_m:
        return [sparsity_cfg.level]  # n/m fixes the target
    return [float(x) for x in (sparsity_cfg.levels or [sparsity_cfg.level])]


def write_level(pruned, cfg: Any, level: float, directory: Path, fmt: str, model_name: str, layouts,
                transposed: set[str] | frozenset[str] = frozenset()) -> dict:
    sp = cfg.sparsity
    spec = spec_of(sp, level)
    masks = pruned.masks
    meta = stats.describe(masks, model=model_name, method=sp.method, importance=importance_of(sp), target=spec.target,
                    spec=spec, layouts=layouts, levels=pruned.levels,
                    extra={"modules": None if sp.modules is None else list(sp.modules), "seed": cfg.seed if sp.seed is None else sp.seed,
                           "calibration": OmegaConf.to_container(sp.calibration)}, transposed=transposed)
    check_targets(masks, meta, "sparsity.level", level)  # a mask that misses its target is not written
    directory.mkdir(parents=True, exist_ok=True)
    path = save_masks(masks, directory / f"mask.{fmt}", meta)
    if pruned.weights:
        save_file({n: w.contiguous() for n, w in pruned.weights.items()}, str(directory / "weights.safetensors"))
    stats.write_layer_table(masks, pruned.levels or spec.target, directory / "layer_sparsity.csv", transposed)
    stats.plot_histogram(masks, spec.target, directory / "sparsity.png",
                   title=f"{model_name}: {sp.method} / {importance_of(sp)} @ {spec.target:.2f}", transposed=transposed)
    return {"level": level, "target": f"{spec.target:.6f}", "overall_sparsity": f"{meta['overall_sparsity']:.6f}",
            "mask": str(Path(directory.name) / path.name)}


def make_masks(overrides: list[str], fmt: str = "safetensors") -> Path:
    """Compose, validate, compute and write; returns the output directory."""
    from ftlab.recipe.run import prepare_model  # Lightning: not for --help or a bad option

    cfg = compose_run(overrides, config_name=CONFIG_NAME)
    out_dir = Path(compose_config(overrides, with_hydra=True, config_name=CONFIG_NAME).hydra.run.dir)
    sp = cfg.sparsity
    if sp.method == "none":
        raise ConfigError("sparsity", "none", f"a pruning method: {', '.join(m.name for m in all_methods())}")
    if sp.mask_path:
        raise ConfigError("sparsity.mask_path", sp.mask_path, "null (this command computes masks)")
    levels = levels_of(sp)
    tokenizer, model = prepare_model(cfg)
    layouts = layouts_for(model, select_modules(model, sp.modules), spec_of(sp))
    all_masks = compute_pruned_for_levels(cfg, model, tokenizer, levels)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-masks-", dir=out_dir.parent))
    try:
        transposed = set(transposed_parameters(model))
        rows = [write_level(masks, cfg, level, staging / level_dir(spec_of(sp, level).target), fmt,
                            cfg.model.name, layouts, transposed)
                for level, masks in zip(levels, all_masks)]
        summary = CsvAppender(staging / "summary.csv", SUMMARY_COLUMNS)
        summary.open()
        for row in rows:
            summary.append(row)
        (staging / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        out_dir.mkdir(parents=True, exist_ok=True)
        for item in sorted(staging.iterdir()):
            target = out_dir / item.name
            if target.is_dir():
                shutil.rmtree(target)
            item.replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir
