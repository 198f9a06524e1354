"""The checkpoint format, in one place: what a checkpoint or a cached stage holds, where its files
are, how it is read, and the checks that let it be loaded onto a rebuilt frozen model.

A checkpoint is a directory ``checkpoints/checkpoint-epoch{X}[-step{Y}]/`` (a cached stage: the
store entry's artifact dir) with :data:`STATE_FILE` (the state) and :data:`META_FILE` (global step,
epoch, the state's size and its :data:`STATE_KEY` record), so a resume picks and checks one
without loading it (:func:`checkpoints_newest_first`, :func:`state_problem`). Writing goes through
Lightning (:func:`ftlab.callbacks.checkpoints.save_state`, which records :func:`state_info`);
which checkpoint a run resumes from is :mod:`ftlab.training.resume`'s question.

A state holds the tensors training changes (``requires_grad`` parameters: adapter A/B, gates, DoRA
magnitudes; every weight for ``adapter=full``), the optimiser, scheduler, loop, data-position and
RNG state, and :data:`STATE_KEY`: the format, the foundation (keys of the model/base/mask steps,
:mod:`ftlab.training.foundation`) and the name and shape of every trainable tensor. The frozen part
is rebuilt by the recipe from its own steps; a state is refused (one line) when what it
records does not match the run. Every load is ``weights_only=True``: plain tensors and
containers, never an arbitrary pickled object.

Format 1 (before): Lightning's full state, every frozen weight included, no record. It still
loads (the trainable tensors are among its weights); its foundation cannot be checked.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ftlab.core.errors import FtlabError
from ftlab.training.foundation import foundation_mismatch

log = logging.getLogger("ftlab")

STATE_FORMAT = 2
#: The checkpoint entry (and the ``meta.json`` keys) describing a trainable-only state.
STATE_KEY = "ftlab_state"


# -- the checkpoint directory: ``state.ckpt`` (the state) and ``meta.json`` (what it is) ----------
STATE_FILE = "state.ckpt"
META_FILE = "meta.json"
_NAME = re.compile(r"^checkpoint-epoch(\d+)(?:-step(\d+))?$")


def read_meta(state_file: Path) -> dict[str, Any]:
    """The ``meta.json`` next to a state file (``{}`` when there is none or it is unreadable)."""
    try:
        data = json.loads((Path(state_file).parent / META_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def checkpoints_newest_first(run_dir: Path) -> list[Path]:
    """Checkpoint dirs with a state file and a readable ``meta.json``, highest global step first
    (epoch-end first on a tie). Whether a state is intact is :func:`state_problem`'s question."""
    root = Path(run_dir) / "checkpoints"
    found = []
    for d in root.glob("checkpoint-epoch*") if root.is_dir() else []:
        if not (_NAME.match(d.name) and (d / STATE_FILE).is_file()):
            continue
        info = read_meta(d / STATE_FILE)
        if "global_step" in info:
            found.append(((int(info["global_step"]), bool(info.get("epoch_end", False))), d))
    return [d for _, d in sorted(found, key=lambda kd: kd[0], reverse=True)]


