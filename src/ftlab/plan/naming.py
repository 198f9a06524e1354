"""Readable run names: ``<model>-<adapter>`` plus one short tag per swept key.

``model=mistral_7b adapter=sora adapter.sparse_lambda=0.3,1`` -> ``mistral_7b-sora-l0.3``,
``mistral_7b-sora-l1``. Only keys whose value differs between the sweep's jobs get a tag, so a
2x2 sweep of models and ranks reads ``tiny_llama-lora-r4``. Names are unique within a plan.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

#: override key -> tag prefix (a group choice such as ``sparsity=nm`` is tagged by its value)
ABBREVIATIONS = {
    "adapter.r": "r", "adapter.alpha": "a", "adapter.dropout": "do", "adapter.sparse_lambda": "l",
    "adapter.sparse_lambda_2": "xi", "sparsity.level": "s", "sparsity.importance": "",
    "sparsity.method": "", "sparsity.mode": "", "schedule.lr": "lr", "schedule.warmup_steps": "wu",
    "train.batch_size": "bs", "train.max_steps": "steps", "train.accumulate_grad_batches": "acc",
    "seed": "seed", "schedule.stages": "", "base.steps": "base", "hardware.devices": "dev", "task.max_length": "len",
}
#: values shortened in names
VALUE_ABBREVIATIONS = {"sparse_to_dense": "s2d", "sparse_to_sparse": "s2s"}
#: keys that change the base model (controls are named by these only)
BASE_PREFIXES = ("model", "base", "task", "seed")
_SAFE = re.compile(r"[^A-Za-z0-9_.+]+")


def split_override(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def fmt_value(value: str) -> str:
    """Compact, filesystem-safe form of an override value (``3e-4`` stays, ``0.30`` -> ``0.3``)."""
    text = value.strip().strip("'\"")
    text = VALUE_ABBREVIATIONS.get(text, text)
    try:
        number = float(text)
    except ValueError:
        return _SAFE.sub("_", text).strip("_") or "x"
    if number.is_integer() and "e" not in text.lower():
        return str(int(number))
    return format(number, "g")


#: longest value text kept in a name; longer ones keep a prefix and a short hash
MAX_VALUE_CHARS = 32
_STAGE = re.compile(r"iters\s*:\s*([^,}\]]+)\s*,\s*lr\s*:\s*([^,}\]]+)")


def stages_value(value: str) -> str | None:
    """``[{iters:100,lr:1e-3},{iters:50,lr:1e-4}]`` -> ``100x0.001_50x0.0001``."""
    pairs = _STAGE.findall(value)
    return "_".join(f"{fmt_value(i)}x{fmt_value(lr)}" for i, lr in pairs) if pairs else None


def tag(key: str, value: str) -> str:
    prefix = ABBREVIATIONS.get(key, "" if "." not in key else key.rsplit(".", 1)[-1])
    text = (stages_value(value) if key == "schedule.stages" else None) or fmt_value(value)
    if len(text) > MAX_VALUE_CHARS:
        text = text[:MAX_VALUE_CHARS - 7] + "~" + hashlib.sha256(value.encode()).hexdigest()[:6]
    return f"{prefix}{text}"


def swept_keys(jobs: list[list[str]]) -> list[str]:
    """Override keys whose value is not the same in every job, in first-seen order."""
    values: dict[str, set[str]] = {}
    order: list[str] = []
    for job in jobs:
        seen = dict(split_override(o) for o in job)
        for k in seen:
            if k not in values:
                values[k] = set()
                order.append(k)
        for k in order:
            values[k].add(seen.get(k, "<unset>"))
    return [k for k in order if len(values[k]) > 1]


def affects_base(key: str) -> bool:
    return key.split(".", 1)[0] in BASE_PREFIXES


def run_name(model: str, adapter: str, job: list[str], swept: list[str]) -> str:
    values = dict(split_override(o) for o in job)
    parts = [fmt_value(model), fmt_value(adapter)]
    for k in swept:
        if k in ("model", "adapter") or k not in values:
            continue
        parts.append(tag(k, values[k]))
    return "-".join(parts)


def unique(names: list[str]) -> list[str]:
    """Suffix repeats with ``-2``, ``-3``... (first occurrence keeps the plain name)."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return out


def name_runs(jobs: list[list[str]], cfgs: list[Any], controls: list[tuple[list[str], Any]]) -> list[str]:
    """Names of the jobs, then of the control runs (tagged only by base-model keys)."""
    swept = swept_keys(jobs)
    names = [run_name(c.model.name, c.adapter.name, j, swept) for j, c in zip(jobs, cfgs)]
    base_swept = [k for k in swept if affects_base(k)]
    names += [run_name(c.model.name, "control", j, base_swept) for j, c in controls]
    return unique(names)
