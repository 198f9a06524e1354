"""Content-addressed artifacts: a store, step keys, per-key locks, file checksums.

Every expensive step of a run (base pre-training, mask computation, each training stage, a
benchmark's scores) has a key = sha256(canonical JSON of parent key + the step's allow-listed
config + format version). The store publishes atomically, locks per key across processes and
machines, and calls an entry a hit only when its manifest verifies. Everything here takes plain
dicts and paths and imports no other ftlab package but :mod:`ftlab.core.io` and :mod:`ftlab.core.errors`,
so that data, the harness and the plan of steps (:mod:`ftlab.reuse`) can all stand on it.
"""

from ftlab.artifacts.keys import canonical_json, pick, step_key
from ftlab.artifacts.locks import KeyLock, LockTimeout
from ftlab.artifacts.store import ArtifactStore, BuildResult, Entry

__all__ = ["ArtifactStore", "BuildResult", "Entry", "KeyLock", "LockTimeout", "canonical_json", "pick", "step_key"]
