"""lm-eval's result dict -> the metric records ftlab writes (pure functions).

lm-eval keys a task's results ``"<metric>,<filter>"`` (``"acc,none"``,
``"exact_match,strict-match"``) with ``"<metric>_stderr,<filter>"`` beside each. ftlab names a
*variant* ``<metric>`` when the filter is lm-eval's ``none`` and ``<metric>,<filter>`` otherwise,
so ``acc``, ``acc_norm``, ``exact_match,strict-match`` and ``exact_match,flexible-extract``.
"""

from __future__ import annotations

import math
from typing import Any


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


def default_variant(cfg: dict[str, Any]) -> str:
    """The variant a task's config lists first: its first metric under its first filter (lm-eval's
    ``none`` when it has no ``filter_list``) - ``acc`` for PIQA, ``exact_match,strict-match`` for
    GSM8K, ``word_perplexity`` for WikiText."""
    metric = (cfg.get("metric_list") or [{"metric": "acc"}])[0]["metric"]
    filters = cfg.get("filter_list") or []
    return metric if not filters else f"{metric},{filters[0]['name']}"


def pick(records: list[dict[str, Any]], variant: str, task: str) -> dict[str, Any]:
    """The record of ``variant``."""
    for rec in records:
        if rec["variant"] == variant:
            return rec
    raise KeyError(f"lm-eval reported no {variant!r} for {task} (got {[r['variant'] for r in records]})")


__all__ = ["default_variant", "metric_records", "pick", "variant_name"]
