"""Step keys: sha256 of a canonical JSON over (kind, parent key, format version, picked config).

Why canonical JSON over an explicit allow-list: a key that omits something that matters gives
stale hits, a key that includes noise (log levels, output paths, object reprs) gives needless
misses. Picking named dotted paths out of a plain dict, sorting dict keys and refusing values
JSON cannot represent exactly (NaN, arbitrary objects) avoids both.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

#: Bump when the meaning of every key changes (hashing scheme, artifact layout).
KEY_SCHEME_VERSION = 1

_MISSING = object()


def _check(value: Any, path: str) -> Any:
    """Plain JSON values only; tuples become lists. Anything else has no stable text form."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path}: {value!r} has no canonical JSON form")
        return value
    if isinstance(value, Mapping):
        return {str(k): _check(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_check(v, f"{path}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{path}: {type(value).__name__} is not a plain JSON value")


def canonical_json(obj: Any) -> str:
    """One text per value: sorted keys, no whitespace, UTF-8, finite floats in repr form."""
    return json.dumps(_check(obj, "$"), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def lookup(config: Mapping[str, Any], dotted: str, default: Any = _MISSING) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``; ``default`` (or KeyError) when a part is absent."""
    node: Any = config
    for part in dotted.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif default is not _MISSING:
            return default
        else:
            raise KeyError(dotted)
    return node


def pick(config: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """``{dotted key: value}`` for each allow-listed key; an absent key is recorded as ``None`` so
    that adding it later (with a non-null value) changes the key."""
    return {k: lookup(config, k, None) for k in keys}


def step_key(kind: str, parent: str | None, config: Mapping[str, Any], version: int) -> str:
    """The content address of a step: hex sha256 over its kind, its parent's key, its format
    version and the config values it depends on."""
    payload = {"scheme": KEY_SCHEME_VERSION, "kind": kind, "parent": parent, "version": int(version),
               "config": dict(config)}
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()
