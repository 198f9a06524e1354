"""``python -m ftlab.validate checkpoint=PATH mask=PATH [report=validation_report.json]``

Checks that a checkpoint keeps a mask's zeros and writes ``validation_report.json``: per layer
the expected sparsity (the mask's), the achieved one (exact zeros of W), max |W| where M = 0 and
the number of such leaks; ``passed`` overall. Exit status: 0 passed, 1 failed, 2 bad input.

``checkpoint`` is a merged model directory (``<run>/model``: ``*.safetensors`` shards or
``pytorch_model.bin``), a single ``.safetensors`` file, or a training checkpoint (``state.ckpt``
or its directory). A training checkpoint of an adapter run holds the frozen base weights, not the
merged model: validate ``<run>/model`` to check what the adapter produces.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from ftlab.errors import ConfigError, FtlabError, report_error

KEYS = ("checkpoint", "mask", "report")
STATE_FILE = "state.ckpt"


def parse_args(argv: list[str]) -> dict[str, str]:
    args: dict[str, str] = {"report": "validation_report.json"}
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq or key not in KEYS:
            raise ConfigError(key if eq else arg, value if eq else None, f"one of {[k + '=...' for k in KEYS]}")
        args[key] = value
    for key in ("checkpoint", "mask"):
        if not args.get(key):
            raise ConfigError(key, None, "a path (usage: python -m ftlab.validate checkpoint=PATH mask=PATH)")
    return args


def _load_torch(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any refusal is the same user error
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError("checkpoint", str(path), f"a checkpoint of plain tensors (refused: {first[:160]})") from err


def _from_safetensors(files: list[Path], names: set[str]) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    out: dict[str, torch.Tensor] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            for key in fh.keys():
                if key in names:
                    out[key] = fh.get_tensor(key)
    return out


def _canonical_state(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Lightning's ``state_dict`` of :class:`FtlabModule`: ``model.`` prefix, maybe peft names."""
    from ftlab.sparsity.selection import canonical_name

    return {canonical_name(k.removeprefix("model.")): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_weights(checkpoint: str, names: set[str]) -> dict[str, torch.Tensor]:
    """The tensors of ``checkpoint`` (only ``names`` where the format allows reading a subset)."""
    path = Path(checkpoint)
    if path.is_dir() and (path / STATE_FILE).is_file():
        path = path / STATE_FILE
    if path.is_dir():
        shards = sorted(path.glob("*.safetensors"))
        if shards:
            return _from_safetensors(shards, names)
        if (path / "pytorch_model.bin").is_file():
            return _load_torch(path / "pytorch_model.bin")
        raise ConfigError("checkpoint", checkpoint, "a model directory with *.safetensors or pytorch_model.bin, "
                          "or a training checkpoint dir with state.ckpt")
    if not path.is_file():
        raise ConfigError("checkpoint", checkpoint, "an existing model directory or checkpoint file")
    if path.suffix == ".safetensors":
        return _from_safetensors([path], names)
    data = _load_torch(path)
    if isinstance(data, dict) and "state_dict" in data:
        return _canonical_state(data["state_dict"])
    if isinstance(data, dict):
        return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    raise ConfigError("checkpoint", checkpoint, "a state dict or a Lightning checkpoint")


def validate(checkpoint: str, mask: str, report_path: str | Path) -> dict[str, Any]:
    """Validate and write the report; returns it."""
    from ftlab.callbacks.history import write_json
    from ftlab.sparsity.check import check_fit, check_targets, validate_weights
    from ftlab.sparsity.io import load_masks

    masks, meta = load_masks(mask, key="mask")
    weights = load_weights(checkpoint, set(masks))
    for name in masks:
        if name not in weights:
            raise ConfigError("mask", mask, f"masks for parameters of the checkpoint; {name!r} is not in {checkpoint}")
    check_fit(masks, {n: tuple(w.shape) for n, w in weights.items()}, "mask", mask)
    if meta:
        check_targets(masks, meta, "mask", mask)
    report = {"checkpoint": str(checkpoint), "mask": str(mask),
              "model": meta.get("model") if meta else None, **validate_weights(weights, masks)}
    report_path = Path(report_path)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    write_json(report_path, report)
    return report


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(argv):
        print(__doc__)
        return
    try:
        args = parse_args(argv)
        report = validate(args["checkpoint"], args["mask"], args["report"])
    except FtlabError as err:
        sys.exit(report_error(err))
    if report["passed"]:
        print(f"ftlab: validation passed: 0 leaks, sparsity {report['achieved_sparsity']:.4f} "
              f"(mask {report['expected_sparsity']:.4f}); report: {args['report']}")
        return
    bad = sum(1 for layer in report["layers"].values() if not layer["passed"])
    print(f"ftlab: validation failed: {report['leaks']} leaks in {bad} layers "
          f"(max |W| where M=0: {report['max_abs_where_pruned']:.3g}); report: {args['report']}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
    main()
