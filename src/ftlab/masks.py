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

import sys

from ftlab.core.console import help_requested
from ftlab.core.errors import ConfigError, FtlabError, report_error
from ftlab.recipe.mask_levels import make_masks

FORMATS = ("safetensors", "pt")


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
