"""One runner for the run's cached artifact steps (the base model, the mask): look the key up or
build it under the key's lock, publish atomically, verify, copy to node-local disk, read it back,
and keep the record (``reuse_record.json``) — for any step kind, the same way.

A step that is not cached here (:attr:`ftlab.reuse.steps.Step.cached`: ``reuse.enabled=false``,
several devices) is computed in memory. Both paths run under :func:`preserved_rng`, and a build
is read back from the published artifact exactly as a hit is, so what follows (adapter
initialisation, training) cannot tell a build from a hit from an uncached run.

Training stages are steps too, but they are produced inside one fit (a stage is published at its
last optimiser step while the fit goes on): :mod:`ftlab.reuse.stages` runs them with the same
store, keys and locks, and hands its records to :meth:`StepRunner.record`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ftlab.reuse.rng import preserved_rng
from ftlab.reuse.steps import RunSteps, Step, as_plain, cache_dir, run_steps
from ftlab.reuse.store import ArtifactStore, BuildResult

T = TypeVar("T")


class StepRunner:
    """Executes the cached steps of one run and records what happened to each."""

    def __init__(self, cfg: Any, steps: RunSteps | None = None):
        self.c = as_plain(cfg)
        self.steps = steps if steps is not None else run_steps(self.c)
        self.store = ArtifactStore(cache_dir(self.c)) if not self.steps.why_not_cached else None
        local = (self.c.get("paths") or {}).get("local_cache_dir")
        self.local = ArtifactStore(local) if local and self.store is not None else None
        self.records: dict[str, dict[str, Any]] = {}
        self.stages: list[dict[str, Any]] = []

    def run(self, step: Step, compute: Callable[[], T], write: Callable[[T, Path], None],
            read: Callable[[Path], T], **extra: Any) -> T:
        """The product of ``step``: ``compute()`` in memory when the step is not cached; else the
        store's entry, built once by ``write(compute(), artifact_dir)``, and read by ``read``."""
        t0 = time.perf_counter()
        res: BuildResult | None = None
        if not step.cached or self.store is None:
            with preserved_rng():
                out = compute()
        else:
            def build(artifact: Path) -> None:
                with preserved_rng():
                    product = compute()
                write(product, artifact)

            res = self.store.get_or_build(step.key, build, kind=step.kind, parent=step.parent, config=step.config,
                                          version=step.version)
            entry = res.entry
            if self.local is not None:  # shared cache -> node-local copy, read from local disk from then on
                entry = self.local.import_entry(entry)
            out = read(entry.artifact)
        self.records[step.kind] = self._record(step, res, time.perf_counter() - t0, **extra)
        return out

    def _record(self, step: Step, res: BuildResult | None, runtime: float, **extra: Any) -> dict[str, Any]:
        why = self.steps.why_not_cached if not step.cached else ""
        return {"key": step.key, "parent": step.parent, "cache_hit": bool(res and res.hit),
                "runtime_s": round(runtime, 4), "waited_s": round(res.waited_s, 4) if res else 0.0,
                "cached": res is not None, "digest": res.entry.digest() if res else None,
                **({"why_not_cached": why} if why else {}), **extra}

    def digests(self) -> dict[str, str | None]:
        """Content digests of the cached artifacts this run stands on (base, mask)."""
        return {kind: (self.records.get(kind) or {}).get("digest") for kind in ("base", "mask")}

    def record(self) -> dict[str, Any]:
        """What ``reuse_record.json`` holds: every step this run executed or fetched."""
        return {"reuse_enabled": bool((self.c.get("reuse") or {}).get("enabled", True)),
                **{k: v for k, v in self.records.items()}, "stages": list(self.stages)}
