"""Composition-time checks of the reuse settings (registered in ``ftlab.config.validate``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftlab.config.environment import unwritable_reason  # creates a probe file: root ignores modes
from ftlab.errors import fail


def uses_cache(cfg: Any) -> bool:
    """Whether the run has a cached step: training stages, a pre-trained base or a computed mask."""
    if not cfg.reuse.enabled:
        return False
    sp = cfg.sparsity
    computes_mask = sp.method != "none" and not sp.mask_path
    return cfg.schedule.name == "stages" or bool(cfg.base.enabled) or computes_mask


def validate_cache_dir(cfg: Any) -> None:
    if not uses_cache(cfg):
        return
    reason = unwritable_reason(Path(cfg.paths.cache_dir))
    if reason:
        fail("paths.cache_dir", cfg.paths.cache_dir,
             f"a writable directory for the reuse cache ({reason}); or reuse.enabled=false")
    local = cfg.paths.get("local_cache_dir")
    if local and cfg.base.enabled:
        reason = unwritable_reason(Path(local))
        if reason:
            fail("paths.local_cache_dir", local, f"null or a writable directory ({reason})")
