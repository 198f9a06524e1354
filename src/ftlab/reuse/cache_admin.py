"""The reuse cache's upkeep behind ``python -m ftlab.cache``: list entries (or a run's plan of steps
with each step's entry), verify them against their manifests, and remove old or least recently
used ones and builds abandoned by crashed jobs. Kept out of the command so that the command only
parses arguments; each ``cmd_*`` prints its report and returns the exit status."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from ftlab.artifacts.store import ArtifactStore
from ftlab.config.schema import PathsConfig
from ftlab.core.errors import ConfigError

_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, flags=re.IGNORECASE)
    if not m:
        raise ConfigError("--max-size", text, "a size such as 500M, 20G or 1048576 (bytes)")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def parse_date(text: str) -> float:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError as err:
        raise ConfigError("--unused-since", text, "an ISO date such as 2026-01-31 or 2026-01-31T12:00") from err


def human(n: float) -> str:
    for unit in ("B", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}T"


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def describe(info: dict[str, Any]) -> str:
    """One-line gist of an entry's config."""
    cfg = info.get("config", {})
    kind = info.get("kind")
    if kind == "stage":
        return ", ".join(f"{k}={v}" for k, v in sorted(cfg.items()) if v is not None)
    if kind == "base":
        return f"{cfg.get('base.steps')} steps, lr={cfg.get('base.lr')}, task={cfg.get('task.name')}"
    if kind == "mask":
        return f"{cfg.get('sparsity.method')} {cfg.get('sparsity.level')} ({cfg.get('derived.importance')})"
    return ""