def find_latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint with the highest global step (epoch-end wins a tie)."""
    found = checkpoints_newest_first(run_dir)
    return found[0] if found else None


def checkpoint_step(state_file: Path) -> int:
    """Global step of a checkpoint: from its ``meta.json`` when it has one (no need to load the
    whole state), else from the state itself (memory-mapped, ``weights_only``)."""
    meta = read_meta(state_file)
    if "global_step" in meta:
        return int(meta["global_step"])
    return int(safe_load(Path(state_file), mmap=True)["global_step"])


#: attribute holding a module's trainable record taken before sharding (:func:`snapshot_trainable`)
SNAPSHOT_ATTR = "_ftlab_trainable_snapshot"


def snapshot_trainable(module: nn.Module) -> None:
    """Record names and shapes of what trains, its frozen count and its state-dict keys on ``module``
    before FSDP shards it: afterwards its parameters are flat shards under wrapper-prefixed names,
    and every question of this module is answered from the record."""
    setattr(module, SNAPSHOT_ATTR, None)
    snap = {"shapes": trainable_shapes(module),
            "frozen": sum(p.numel() for p in module.parameters() if not p.requires_grad),
            "keys": set(module.state_dict())}
    setattr(module, SNAPSHOT_ATTR, snap)


def _snapshot(module: nn.Module) -> dict[str, Any] | None:
    return getattr(module, SNAPSHOT_ATTR, None)


def trainable_shapes(module: nn.Module) -> dict[str, list[int]]:
    """``{state-dict name: shape}`` of every trainable parameter (a tied weight counts once)."""
    snap = _snapshot(module)
    if snap is not None:
        return dict(snap["shapes"])
    return {name: list(p.shape) for name, p in module.named_parameters() if p.requires_grad}


def trainable_only(state_dict: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    names = trainable_shapes(module)
    return {k: v for k, v in state_dict.items() if k in names}


def state_info(module: nn.Module, found: dict[str, Any] | None) -> dict[str, Any]:
    """The record stored in the checkpoint and in its ``meta.json`` (plain JSON values only, so
    a ``weights_only`` load accepts it)."""
    plain = json.loads(json.dumps(found)) if found is not None else None
    snap = _snapshot(module)
    frozen = snap["frozen"] if snap is not None else sum(p.numel() for p in module.parameters() if not p.requires_grad)
    return {"format": STATE_FORMAT, "foundation": plain, "trainable": trainable_shapes(module), "frozen_params": frozen}


def state_mismatch(info: dict[str, Any], module: nn.Module, found: dict[str, Any] | None) -> str | None:
    """Why a state recording ``info`` cannot be loaded into ``module`` standing on ``found``."""
    fmt = info.get("format")
    if fmt != STATE_FORMAT:
        return f"state format {fmt!r} is not readable by this ftlab (format {STATE_FORMAT})"
    now = trainable_shapes(module)
    recorded = info.get("trainable") or {}
    missing = [k for k in now if k not in recorded]
    extra = [k for k in recorded if k not in now]
    if missing or extra:
        name = (missing or extra)[0]
        side = "this run trains" if missing else "it holds"
        return (f"its trainable tensors differ from this run's ({len(missing)} missing, {len(extra)} extra; "
                f"{side} {name!r}): adapter settings changed")
    for k, shape in now.items():
        if list(recorded[k]) != shape:
            return f"trainable tensor {k!r} has shape {list(recorded[k])}, this run's is {shape}: adapter settings changed"
    if found is not None and info.get("foundation") is not None:
        return foundation_mismatch(info["foundation"], found)
    return None


def check_state_dict(state_dict: dict[str, Any], module: nn.Module) -> str | None:
    """Why ``state_dict`` (loaded non-strictly) would not restore every trainable tensor."""
    now = trainable_shapes(module)
    snap = _snapshot(module)
    known = snap["keys"] if snap is not None else set(module.state_dict())
    missing = [k for k in now if k not in state_dict]
    unexpected = [k for k in state_dict if k not in known]
    if missing:
        return f"it lacks the trainable tensor {missing[0]!r} ({len(missing)} missing)"
    if unexpected:
        return f"it holds {unexpected[0]!r}, which this run's model has not ({len(unexpected)} unknown)"
    for k, shape in now.items():
        if list(state_dict[k].shape) != shape:
            return f"trainable tensor {k!r} has shape {list(state_dict[k].shape)}, this run's is {shape}"
    return None


def first_line(err: BaseException, limit: int = 200) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:limit]


def safe_load(path: Path, *, mmap: bool = False) -> dict[str, Any]:
    """``torch.load`` of a state with ``weights_only=True`` (pickled objects are refused)."""
    return torch.load(path, map_location="cpu", mmap=mmap, weights_only=True)


def state_problem(state_file: Path, meta: dict[str, Any] | None) -> tuple[str, str] | None:
    """``("incomplete" | "unsafe", why)`` for a state file that must not be resumed from, else
    ``None``. Cheap: a memory-mapped safe load (tensor data is not read), and the size that
    ``meta.json`` records."""
    state_file = Path(state_file)
    if not state_file.is_file():
        return "incomplete", f"{state_file.name} is missing"
    size = state_file.stat().st_size
    expected = (meta or {}).get("state_bytes")
    try:  # first: a pickled object is refused whatever its size
        state = safe_load(state_file, mmap=True)
    except pickle.UnpicklingError as err:
        return "unsafe", f"refused by weights_only loading: {first_line(err)}"
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        if expected is not None and size != expected:
            return "incomplete", f"{state_file.name} is {size} bytes, meta.json records {expected}"
        return "incomplete", f"{state_file.name} is unreadable: {first_line(err)}"
    if expected is not None and size != expected:
        return "incomplete", f"{state_file.name} is {size} bytes, meta.json records {expected}"
    if not isinstance(state, dict) or "state_dict" not in state:
        return "incomplete", f"{state_file.name} is not a training state (no state_dict)"
    return None



def check_loaded(checkpoint: dict[str, Any], module: nn.Module, found: dict[str, Any] | None, source: str) -> None:
    """Refuse (one line) a loaded state that would not restore this run's trainable part on
    this run's foundation; a format-1 state (full weights, no record) loads whole."""
    info = checkpoint.get(STATE_KEY)
    # FSDP's strategy loads the tensors itself and hands the hooks the rest (no "state_dict"); its
    # file was checked as a state before the fit (state_problem) and its record is checked below
    why = check_state_dict(checkpoint["state_dict"], module) if "state_dict" in checkpoint else None
    if why is None and info is not None:
        why = state_mismatch(info, module, found)
    if why is not None:
        raise FtlabError(f"{source} cannot be resumed: {why}; resume=null starts over")
    if info is None:
        log.info("%s: a format-1 state (every weight, no step keys): loaded whole, its base/mask keys are "
                 "not checked", source)


def check_resumable(state_file: Path, meta: dict[str, Any], module: nn.Module, found: dict[str, Any] | None,
                    source: str) -> None:
    """Before the fit: refuse (one line) a state that is damaged, holds a pickled object, or whose
    record (``meta``'s :data:`STATE_KEY`) does not fit this run's trainable part and foundation
    (keys, and digests of cached artifacts). A format-1 state is checked when it is loaded."""
    problem = state_problem(state_file, meta)
    if problem is not None:
        raise FtlabError(f"{source} cannot be resumed: {problem[1]}")
    info = meta.get(STATE_KEY)
    why = state_mismatch(info, module, found) if info is not None else None
    if why is not None:
        raise FtlabError(f"{source} cannot be resumed: {why}; resume=null starts over")
