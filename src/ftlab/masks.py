"""``python -m ftlab.masks model=... sparsity=... 'sparsity.levels=[0.5,0.7,0.9]' [--format=pt]``

Computes the masks a training run with the same overrides would compute (same groups, same base
model, same calibration batches), and writes per level, under ``hydra.run.dir``:

    level-0.50/mask.safetensors     the masks (``--format=pt``: mask.pt)
    level-0.50/mask.json            sidecar: model, method, importance, level, per-layer sparsity
    level-0.50/layer_sparsity.csv   per-layer table (target = the layer's allocated level with OWL)
    level-0.50/weights.safetensors  importance=sparsegpt only: the reconstructed weights of the
                                    pruned linears (the mask alone does not reproduce the model)
    level-0.50/sparsity.png         per-layer bars and per-row histogram
    summary.csv                     one row per level

Everything is validated first and written into a temporary directory that is moved into place
only when every level succeeded, so a failure leaves no partial mask files.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from safetensors.torch import save_file

from ftlab.core.console import help_requested
from ftlab.core.errors import ConfigError, FtlabError, report_error
from ftlab.core.io import CsvAppender
from ftlab.preflight.compose import compose_config, compose_run
from ftlab.sparsity import stats
from ftlab.sparsity.check import check_targets
from ftlab.sparsity.compute import compute_pruned_for_levels, importance_of, layouts_for, spec_of
from ftlab.sparsity.io import save_masks
from ftlab.sparsity.methods import all_methods, get_method
from ftlab.sparsity.selection import select_modules, transposed_parameters

CONFIG_NAME = "masks"
FORMATS = ("safetensors", "pt")
SUMMARY_COLUMNS = ["level", "target", "overall_sparsity", "mask"]


def level_dir(target: float) -> str:
    return f"level-{target:.2f}"


def parse_argv(argv: list[str]) -> tuple[list[str], str]:
    overrides, fmt = [], "safetensors"
    it = iter(argv)
    for arg in it:
        if arg.startswith("--format"):
            fmt = arg.partition("=")[2] or next(it, "")
            if fmt not in FORMATS:
                raise ConfigError("--format", fmt, f"one of {list(FORMATS)}")
        elif arg.startswith("-"):
            raise FtlabError(f"unknown flag {arg!r}: usage: python -m ftlab.masks [overrides] [--format=pt]")
        else:
            overrides.append(arg)
    return overrides, fmt


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


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if help_requested(argv, __doc__):
        return
    try:
        overrides, fmt = parse_argv(argv)
        out = make_masks(overrides, fmt)
    except FtlabError as err:
        sys.exit(report_error(err))
    print(f"ftlab: masks written to {out}")


if __name__ == "__main__":
    main()