def state_facts(entry) -> dict[str, Any] | None:
    """A stage entry's trainable-only state (``ftlab.training.state``): its size, how many
    tensor values it holds and leaves out, and the keys of the steps it stands on."""
    try:
        meta = json.loads((entry.artifact / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    info = meta.get("ftlab_state") if isinstance(meta, dict) else None
    if not isinstance(info, dict):
        return None
    trainable = sum(math.prod(shape) for shape in (info.get("trainable") or {}).values())
    found = info.get("foundation") or {}
    return {"state_bytes": meta.get("state_bytes"), "trainable_params": trainable,
            "frozen_params_not_stored": info.get("frozen_params"),
            "stands_on": {k: (v or {}).get("key") for k, v in found.items()}}


def describe_state(facts: dict[str, Any]) -> str:
    on = ", ".join(f"{k} {v[:12]}" for k, v in facts["stands_on"].items() if v)
    frozen = facts.get("frozen_params_not_stored")
    return (f"state {human(facts['state_bytes'] or 0)}: {facts['trainable_params']:,} trainable values"
            + (f" ({frozen:,} frozen ones rebuilt, not stored)" if frozen is not None else "") + f"; on {on}")


def open_store(path: Path):
    if not path.is_dir():
        raise ConfigError("--cache-dir", str(path), "an existing cache directory (paths.cache_dir of the runs)")
    return ArtifactStore(path)


def cmd_ls(store, args) -> int:
    rows = []
    for entry in store.entries():
        try:
            info, size = entry.info(), entry.size()
        except (OSError, ValueError):
            info, size = {"kind": "?", "config": {}}, 0
        rows.append({"key": entry.key, "kind": info.get("kind"), "size": size, "created": info.get("created"),
                     "last_used": _when(entry.last_used()), "parent": info.get("parent"), "config": info.get("config"),
                     **({"state": state_facts(entry)} if info.get("kind") == "stage" else {})})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        info = {"kind": row["kind"], "config": row["config"] or {}}
        print(f"{row['key'][:16]}  {row['kind'] or '?':<6} {human(row['size']):>8}  used {row['last_used']}  "
              f"{describe(info)}")
        if args.verbose:
            print(f"    parent: {row['parent']}")
            if row.get("state"):
                print(f"    {describe_state(row['state'])}")
            for k, v in sorted((row["config"] or {}).items()):
                print(f"    {k}: {json.dumps(v)}")
    print(f"{len(rows)} entries, {human(sum(r['size'] for r in rows))} in {store.root}")
    return 0


def cmd_ls_run(store, args, steps) -> int:
    """``ls --run``: each step of the run's plan (``steps``) with its cache entry: present (size,
    last use), missing (the run builds it), or none (the step is not cached here, and why)."""
    rows = []
    for label, step in steps.labelled():
        entry = store.lookup(step.key) if step.cached else None
        rows.append({"step": label, "key": step.key, "kind": step.kind, "cached": steps.cached_text(step),
                     "in_cache": entry is not None, "size": entry.size() if entry else None,
                     "last_used": _when(entry.last_used()) if entry else None,
                     **({"state": state_facts(entry)} if entry is not None and step.kind == "stage" else {})})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        where = (f"in cache {human(row['size']):>8}, used {row['last_used']}" if row["in_cache"]
                 else "missing (the run builds it)" if row["cached"] == "yes" else f"not cached: {row['cached']}")
        print(f"{row['step']:<9} {row['key'][:16]}  {where}")
        if args.verbose and row.get("state"):
            print(f"    {describe_state(row['state'])}")
    print(f"{sum(r['in_cache'] for r in rows)} of {sum(r['cached'] == 'yes' for r in rows)} cached steps "
          f"in {store.root}")
    return 0


def cmd_verify(store, args) -> int:
    damaged = 0
    for entry in store.entries():
        problems = store.problems(entry.key, checksums=True)
        if not problems:
            print(f"ok       {entry.key}")
            continue
        damaged += 1
        removed = args.delete and store.remove(entry.key)
        print(f"DAMAGED  {entry.key}: {'; '.join(problems)}{' (removed)' if removed else ''}")
        damaged -= bool(removed)
    # builds whose builder died (killed job, full disk): no live process holds their key's lock
    orphans = 0
    for path in store.orphans():
        if args.delete:
            shutil.rmtree(path, ignore_errors=True)
        orphans += not args.delete
        print(f"ORPHAN   {path.relative_to(store.root)}: an abandoned build (no live builder holds its lock)"
              f"{' (removed)' if args.delete else '; `gc` or `verify --delete` removes it'}")
    print(f"{damaged} damaged entr{'y' if damaged == 1 else 'ies'} left, {orphans} orphaned build dir"
          f"{'' if orphans == 1 else 's'} left")
    return 1 if damaged or orphans else 0


def cmd_gc(store, args) -> int:
    cutoff = parse_date(args.unused_since) if args.unused_since else None
    budget = parse_size(args.max_size) if args.max_size is not None else None
    used, sizes = {}, {}
    entries = list(store.entries())
    for e in entries:
        used[e.key] = e.last_used()
        try:
            sizes[e.key] = e.size()
        except (OSError, ValueError):
            sizes[e.key] = 0
    entries.sort(key=lambda e: used[e.key])  # least recently used first
    total = sum(sizes.values())
    doomed = [e for e in entries if cutoff is not None and used[e.key] < cutoff]
    left = total - sum(sizes[e.key] for e in doomed)
    for e in entries:
        if budget is None or left <= budget:
            break
        if e not in doomed:
            doomed.append(e)
            left -= sizes[e.key]
    freed = 0
    for e in doomed:
        if args.dry_run or store.remove(e.key):
            freed += sizes[e.key]
            print(f"{'would remove' if args.dry_run else 'removed'} {e.key} ({human(sizes[e.key])}, used {_when(used[e.key])})")
        else:
            print(f"skipped {e.key}: a build holds its lock")
    for path in store.orphans():
        print(f"{'would remove' if args.dry_run else 'removed'} abandoned {path.relative_to(store.root)}")
        if not args.dry_run:
            shutil.rmtree(path, ignore_errors=True)
    print(f"{'would free' if args.dry_run else 'freed'} {human(freed)}; {human(total - freed)} in {store.root}")
    return 0


def default_cache_dir(env: dict[str, str] | None = None) -> Path:
    """What runs use when ``paths.cache_dir`` is not overridden: ``$FTLAB_CACHE_DIR`` (conf/config.yaml
    reads it), else the schema's default."""
    env = os.environ if env is None else env
    return Path(env.get("FTLAB_CACHE_DIR") or PathsConfig().cache_dir)
