"""Every value of a composed config against the rules its schema field declares
(:func:`ftlab.config.fields.knob` metadata), before anything is built or written.

The walk covers every dataclass node (adapter schemas registered by the adapter modules, stage
lists, nested groups) and every free-form dict under them (``model.config``, ``task.options``):
a float anywhere must be finite (``schedule.lr=inf`` or a NaN learning rate would otherwise reach
torch and end in a traceback, or silently train nothing), a number must lie in its field's bounds,
a list its field marks non-empty must have an item.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from ftlab.config.fields import is_finite_number, rules
from ftlab.core.errors import fail


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _check_finite(key: str, value: Any) -> None:
    """Floats inside free-form containers (``model.config``, ``sparsity.owl``) must be finite too."""
    if isinstance(value, DictConfig):
        for k in value:
            _check_finite(f"{key}.{k}", value[k])
    elif isinstance(value, ListConfig):
        for i, item in enumerate(value):
            _check_finite(f"{key}[{i}]", item)
    elif not is_finite_number(value):
        fail(key, value, "a finite number")


def _check_number(key: str, value: Any, r: dict[str, Any]) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    bounds = r["bounds"]
    allowed = bounds.text(isinstance(value, int) and not isinstance(value, bool)) if bounds else "a number"
    if r["finite"] and not is_finite_number(value):
        fail(key, value, f"a finite number{allowed.removeprefix('a number')}" if bounds else "a finite number")
    if bounds is not None and not bounds.allows(value):
        fail(key, value, allowed)


def _check_list(key: str, value: ListConfig, r: dict[str, Any]) -> None:
    if r["nonempty"] and len(value) == 0:
        fail(key, [], "a non-empty list, or null for the default")
    if r["length"] is not None and len(value) != r["length"]:
        fail(key, _plain(value), f"a list of {r['length']} items")
    if r["items"] is not None:
        for i, item in enumerate(value):
            if isinstance(item, int | float) and not isinstance(item, bool) and (
                    not is_finite_number(item) or not r["items"].allows(item)):
                fail(f"{key}[{i}]", item, r["items"].text(False))


def check_node(node: DictConfig, prefix: str = "") -> None:
    """Raise :class:`ftlab.core.errors.ConfigError` on the first value its field's rules refuse."""
    cls = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(cls):
        _check_finite(prefix.rstrip("."), node)
        return
    for f in dataclasses.fields(cls):
        if f.name not in node or OmegaConf.is_missing(node, f.name):
            continue
        key, value, r = f"{prefix}{f.name}", node[f.name], rules(f)
        if isinstance(value, DictConfig):
            check_node(value, f"{key}.")
        elif isinstance(value, ListConfig):
            _check_list(key, value, r)
            for i, item in enumerate(value):
                if isinstance(item, DictConfig):
                    check_node(item, f"{key}[{i}].")
                elif r["finite"]:
                    _check_finite(f"{key}[{i}]", item)
        elif value is not None:
            _check_number(key, value, r)


def check_values(cfg: Any) -> None:
    """Validator: the whole run config (its ``hydra`` node, Hydra's own, is no schema field)."""
    check_node(cfg)
