"""Preflight checks of what a run needs from the machine it starts on: the hardware it asks for,
directories it can write, credentials of an online logger, and a resume target that is a checkpoint.

Each is checked the way the run will use it rather than by asking permission: a directory is
writable when a file can be created in it (``os.access`` says yes to root on a read-only
filesystem), the hardware is available when Lightning's accelerator connector accepts it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from ftlab.core.errors import fail
from ftlab.hardware import get_target
from ftlab.training.loggers import get_logger
from ftlab.training.state import META_FILE, STATE_FILE, format_problem, read_meta


def unwritable_reason(path: Path) -> str | None:
    """Why files could not be created under ``path`` (``None``: they can). Leaves nothing behind:
    a probe file is created and removed in the nearest existing ancestor."""
    p = Path(os.path.expanduser(str(path))).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        return f"{p} is not a directory"
    try:
        fd, probe = tempfile.mkstemp(prefix=".ftlab-probe-", dir=p)
    except OSError as err:
        return f"cannot create a file in {p}: {err.strerror or err}"
    os.close(fd)
    os.unlink(probe)
    return None


def check_writable(key: str, path: Any, what: str) -> None:
    reason = unwritable_reason(Path(str(path)))
    if reason:
        fail(key, str(path), f"a writable directory for {what} ({reason})")


# -- hardware --------------------------------------------------------------------------------


def check_hardware(cfg: Any) -> None:
    """The accelerator and device count exist here, and Lightning accepts the strategy/precision.
    Only for jobs that run on this machine (single runs, local sweeps)."""
    h = cfg.hardware
    if get_target(h.accelerator).cuda:
        have = torch.cuda.device_count()
        if have == 0:
            fail("hardware", h.name, "hardware this machine has: accelerator=gpu needs a CUDA device and torch "
                 f"sees none (torch {torch.__version__}, CUDA {torch.version.cuda}); use hardware=cpu here, "
                 "or submit to GPU nodes with --multirun hydra/launcher=slurm")
        if h.devices > have:
            fail("hardware.devices", h.devices, f"at most {have} (the CUDA devices visible here)")
    _lightning_accepts(cfg)


def _lightning_accepts(cfg: Any) -> None:
    """Build the run's Trainer (no logger, no callbacks): its accelerator connector refuses what this
    machine lacks (a strategy's package, a backend) with the reason; ``build_trainer`` says it in one line."""
    from ftlab.training.trainer import build_trainer  # Lightning (heavy): hardware check only

    quiet = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:  # the connector's "GPU available: ..." lines belong to the run, not to this check
        lg.setLevel(logging.ERROR)
    try:
        build_trainer(cfg, max_steps=1, callbacks=[], logger=False)
    finally:
        for lg, level in zip(quiet, levels):
            lg.setLevel(level)


# -- logger ----------------------------------------------------------------------------------


def check_logger(cfg: Any) -> None:
    """What the logger's spec says it needs from this machine: a local store outside the run dir it
    can write (``local_store``), and its own checks (``check_machine``: credentials...)."""
    spec = get_logger(cfg.logger.name)
    store = spec.local_store(cfg.logger) if spec.local_store is not None else None
    if store is not None:
        check_writable(*store)
    if spec.check_machine is not None:
        spec.check_machine(cfg.logger)


# -- resume ----------------------------------------------------------------------------------


def check_resume(cfg: Any) -> None:
    """``resume=PATH`` names a checkpoint: a dir with ``state.ckpt`` or that file, a torch archive.
    (``auto`` finds its checkpoint in the run dir at start; the checkpoint module owns that.)"""

    r = cfg.resume
    if r is None or r == "auto":
        return
    path = Path(r)
    allowed = f"null, 'auto' or a checkpoint dir with {STATE_FILE} (or that file)"
    if path.is_dir():
        if not (path / STATE_FILE).is_file():
            fail("resume", r, f"{allowed}; the dir has no {STATE_FILE}")
        path = path / STATE_FILE
    elif not path.is_file():
        fail("resume", r, f"{allowed}; nothing exists there")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a truncated one has no directory
        fail("resume", r, f"{allowed}; {path.name} is not a complete torch checkpoint archive")
    meta = path.parent / META_FILE
    if meta.is_file():
        try:
            int(json.loads(meta.read_text())["global_step"])
        except (ValueError, KeyError, TypeError) as err:
            fail("resume", r, f"{allowed}; its {META_FILE} has no readable global_step ({err})")
        newer = format_problem(read_meta(path), path)
        if newer is not None:
            fail("resume", r, f"{allowed} that this ftlab can read ({newer})")
