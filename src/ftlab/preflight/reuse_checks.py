"""Composition-time checks of the reuse settings (registered in ``ftlab.preflight.validate``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftlab.core.errors import fail
from ftlab.preflight.environment import unwritable_reason  # creates a probe file: root ignores modes
from ftlab.reuse.handover import plan_for_checks
from ftlab.reuse.steps import as_plain


def uses_cache(cfg: Any) -> bool:
    """Whether the run's plan of steps has a step that goes through the store (training stages,
    a pre-trained base or a computed mask, each under :func:`ftlab.reuse.steps.cache_policy`). The
    plan is kept for the run of this config (:mod:`ftlab.reuse.handover`)."""
    return plan_for_checks(as_plain(cfg)).uses_cache


def validate_cache_dir(cfg: Any) -> None:
    if not uses_cache(cfg):
        return
    reason = unwritable_reason(Path(cfg.paths.cache_dir))
    if reason:
        fail("paths.cache_dir", cfg.paths.cache_dir,
             f"a writable directory for the reuse cache ({reason}); or reuse.enabled=false")
    local = cfg.paths.get("local_cache_dir")
    if local:  # node-local copies of cached artifacts (any kind)
        reason = unwritable_reason(Path(local))
        if reason:
            fail("paths.local_cache_dir", local, f"null or a writable directory ({reason})")
