"""``python -m ftlab.validate checkpoint=PATH mask=PATH [report=validation_report.json] [speed=2:4 batch=16 seq=512]``

Checks that a checkpoint keeps a mask's zeros and writes ``validation_report.json``: per layer
the expected sparsity (the mask's), the achieved one (exact zeros of W), max |W| where M = 0 and
the number of such leaks; ``passed`` overall. Exit status: 0 passed, 1 failed, 2 bad input.

``checkpoint`` is a merged model directory (``<run>/model``: ``*.safetensors`` shards or
``pytorch_model.bin``), a single ``.safetensors`` file, or a training checkpoint (``state.ckpt``
or its directory). A training checkpoint of an adapter run holds the frozen base weights, not the
merged model: validate ``<run>/model`` to check what the adapter produces.

``speed=2:4`` (model directory only, after a passing validation): converts the merged linears
that hold a 2:4 pattern to ``torch.sparse.to_sparse_semi_structured`` and measures forward
latency and tokens/s against the dense model (fp16, ``batch`` × ``seq`` random tokens); the
numbers go into the report under ``speed``. It needs a CUDA GPU of compute capability >= 8.0;
elsewhere it stops with one line saying so, before anything is written.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from ftlab.core.console import help_requested, quiet_progress_bars, verbose
from ftlab.core.errors import ConfigError, FtlabError, report_error
from ftlab.core.io import write_json
from ftlab.sparsity.check import check_fit, check_targets, validate_weights
from ftlab.sparsity.io import load_masks
from ftlab.sparsity.selection import canonical_name
from ftlab.sparsity.semi import compare_speed, to_semi_structured_, unsupported_reason
from ftlab.training.state import STATE_FILE

KEYS = ("checkpoint", "mask", "report", "speed", "batch", "seq")
SPEEDS = ("2:4",)


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
    if "speed" in args:
        if args["speed"] not in SPEEDS:
            raise ConfigError("speed", args["speed"], f"one of {list(SPEEDS)}")
        for key, default in (("batch", "16"), ("seq", "512")):
            if not args.setdefault(key, default).isdigit() or int(args[key]) < 1:
                raise ConfigError(key, args[key], "a positive integer")
        if not Path(args["checkpoint"]).is_dir() or (Path(args["checkpoint"]) / STATE_FILE).is_file():
            raise ConfigError("checkpoint", args["checkpoint"], "a merged model directory (<run>/model) with speed=2:4")

        reason = unsupported_reason()
        if reason:
            raise FtlabError(f"speed=2:4 cannot be measured here: {reason}")
    return args


def measure_speed(checkpoint: str, batch: int, seq: int) -> dict[str, Any]:
    """Dense vs 2:4 semi-structured forward of the model directory (fp16, CUDA)."""
    dense = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float16).cuda().eval()
    sparse = copy.deepcopy(dense)
    converted = to_semi_structured_(sparse)
    if not converted["converted"]:
        raise FtlabError(f"speed=2:4: no linear of {checkpoint} holds a 2:4 pattern with kernel-sized shapes "
                         "(a model pruned with sparsity=nm, n=2, m=4?)")
    result = compare_speed(dense, sparse, batch, seq, dense.config.vocab_size)
    return {**result, "converted_linears": len(converted["converted"]), "skipped_linears": converted["skipped"]}


def _load_torch(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any refusal is the same user error
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError("checkpoint", str(path), f"a checkpoint of plain tensors (refused: {first[:160]})") from err


def _from_safetensors(files: list[Path], names: set[str]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            for key in fh.keys():
                if key in names:
                    out[key] = fh.get_tensor(key)
    return out


def _canonical_state(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Lightning's ``state_dict`` of :class:`FtlabModule`: ``model.`` prefix, maybe peft names."""
    return {canonical_name(k.removeprefix("model.")): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _through_transformers(path: Path, names: set[str]) -> dict[str, torch.Tensor]:
    """The named parameters of a HF model dir as transformers loads it: transformers 5 saves fused
    MoE experts in their published per-expert layout (``experts.0.w1.weight`` ...) and fuses them
    again on load, so a mask of ``experts.gate_up_proj`` is checked against the loaded model."""
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype="auto")
    return {n: p.detach() for n, p in model.named_parameters() if n in names}


def load_weights(checkpoint: str, names: set[str]) -> dict[str, torch.Tensor]:
    """The tensors of ``checkpoint`` (only ``names`` where the format allows reading a subset)."""
    path = Path(checkpoint)
    if path.is_dir() and (path / STATE_FILE).is_file():
        path = path / STATE_FILE
    if path.is_dir():
        shards = sorted(path.glob("*.safetensors"))
        if shards:
            found = _from_safetensors(shards, names)
            if set(found) != set(names) and (path / "config.json").is_file():
                return _through_transformers(path, names)
            return found
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
    if help_requested(argv, __doc__):
        return
    quiet_progress_bars(verbose())  # a merged MoE dir loads through transformers, whose bar is not ftlab's line
    try:
        args = parse_args(argv)
        report = validate(args["checkpoint"], args["mask"], args["report"])
        if "speed" in args and report["passed"]:
            report["speed"] = measure_speed(args["checkpoint"], int(args["batch"]), int(args["seq"]))
            write_json(Path(args["report"]), report)
            sp = report["speed"]
            print(f"ftlab: 2:4 speed-up {sp['speedup']:.3f}x ({sp['dense_latency_ms']:.2f} ms dense, "
                  f"{sp['sparse_latency_ms']:.2f} ms 2:4 at batch {sp['batch']} x seq {sp['seq']}; "
                  f"{sp['sparse_tokens_per_s']:.0f} vs {sp['dense_tokens_per_s']:.0f} tokens/s)")
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
