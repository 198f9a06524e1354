"""A checkpoint checked against a mask: per layer the mask's sparsity, the achieved one (exact zeros
of W), max |W| where M = 0 and the number of such leaks, written as ``validation_report.json``; and,
for a merged model dir holding 2:4 patterns, its semi-structured forward speed against the dense
model. What ``python -m ftlab.validate`` runs (its help says which checkpoint formats are read)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from ftlab.core.errors import ConfigError, FtlabError
from ftlab.core.io import write_json
from ftlab.sparsity.check import check_fit, check_targets, validate_weights
from ftlab.sparsity.io import load_masks
from ftlab.sparsity.selection import canonical_name
from ftlab.sparsity.semi import compare_speed, to_semi_structured_
from ftlab.training.state import STATE_FILE


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
