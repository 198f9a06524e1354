"""Typed references to config fields: a dotted key (``"model.name_or_path"``) written as an
attribute of its schema section (``MODEL.name_or_path``), checked against the dataclass when the
reference is made.

Why: code that names config keys as strings (the step keys' allow-lists, :mod:`ftlab.reuse.steps`)
keeps working after a field is renamed, silently reading ``None``. A reference made through
:class:`Section` fails at import instead (``AttributeError`` naming the schema and its fields), and
:func:`check_key` does the same for keys that arrive as strings (a registered spec's
``config_keys``), so a typo in a plugin's spec fails in a unit test, not as a stale cache hit.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any

from ftlab.config.schema import RunConfig


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _section_cls(hint: Any) -> type | None:
    """The dataclass a field holds (``X`` or ``X | None``), else None (a leaf or a free-form node)."""
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return hint
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return _section_cls(args[0])
    return None


def _free_form(hint: Any) -> bool:
    """A node whose keys the schema does not declare (``dict[str, Any]``, ``Any``): any sub-key is valid."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (dict, Mapping) or hint is dict:
        return True
    return any(_free_form(a) for a in typing.get_args(hint) if origin is not list and a is not type(None))


class Section:
    """One schema section at a dotted path; an attribute is a checked field reference: the dotted key
    of a leaf field, or the :class:`Section` of a nested dataclass (its :attr:`key` names it whole).
    ``classes``: several dataclasses where the section's schema is chosen per run (the adapter
    families); a field of any of them is valid."""

    def __init__(self, path: str, *classes: type):
        self._path = path
        self._classes = classes

    @property
    def key(self) -> str:
        """The dotted key of the whole section."""
        return self._path

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        for cls in self._classes:
            if name in _hints(cls):
                nested = _section_cls(_hints(cls)[name])
                path = f"{self._path}.{name}" if self._path else name
                return Section(path, nested) if nested is not None else path
        fields = sorted({f for cls in self._classes for f in _hints(cls)})
        names = "/".join(c.__name__ for c in self._classes)
        raise AttributeError(f"{names} has no field {name!r} (its fields: {', '.join(fields)})")

    def __repr__(self) -> str:
        return f"Section({self._path!r}, {', '.join(c.__name__ for c in self._classes)})"


#: The whole run config: ``RUN.seed``, ``RUN.model`` (a :class:`Section`), ``RUN.adapter`` (free-form here).
RUN = Section("", RunConfig)


def check_key(dotted: str, sections: Mapping[str, tuple[type, ...]] | None = None) -> str:
    """``dotted`` when it names a field of :class:`RunConfig` (or a key inside a free-form field such
    as ``sparsity.options``), else ``ValueError`` naming the part that does not exist.
    ``sections``: schemas for sections the run config leaves free-form (``{"adapter": (LoraConfig,
    ...)}``)."""
    head, *rest = dotted.split(".")
    classes: tuple[type, ...] = (RunConfig,)
    parts = dotted.split(".")
    if sections and head in sections and rest:
        classes, parts = tuple(sections[head]), rest
    for i, part in enumerate(parts):
        hint = next((_hints(c)[part] for c in classes if part in _hints(c)), None)
        if hint is None:
            fields = sorted({f for c in classes for f in _hints(c)})
            raise ValueError(f"config key {dotted!r}: {part!r} is not a field of "
                             f"{'/'.join(c.__name__ for c in classes)} (its fields: {', '.join(fields)})")
        nested = _section_cls(hint)
        if nested is not None:
            classes = (nested,)
        elif i < len(parts) - 1 and not _free_form(hint):
            raise ValueError(f"config key {dotted!r}: {part!r} is a leaf, it has no key {parts[i + 1]!r}")
        elif i < len(parts) - 1:
            return dotted  # inside a free-form node: the schema does not declare its keys
    return dotted
