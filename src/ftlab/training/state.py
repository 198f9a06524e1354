"""The checkpoint format, in one place: what a checkpoint or a cached stage holds, how it is
assembled from the module and written, where its files are, how it is read, checked and migrated
from an older format. Every other module calls the functions here and knows no file name or key.

**Layout.** A checkpoint is a directory ``checkpoints/checkpoint-epoch{X}[-step{Y}]/`` (a cached
stage: the store entry's artifact dir) with :data:`STATE_FILE` (the state) and :data:`META_FILE`
(global step, epoch, the state's size and its :data:`STATE_KEY` record), so a resume picks and
checks one without loading it (:func:`checkpoints_newest_first`, :func:`state_problem`).

**What a state holds** (:func:`assemble_state`, from Lightning's checkpoint dict): the tensors
training changes (``requires_grad`` parameters: adapter A/B, gates, DoRA magnitudes; every weight
for ``adapter=full``), the optimiser, scheduler, loop, data-position state (Lightning's), every
rank's RNG state, this epoch's losses, and :data:`STATE_KEY`: the format, the foundation (keys of
the model/base/mask steps, :mod:`ftlab.training.foundation`) and the name and shape of every
trainable tensor. The frozen part is rebuilt by the recipe from its own steps; a state is refused
(one line) when what it records does not match the run.

**Writing** (:func:`save_state`, :func:`write_checkpoint`, :func:`prune_checkpoints`): the state
file and ``meta.json`` go into a temporary directory that is renamed into place only when both are
complete (a re-saved name replaces the old one only then), so a crash or a full disk never leaves
a half checkpoint; a cached stage is written into the store's staging dir, which the store
publishes atomically. Which checkpoint a run resumes from is :mod:`ftlab.training.resume`'s
question; when to save is :mod:`ftlab.callbacks.checkpoints`'.

**Reading** is ``weights_only=True`` (:func:`safe_load`): plain tensors and containers, never an
arbitrary pickled object.

**Formats.** 2 (current): trainable-only, with the record. 1 (before): Lightning's full state,
every frozen weight included, no record, ``meta.json`` with step and epoch only (the oldest
format-1 states also lack the RNG state). A format-1 state is migrated on load, in memory
(:func:`migrate_state`, one log line): its keys must all be the model's, its trainable tensors are
kept and a record is made from them; its foundation was never recorded and cannot be checked. A
record of any other format (a newer ftlab's) is refused in one line naming the file
(:func:`format_problem`).
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ftlab.core.errors import FtlabError
from ftlab.core.writefail import write_failure
from ftlab.training.foundation import foundation_mismatch
from ftlab.training.rng import every_rank, own_rank, rng_state

log = logging.getLogger("ftlab")

STATE_FORMAT = 2
#: formats this ftlab reads: format 1 is migrated on load (:func:`migrate_state`)
READABLE_FORMATS = (1, STATE_FORMAT)
#: The checkpoint entry (and the ``meta.json`` keys) describing a trainable-only state.
STATE_KEY = "ftlab_state"
#: the state's entries beside Lightning's: this rank's RNG state, every rank's, this epoch's losses
RNG_KEY, RNG_RANKS_KEY, EPOCH_LOSSES_KEY = "ftlab_rng", "ftlab_rng_ranks", "ftlab_epoch_losses"


# -- the checkpoint directory: ``state.ckpt`` (the state) and ``meta.json`` (what it is) ----------
STATE_FILE = "state.ckpt"
META_FILE = "meta.json"
_NAME = re.compile(r"^checkpoint-epoch(\d+)(?:-step(\d+))?$")


def state_path(checkpoint_dir: Path) -> Path:
    """The state file of a checkpoint dir (or of a cached stage's artifact dir)."""
    return Path(checkpoint_dir) / STATE_FILE


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


# -- the record: what trains, and the steps the frozen part comes from -----------------------------
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
    """The entries of ``state_dict`` that train: the frozen part is rebuilt from the run's steps."""
    names = trainable_shapes(module)
    return {k: v for k, v in state_dict.items() if k in names}


def state_info(module: nn.Module, found: dict[str, Any] | None) -> dict[str, Any]:
    """The record stored in the checkpoint and in its ``meta.json`` (plain JSON values only, so
    a ``weights_only`` load accepts it)."""
    plain = json.loads(json.dumps(found)) if found is not None else None
    snap = _snapshot(module)
    frozen = snap["frozen"] if snap is not None else sum(p.numel() for p in module.parameters() if not p.requires_grad)
    return {"format": STATE_FORMAT, "foundation": plain, "trainable": trainable_shapes(module), "frozen_params": frozen}


# -- checks: before the fit from ``meta.json``, at the load from the state -----------------------
def state_mismatch(info: dict[str, Any], module: nn.Module, found: dict[str, Any] | None) -> str | None:
    """Why a state recording ``info`` cannot be loaded into ``module`` standing on ``found``."""
    if info.get("format") != STATE_FORMAT:
        return _format_line(info.get("format"))
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



# -- loading: an older format migrated, a newer one refused, the state checked against the run --
def _format_line(fmt: Any) -> str:
    readable = ", ".join(str(f) for f in READABLE_FORMATS)
    return f"its state format is {fmt!r}; this ftlab reads format {readable} (1 is migrated on load)"


def format_problem(meta: dict[str, Any], path: Path) -> str | None:
    """Why the state at ``path`` whose ``meta.json`` (or loaded state) is ``meta`` has a format this
    ftlab cannot read (a newer ftlab wrote it); ``None`` for a current record, and for no record
    (format 1, or a state without ``meta.json``: its format is known once it is loaded)."""
    info = meta.get(STATE_KEY)
    if info is None or (isinstance(info, dict) and info.get("format") == STATE_FORMAT):
        return None
    fmt = info.get("format") if isinstance(info, dict) else info
    return f"{path}: {_format_line(fmt)}"


def migrate_state(checkpoint: dict[str, Any], module: nn.Module, source: str) -> dict[str, Any]:
    """An older state brought to the current format in memory (one log line says so), so the rest
    of the load sees only current states; a current one is returned as it is, another format is
    refused (one line naming ``source``). Format 1 (every weight, no record): each of its keys must
    be this model's, its trainable tensors are kept (the frozen ones are rebuilt from the run's own
    steps, as for any state) and the record is made from them, with no foundation (never recorded).
    FSDP calls this on the file it reads before it loads the tensors (:func:`read_state`), the
    module's load hook on what Lightning read (:func:`load_state`)."""
    info = checkpoint.get(STATE_KEY)
    if info is not None:
        if not isinstance(info, dict) or info.get("format") != STATE_FORMAT:
            fmt = info.get("format") if isinstance(info, dict) else info
            raise FtlabError(f"{source} cannot be resumed: {_format_line(fmt)}")
        return checkpoint
    tensors = checkpoint.get("state_dict")
    kept = 0
    if tensors is not None:
        why = check_state_dict(tensors, module)
        if why is not None:
            raise FtlabError(f"{source} cannot be resumed: {why}; resume=null starts over")
        checkpoint["state_dict"] = trainable_only(tensors, module)
        kept = len(checkpoint["state_dict"])
    record = state_info(module, None)
    if tensors is not None:
        record["trainable"] = {k: list(v.shape) for k, v in checkpoint["state_dict"].items()}
    checkpoint[STATE_KEY] = record
    rng = "" if RNG_KEY in checkpoint else "; it holds no RNG state, so random draws differ from an uninterrupted run's"
    log.info("%s: migrated a format-1 state (every weight, no record) to format %d in memory: kept its %d trainable "
             "tensors, its base/mask keys are not checked%s", source, STATE_FORMAT, kept, rng)
    return checkpoint


def read_state(path: Path, module: nn.Module) -> dict[str, Any]:
    """A state file loaded (``weights_only``) and migrated to the current format."""
    return migrate_state(safe_load(Path(path)), module, str(path))


def load_state(checkpoint: dict[str, Any], module: nn.Module, found: dict[str, Any] | None,
               source: str) -> tuple[dict[str, Any] | None, list[float]]:
    """The module's side of a load (before Lightning loads the non-strict state dict): migrate an
    older state, refuse (one line) one that would not restore this run's trainable part on this
    run's foundation; returns this rank's RNG state to restore and the epoch's losses so far."""
    checkpoint = migrate_state(checkpoint, module, source)
    # FSDP's strategy loads the tensors itself and hands the hooks the rest (no "state_dict"); its
    # file was checked as a state before the fit (state_problem) and its record is checked below
    why = check_state_dict(checkpoint["state_dict"], module) if "state_dict" in checkpoint else None
    if why is None:
        why = state_mismatch(checkpoint[STATE_KEY], module, found)
    if why is not None:
        raise FtlabError(f"{source} cannot be resumed: {why}; resume=null starts over")
    return own_rank(checkpoint.get(RNG_RANKS_KEY), checkpoint.get(RNG_KEY)), list(checkpoint.get(EPOCH_LOSSES_KEY, []))


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


# -- writing -------------------------------------------------------------------------------------
def assemble_state(checkpoint: dict[str, Any], module: nn.Module, epoch_losses: list[float]) -> None:
    """What a state holds, from the checkpoint dict Lightning assembled (its save hook): the
    trainable tensors only, the record, the RNG state (every rank's where there are several: ranks
    draw different dropout masks and only rank 0 writes) and this epoch's losses so far."""
    checkpoint["state_dict"] = trainable_only(checkpoint["state_dict"], module)
    checkpoint[STATE_KEY] = state_info(module, getattr(module, "foundation", None))
    checkpoint[RNG_KEY] = rng_state()
    ranks = every_rank(checkpoint[RNG_KEY])
    if ranks is not None:
        checkpoint[RNG_RANKS_KEY] = ranks
    checkpoint[EPOCH_LOSSES_KEY] = list(epoch_losses)


def _raise_write_failure(err: BaseException, path: Path) -> None:
    failure = write_failure(err, path)
    if failure is not None and failure is not err:
        raise failure from err


def save_state(trainer: Any, directory: Path, **meta: Any) -> dict[str, Any]:
    """Collective (every rank calls it; a sharded state is gathered): the trainer's state into
    ``directory``'s :data:`STATE_FILE` and, on rank 0, its :data:`META_FILE`: global step, epoch,
    ``meta``, the record and the state's size (so a truncated copy is recognised). ``directory``
    exists and is not yet visible (a checkpoint's temporary dir, a store's staging dir). Returns
    the ``meta.json`` entries."""
    path = state_path(directory)
    try:
        trainer.save_checkpoint(path, weights_only=False)  # weights_only=False: optimiser etc. included
    except (OSError, RuntimeError) as err:
        _raise_write_failure(err, path)
        raise
    module = trainer.lightning_module
    out = {"global_step": trainer.global_step, "epoch": trainer.current_epoch, **meta,
           STATE_KEY: state_info(module, getattr(module, "foundation", None))}
    # rank 0 wrote it; another rank must not look: rank 0 may be renaming the directory already
    # (a rank that saw the file and then stat-ed it after the rename crashed the run at its barrier)
    if trainer.is_global_zero:
        out["state_bytes"] = path.stat().st_size
        try:
            (Path(directory) / META_FILE).write_text(json.dumps(out))
        except OSError as err:
            _raise_write_failure(err, Path(directory) / META_FILE)
            raise
    return out


def write_checkpoint(trainer: Any, root: Path, name: str, keep: int | None = None, **meta: Any) -> Path:
    """Collective: the checkpoint dir ``root/name`` written atomically. Rank 0 makes a temporary
    dir, every rank writes the state (:func:`save_state`), and rank 0 renames it into place; a
    checkpoint re-saved under the same name replaces the old one only when complete, and with
    ``keep`` only the newest ``keep`` checkpoints stay. A failure (a full disk mid-write) removes
    the half-written dir, complete checkpoints stay, and a write failure ends in one line naming
    the path."""
    root = Path(root)
    final, tmp = root / name, root / f".tmp-{name}"
    try:
        if trainer.is_global_zero:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        trainer.strategy.barrier()
        save_state(trainer, tmp, **meta)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_write_failure(err, tmp / META_FILE)
        raise
    if trainer.is_global_zero:
        if final.exists():
            old = root / f".old-{name}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
        if keep:
            prune_checkpoints(root, keep)
    trainer.strategy.barrier()
    return final


def prune_checkpoints(root: Path, keep: int) -> None:
    """Remove all but the ``keep`` checkpoint dirs under ``root`` with the highest global steps."""
    dirs = []
    for d in Path(root).glob("checkpoint-epoch*"):
        meta = read_meta(state_path(d))
        if "global_step" in meta:
            dirs.append((int(meta["global_step"]), d))
    for _, d in sorted(dirs, key=lambda sd: sd[0])[:-keep]:
        shutil.rmtree(d, ignore_errors=True)
