"""Mask files: ``<name>.safetensors`` (default) or ``<name>.pt`` plus a ``<name>.json`` sidecar.

``.pt`` files are read with ``torch.load(weights_only=True)``: a file holding an arbitrary pickled
object is refused instead of executed. Both files are written to temporary names and renamed, the
sidecar last, so an interrupted save leaves no mask that looks complete.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ftlab.core.errors import ConfigError
from ftlab.core.io import atomic_path

FORMAT_VERSION = 1
SUFFIXES = (".safetensors", ".pt")


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def save_masks(masks: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, Any]) -> Path:
    """Write masks and their sidecar; returns the mask path. The suffix picks the format."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ConfigError("mask path", str(path), f"a file name ending in one of {list(SUFFIXES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: m.detach().to(torch.bool).contiguous().cpu() for name, m in masks.items()}
    side = sidecar_path(path)
    with atomic_path(side) as tmp_side, atomic_path(path) as tmp_mask:  # mask replaced first, then sidecar
        if path.suffix == ".safetensors":
            save_file(tensors, str(tmp_mask), metadata={"format": "ftlab-mask", "version": str(FORMAT_VERSION)})
        else:
            torch.save(tensors, tmp_mask)
        tmp_side.write_text(json.dumps({"format_version": FORMAT_VERSION, **metadata}, indent=2))
    return path


def load_masks(path: str | Path, key: str = "sparsity.mask_path") -> tuple[dict[str, torch.Tensor], dict | None]:
    """(masks, sidecar or ``None``). Only a mapping of names to tensors is accepted."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(key, str(path), "an existing mask file (.safetensors or .pt)")
    if path.suffix not in SUFFIXES:
        raise ConfigError(key, str(path), f"a mask file ending in one of {list(SUFFIXES)}")
    try:
        if path.suffix == ".safetensors":
            data: Any = load_file(str(path))
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, SafetensorError, EOFError, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(key, str(path), f"a mask file of plain tensors (refused: {first[:160]})") from err
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                             for k, v in data.items()):
        raise ConfigError(key, str(path), "a mapping of parameter names to boolean tensors "
                          f"(found {type(data).__name__})")
    side = sidecar_path(path)
    try:
        meta = json.loads(side.read_text()) if side.is_file() else None
    except ValueError as err:
        raise ConfigError(key, str(path), f"a mask whose sidecar {side.name} is JSON ({err})") from err
    return data, meta


def mask_shapes(path: str | Path, key: str = "sparsity.mask_path") -> dict[str, tuple[tuple[int, ...], str]]:
    """``{name: (shape, dtype)}`` of a safetensors mask file, read from its header only (cheap
    enough for composition-time checks of every job of a sweep)."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            out = {}
            for name in fh.keys():
                sl = fh.get_slice(name)
                out[name] = (tuple(sl.get_shape()), str(sl.get_dtype()))
            return out
    except (SafetensorError, OSError) as err:
        raise ConfigError(key, str(path), f"a readable safetensors mask file ({err})") from err
