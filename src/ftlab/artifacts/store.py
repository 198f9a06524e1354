"""A content-addressed artifact store on a plain directory (local disk or a shared filesystem).

Layout under the store root::

    entries/<key>/artifact/...     the step's files
    entries/<key>/config.json      kind, parent key, format version and the config the key hashes
    entries/<key>/manifest.json    size and sha256 of every file above (written last)
    entries/<key>/last_used        touched on every hit (gc's LRU order)
    locks/<key>.lock               the build lock of a key (:mod:`ftlab.artifacts.locks`)
    tmp/<key>.<token>/             builds in progress; published by one ``rename``
    trash/                         entries being deleted (renamed away first, then removed)

An entry appears only by renaming a complete staging dir, so a reader never sees half an
artifact; a hit additionally requires every file to match the manifest, so truncation or bit rot
after publication is a miss (and the next builder replaces the entry). The store knows nothing of
Lightning or of ftlab's config classes: configs are plain JSON-able dicts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftlab.artifacts.keys import canonical_json
from ftlab.artifacts.locks import HOST, KeyLock, read_state
from ftlab.artifacts.manifest import build_manifest, check_manifest
from ftlab.core.io import write_json

ARTIFACT = "artifact"
CONFIG_FILE = "config.json"
MANIFEST_FILE = "manifest.json"
USED_FILE = "last_used"
_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY.match(key):
        raise ValueError(f"invalid store key {key!r}")
    return key


@dataclass(frozen=True)
class KeyDir:
    """A key and the directory holding its artifact: published (:class:`Entry`) or being built
    (:class:`Staging`); both hand out the artifact's files at the same place."""

    key: str
    root: Path

    @property
    def artifact(self) -> Path:
        return self.root / ARTIFACT


class Entry(KeyDir):
    """A published, verified entry."""

    def info(self) -> dict[str, Any]:
        return json.loads((self.root / CONFIG_FILE).read_text())

    def size(self) -> int:
        return int(json.loads((self.root / MANIFEST_FILE).read_text()).get("total_size", 0))

    def digest(self) -> str:
        """sha256 of the artifact's content (its files' paths, sizes and checksums from the
        manifest): equal for two builds of a key exactly when they produced the same files."""
        files = json.loads((self.root / MANIFEST_FILE).read_text()).get("files", {})
        content = {k: v for k, v in files.items() if k.startswith(f"{ARTIFACT}/")}
        return hashlib.sha256(canonical_json(content).encode("utf-8")).hexdigest()

    def last_used(self) -> float:
        used = self.root / USED_FILE
        try:
            return used.stat().st_mtime
        except FileNotFoundError:
            return (self.root / CONFIG_FILE).stat().st_mtime


class Staging(KeyDir):
    """A build in progress: write the artifact's files under :attr:`artifact` (renamed into place
    as an :class:`Entry` when published)."""


@dataclass(frozen=True)
class BuildResult:
    entry: Entry
    hit: bool
    waited_s: float = 0.0
    build_s: float = 0.0


