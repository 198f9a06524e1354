"""Compute reuse: a content-addressed artifact store, step keys, per-key locks, the stage tree.

Every expensive step of a run (base pre-training, mask computation, each training stage) has a
key = sha256(canonical JSON of parent key + the step's allow-listed config + format version).
The store publishes atomically, locks per key across processes and machines, and calls an entry
a hit only when its manifest verifies. The store and keys take plain dicts; the Lightning and
config glue lives in :mod:`ftlab.reuse.stages`, :mod:`ftlab.reuse.cached` and
:mod:`ftlab.reuse.steps`.
"""

from ftlab.reuse.keys import canonical_json, pick, step_key
from ftlab.reuse.locks import KeyLock, LockTimeout
from ftlab.reuse.store import ArtifactStore, BuildResult, Entry

__all__ = ["ArtifactStore", "BuildResult", "Entry", "KeyLock", "LockTimeout", "canonical_json", "pick", "step_key"]
