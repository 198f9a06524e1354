"""What a training state stands on: the keys (and, where cached, the content digests) of the
model, base, mask and init steps.

A checkpoint or cached stage holds only what training changed; the frozen weights under it are
rebuilt from their own steps. That is sound only if those steps are the ones the state was
trained on, so every state records its foundation and a resume compares it with the run's:
the first step whose key (or artifact digest) differs is named, with the config entries behind
the difference, in one line. Pure functions over plain dicts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the plan of steps is built above training; only its model/base/mask are read
    from ftlab.reuse.steps import RunSteps

#: The steps under the trainable part, root first.
KINDS = ("model", "base", "mask", "init")


def foundation(steps: RunSteps, digests: dict[str, str | None] | None = None) -> dict[str, Any]:
    """``{kind: {"key", "config", "digest"} or None}`` for model, base, mask and init. ``digests``: the
    sha256 of a cached step's artifact (``None`` when it was computed in memory)."""
    digests = digests or {}
    out: dict[str, Any] = {}
    for kind in KINDS:
        step = getattr(steps, kind)
        out[kind] = None if step is None else {"key": step.key, "kind": step.kind, "config": step.config,
                                               "digest": digests.get(kind)}
    return out


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: node}


def config_diff(old: dict[str, Any], new: dict[str, Any], limit: int = 3) -> str:
    """``"a: 1 -> 2, b: ..."`` for the first ``limit`` differing config entries."""
    a, b = _flat(old), _flat(new)
    diffs = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    more = f" (+{len(diffs) - limit} more)" if len(diffs) > limit else ""
    return ", ".join(diffs[:limit]) + more


def _describe(kind: str, rec: dict[str, Any] | None) -> str:
    return f"no {kind} step" if rec is None else f"{kind} key {rec['key'][:12]}"


def foundation_mismatch(recorded: dict[str, Any], current: dict[str, Any]) -> str | None:
    """Why a state trained on ``recorded`` cannot continue on ``current`` (``None``: it can).

    Keys are compared root first, so the step named is where the histories part; digests are
    compared only where both sides went through the cache (a rebuilt artifact that differs)."""
    for kind in KINDS:
        old, new = recorded.get(kind), current.get(kind)
        if (old is None) != (new is None):
            return f"it stands on {_describe(kind, old)}, this run on {_describe(kind, new)}"
        if old is None:
            continue
        if old["key"] != new["key"]:
            why = config_diff(old.get("config") or {}, new.get("config") or {})
            where = why or ("same settings, different parent" if kind != "model" else "same settings")
            return f"{kind} key {old['key'][:12]} != this run's {new['key'][:12]} ({where})"
        if old.get("digest") and new.get("digest") and old["digest"] != new["digest"]:
            return (f"the {kind} artifact {new['key'][:12]} was rebuilt with different content "
                    f"(sha256 {new['digest'][:12]}, the state was trained on {old['digest'][:12]})")
    return None
