"""The one runner of a run's steps: look a step's key up or build it under the key's lock,
publish atomically, verify, copy to node-local disk, and keep the record (``reuse_record.json``)
— for any step kind, the same way.

Two shapes of step go through it:

- artifact steps (the base model, the mask): :meth:`StepRunner.run` computes the product, writes it
  into the store and reads it back, so what follows cannot tell a build from a hit;
- training stages, produced inside one fit (each published at its last optimiser step while the
  fit goes on): :class:`ftlab.reuse.stages.StageRun` drives them with this runner's primitives
  (:meth:`~StepRunner.find`, :meth:`~StepRunner.lock`, :meth:`~StepRunner.staging`,
  :meth:`~StepRunner.publish`, :meth:`~StepRunner.local_copy`) and records them here.

A step that is not cached here (:attr:`ftlab.reuse.steps.Step.cached`: ``reuse.enabled=false``,
several devices) is computed in memory; a run with no cached step holds no store. Artifact steps run under
:func:`preserved_rng`, so the RNG stream that follows is the same with or without the cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from ftlab.artifacts.locks import KeyLock
from ftlab.artifacts.store import ArtifactStore, BuildResult, Entry, Staging
from ftlab.reuse.handover import plan_for_run
from ftlab.reuse.steps import RunSteps, Step, as_plain, cache_dir
from ftlab.training.rng import preserved_rng

T = TypeVar("T")


@dataclass
class StageRecord:
    """One training stage of the record (``stage_log.csv``'s rows). A run without
    ``schedule=stages`` records its whole training as one uncached stage with key ``""``."""

    stage_idx: int  # 1-based, as in the stage tree
    iters: int
    lr: float
    key: str
    cache_hit: bool
    runtime_s: float
    name: str | None = None
    parent: str | None = None


class StepRunner:
    """Executes the steps of one run's plan (:func:`ftlab.reuse.steps.run_steps`: the one the
    composition checks computed for this config, :mod:`ftlab.reuse.handover`, else computed here)
    and records what happened to each. The run config is converted to its plain form here, once
    per run: whoever needs the plan or the plain config gets them from the runner."""

    def __init__(self, cfg: Any, steps: RunSteps | None = None):
        self.c = as_plain(cfg)
        self.steps = steps if steps is not None else plan_for_run(self.c)
        self.store = ArtifactStore(cache_dir(self.c)) if self.steps.uses_cache else None
        local = (self.c.get("paths") or {}).get("local_cache_dir")
        self.local = ArtifactStore(local) if local and self.store is not None else None
        self.records: dict[str, dict[str, Any]] = {}
        self.stages: list[dict[str, Any]] = []

    # -- artifact steps ---------------------------------------------------------------------
    def run(self, step: Step, compute: Callable[[], T], write: Callable[[T, Path], None],
            read: Callable[[Path], T], **extra: Any) -> T:
        """The product of ``step``: ``compute()`` in memory when the step is not cached; else the
        store's entry, built once by ``write(compute(), artifact_dir)``, and read by ``read``."""
        t0 = time.perf_counter()
        res: BuildResult | None = None
        if not self.caches(step):
            with preserved_rng():
                out = compute()
        else:
            def build(artifact: Path) -> None:
                with preserved_rng():
                    product = compute()
                write(product, artifact)

            res = self.store.get_or_build(step.key, build, kind=step.kind, parent=step.parent, config=step.config,
                                          version=step.version)
            out = read(self.local_copy(res.entry).artifact)
        self.records[step.kind] = self._record(step, res, time.perf_counter() - t0, **extra)
        return out

    def _record(self, step: Step, res: BuildResult | None, runtime: float, **extra: Any) -> dict[str, Any]:
        why = self.steps.why_not_cached if not step.cached else ""
        return {"key": step.key, "parent": step.parent, "cache_hit": bool(res and res.hit),
                "runtime_s": round(runtime, 4), "waited_s": round(res.waited_s, 4) if res else 0.0,
                "cached": res is not None, "digest": res.entry.digest() if res else None,
                **({"why_not_cached": why} if why else {}), **extra}

    # -- the store's primitives, for steps built inside a fit (training stages) -------------
    def caches(self, step: Step) -> bool:
        """``step`` goes through the store in this run."""
        return step.cached and self.store is not None

    def find(self, step: Step) -> Entry | None:
        """The verified entry of ``step`` in the shared store (no copy yet)."""
        return self.store.lookup(step.key)

    def local_copy(self, entry: Entry) -> Entry:
        """The entry to read from: its node-local copy when ``paths.local_cache_dir`` is set."""
        return self.local.import_entry(entry) if self.local is not None else entry

    def lock(self, step: Step) -> KeyLock:
        """The build lock of ``step``'s key (not yet acquired)."""
        return self.store.lock(step.key)

    def staging(self, step: Step) -> Staging:
        """A private dir to write ``step``'s artifact into before :meth:`publish`."""
        return self.store.stage(step.key)

    def publish(self, step: Step, staging: Staging, meta: dict[str, Any]) -> Entry:
        """Make a staged artifact visible atomically (with its manifest); discarded on failure."""
        try:
            return self.store.publish(staging, kind=step.kind, parent=step.parent, config=step.config,
                                      version=step.version, meta=meta)
        except BaseException:
            self.discard(staging)
            raise

    def discard(self, staging: Staging) -> None:
        self.store.discard(staging)

    # -- the record -------------------------------------------------------------------------
    def record_stages(self, stages: list[StageRecord]) -> None:
        self.stages = [asdict(s) for s in stages]

    def record_training(self, iters: int, lr: float, runtime_s: float) -> None:
        """A run without stages: its training as one uncached stage (sweeps of any schedule get a
        stage log)."""
        self.record_stages([StageRecord(1, iters, lr, "", False, round(runtime_s, 4))])

    def digests(self) -> dict[str, str | None]:
        """Content digests of the cached artifacts this run stands on (base, mask, init)."""
        return {kind: (self.records.get(kind) or {}).get("digest") for kind in ("base", "mask", "init")}

    def record(self) -> dict[str, Any]:
        """What ``reuse_record.json`` holds: every step this run executed or fetched."""
        return {"reuse_enabled": bool((self.c.get("reuse") or {}).get("enabled", True)),
                **{k: v for k, v in self.records.items()}, "stages": list(self.stages)}