class ArtifactStore:
    def __init__(self, root: str | Path, *, heartbeat_s: float = 5.0, stale_s: float = 60.0,
                 checksums: bool = True):
        self.root = Path(root).absolute()
        self.heartbeat_s, self.stale_s = heartbeat_s, stale_s
        self.checksums = checksums

    # -- paths ----------------------------------------------------------------------------
    def entry_dir(self, key: str) -> Path:
        return self.root / "entries" / _check_key(key)

    def lock(self, key: str) -> KeyLock:
        return KeyLock(self.root / "locks" / f"{_check_key(key)}.lock", heartbeat_s=self.heartbeat_s,
                       stale_s=self.stale_s)

    # -- reading --------------------------------------------------------------------------
    def problems(self, key: str, *, checksums: bool | None = None) -> list[str]:
        """Why ``key`` is not a usable entry (empty list: it is)."""
        root = self.entry_dir(key)
        if not root.is_dir():
            return ["no entry"]
        try:
            manifest = json.loads((root / MANIFEST_FILE).read_text())
            info = json.loads((root / CONFIG_FILE).read_text())
        except FileNotFoundError as err:
            return [f"{Path(err.filename).name}: missing"]
        except ValueError:
            return ["manifest or config is not valid JSON"]
        problems = check_manifest(root, manifest, checksums=self.checksums if checksums is None else checksums)
        if CONFIG_FILE not in manifest.get("files", {}):
            problems.append(f"{CONFIG_FILE}: not covered by the manifest")
        if info.get("key") != key:
            problems.append(f"{CONFIG_FILE}: records key {info.get('key')!r}")
        return problems

    def lookup(self, key: str) -> Entry | None:
        """The entry of ``key`` if it is complete and verifies, else ``None`` (never raises for a
        damaged entry: a damaged entry is a miss)."""
        if self.problems(key):
            return None
        entry = Entry(key, self.entry_dir(key))
        self._touch(entry)
        return entry

    def _touch(self, entry: Entry) -> None:
        try:
            (entry.root / USED_FILE).touch()
        except OSError:  # a read-only shared cache still serves hits
            pass

    def entries(self) -> Iterator[Entry]:
        """Every published entry dir (not verified: see :meth:`problems`)."""
        base = self.root / "entries"
        for d in sorted(base.iterdir()) if base.is_dir() else []:
            if d.is_dir() and _KEY.match(d.name):
                yield Entry(d.name, d)

    # -- writing --------------------------------------------------------------------------
    def stage(self, key: str) -> Staging:
        d = self.root / "tmp" / f"{_check_key(key)}.{uuid.uuid4().hex[:12]}"
        (d / ARTIFACT).mkdir(parents=True)
        return Staging(key, d)

    def discard(self, staging: Staging) -> None:
        shutil.rmtree(staging.root, ignore_errors=True)

    def publish(self, staging: Staging, *, kind: str, parent: str | None, config: dict[str, Any],
                version: int, meta: dict[str, Any] | None = None) -> Entry:
        """Seal ``staging`` (config + manifest) and rename it into place. Call it while holding the
        key's lock; if a valid entry already exists (a builder that lost its lock), that one wins."""
        key = staging.key
        info = {"key": key, "kind": kind, "parent": parent, "version": int(version), "config": config,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": HOST, "pid": os.getpid(),
                "meta": meta or {}}
        canonical_json(info)  # refuse what cannot be stored faithfully before writing anything
        (staging.root / CONFIG_FILE).write_text(json.dumps(info, indent=2, sort_keys=True))
        manifest = build_manifest(staging.root)
        write_json(staging.root / MANIFEST_FILE, manifest)
        target = self.entry_dir(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            if not self.problems(key):
                self.discard(staging)
                return Entry(key, target)
            self._trash(target)
        try:
            staging.root.rename(target)
        except OSError:
            if self.problems(key):  # not a concurrent publish of the same key: a real failure
                raise
            self.discard(staging)
        entry = Entry(key, target)
        self._touch(entry)
        return entry

    def get_or_build(self, key: str, build: Callable[[Path], None], *, kind: str, parent: str | None,
                     config: dict[str, Any], version: int, meta: dict[str, Any] | None = None,
                     timeout: float | None = None) -> BuildResult:
        """The entry of ``key``, built by ``build(artifact_dir)`` at most once across every process
        that shares this store: a concurrent caller waits for the builder and then hits."""
        entry = self.lookup(key)
        if entry is not None:
            return BuildResult(entry, hit=True)
        lock = self.lock(key)
        waited = lock.acquire(timeout)
        try:
            entry = self.lookup(key)
            if entry is not None:
                return BuildResult(entry, hit=True, waited_s=waited)
            staging = self.stage(key)
            try:
                t0 = time.perf_counter()
                build(staging.artifact)
                build_s = time.perf_counter() - t0
                entry = self.publish(staging, kind=kind, parent=parent, config=config, version=version,
                                     meta={**(meta or {}), "build_s": build_s})
            except BaseException:
                self.discard(staging)
                raise
            return BuildResult(entry, hit=False, waited_s=waited, build_s=build_s)
        finally:
            lock.release()

    def import_entry(self, entry: Entry) -> Entry:
        """Copy a verified entry of another store (e.g. a shared cache into a node-local one)."""
        existing = self.lookup(entry.key)
        if existing is not None:
            return existing
        info = entry.info()
        lock = self.lock(entry.key)
        lock.acquire()
        try:
            existing = self.lookup(entry.key)
            if existing is not None:
                return existing
            staging = self.stage(entry.key)
            try:
                shutil.rmtree(staging.artifact)
                shutil.copytree(entry.artifact, staging.artifact)
                return self.publish(staging, kind=info["kind"], parent=info.get("parent"), config=info["config"],
                                    version=info["version"], meta={**info.get("meta", {}), "copied_from": str(entry.root)})
            except BaseException:
                self.discard(staging)
                raise
        finally:
            lock.release()

    # -- removing -------------------------------------------------------------------------
    def _trash(self, path: Path) -> None:
        trash = self.root / "trash"
        trash.mkdir(parents=True, exist_ok=True)
        dest = trash / f"{path.name}.{uuid.uuid4().hex[:12]}"
        try:
            path.rename(dest)
        except FileNotFoundError:
            return
        shutil.rmtree(dest, ignore_errors=True)

    def remove(self, key: str) -> bool:
        """Delete an entry unless a builder holds its lock; True if it is gone."""
        lock = self.lock(key)
        if not lock.try_acquire():
            return False
        try:
            self._trash(self.entry_dir(key))
            return True
        finally:
            lock.release()

    def _build_alive(self, key: str) -> bool:
        """Whether a builder may still be working on ``key``: its lock exists and is not held by a
        dead process of this machine (a killed builder leaves its lock file behind; a holder on
        another node counts as alive until a waiter breaks its stale lock)."""
        state = read_state(self.root / "locks" / f"{key}.lock")
        return state is not None and not KeyLock.holder_dead(state)

    def orphans(self) -> list[Path]:
        """Staging dirs whose builder is gone (their key is not locked) and leftovers in trash."""
        out = []
        tmp = self.root / "tmp"
        for d in sorted(tmp.iterdir()) if tmp.is_dir() else []:
            key = d.name.rsplit(".", 1)[0]
            if not _KEY.match(key) or not self._build_alive(key):
                out.append(d)
        trash = self.root / "trash"
        out.extend(sorted(trash.iterdir()) if trash.is_dir() else [])
        return out
