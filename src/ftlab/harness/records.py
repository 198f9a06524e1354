"""lm-eval's result dict -> the metric records ftlab writes (pure functions).

lm-eval keys a task's results ``"<metric>,<filter>"`` (``"acc,none"``,
``"exact_match,strict-match"``) with ``"<metric>_stderr,<filter>"`` beside each. ftlab names a
*variant* ``<metric>`` when the filter is lm-eval's ``none`` and ``<metric>,<filter>`` otherwise,
so ``acc``, ``acc_norm``, ``exact_match,strict-match`` and ``exact_match,flexible-extract``.
"""

from __future__ import annotations

import math
from typing import Any

#: task -> (headline key in metrics.json, the variant it reports). Keys keep the names of ftlab's
#: own scorers; README "Real benchmark tasks" says which variant each one is.
HEADLINE: dict[str, tuple[str, str]] = {
    "boolq": ("eval_accuracy", "acc"),
    "hellaswag": ("eval_accuracy", "acc_norm"),
    "gsm8k": ("eval_exact_match", "exact_match,strict-match"),
}


def variant_name(result_key: str) -> tuple[str, str] | None:
    """``"acc,none"`` -> ``("acc", "acc")``; ``"exact_match,strict-match"`` -> (that, ``"exact_match"``);
    ``None`` for stderr entries and lm-eval's bookkeeping (``alias``, ``sample_len``...)."""
    metric, sep, filt = result_key.partition(",")
    if not sep or metric.endswith("_stderr"):
        return None
    return (metric if filt == "none" else result_key), metric


def _number(value: Any) -> float | None:
    """lm-eval writes ``"N/A"`` for a stderr it did not compute (e.g. one example)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def metric_records(results: dict[str, Any], n: int, n_shot: int) -> list[dict[str, Any]]:
    """One record per metric variant of one task's ``results`` entry."""
    out = []
    for key, value in results.items():
        names = variant_name(key)
        if names is None or _number(value) is None:
            continue
        variant, metric = names
        stderr_key = key.replace(metric, f"{metric}_stderr", 1)
        out.append({"variant": variant, "value": float(value), "stderr": _number(results.get(stderr_key)),
                    "n": int(n), "n_shot": int(n_shot)})
    return sorted(out, key=lambda r: r["variant"])


def headline(task: str, records: list[dict[str, Any]], variant: str | None = None) -> tuple[dict[str, float], str]:
    """``({eval_accuracy|eval_exact_match: value}, variant)`` of the task's headline variant (or
    of ``variant``)."""
    key, default = HEADLINE[task]
    want = variant or default
    for rec in records:
        if rec["variant"] == want:
            return {key: rec["value"]}, want
    raise KeyError(f"lm-eval reported no {want!r} for {task} (got {[r['variant'] for r in records]})")


__all__ = ["HEADLINE", "headline", "metric_records", "variant_name"]
