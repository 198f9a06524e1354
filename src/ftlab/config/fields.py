"""Config fields that carry their own documentation and value rules (dataclass metadata).

A schema field written ``knob(1e-3, "peak learning rate", gt=0)`` is documented where it is
declared (``docs/config.md`` is generated from these docs) and checked by
:func:`ftlab.config.values.check_values`, which reads the rules from the metadata: a field added
with ``knob`` gets its checks without anyone editing a list of checks. What a type alone implies
(a ``float`` is finite) needs no metadata at all.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

_NO_DEFAULT: Any = dataclasses.MISSING


@dataclass(frozen=True)
class Bounds:
    """A closed or open interval a number must lie in (``None``: unbounded on that side)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def allows(self, v: float) -> bool:
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            return False
        return not (self.high is not None and (v >= self.high if self.high_open else v > self.high))

    def text(self, integer: bool) -> str:
        """What is allowed, in the words every ftlab error line uses (``a number in [0, 1)``)."""
        what = "an integer" if integer else "a number"
        if integer and self.low == 0 and self.low_open and self.high is None:
            return f"{what} >= 1"
        if self.low is not None and self.high is not None:
            return (f"{what} in {'(' if self.low_open else '['}{_num(self.low)}, "
                    f"{_num(self.high)}{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{what} {'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f"{what} {'<' if self.high_open else '<='} {_num(self.high)}"
        return what


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def knob(default: Any = _NO_DEFAULT, doc: str = "", *, factory: Any = None, gt: float | None = None,
         ge: float | None = None, lt: float | None = None, le: float | None = None, nonempty: bool = False,
         length: int | None = None, items: Bounds | None = None, finite: bool = True) -> Any:
    """A dataclass field with its documentation and value rules in its metadata.

    ``gt/ge/lt/le``: bounds of a number (``None`` values are not checked: they mean "unset");
    ``nonempty``: a list that must have an item when set; ``length``: exact list length;
    ``items``: bounds of every number in a list; ``finite=False`` lets a float be inf/NaN.
    """
    if gt is not None and ge is not None or lt is not None and le is not None:
        raise ValueError("knob: give at most one lower and one upper bound")
    low, high = (gt if gt is not None else ge), (lt if lt is not None else le)
    bounds = None if low is None and high is None else Bounds(low, high, gt is not None, lt is not None)
    metadata = {"doc": doc, "bounds": bounds, "nonempty": nonempty, "length": length, "items": items,
                "finite": finite}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def rules(f: dataclasses.Field) -> dict[str, Any]:
    """A field's rules (defaults for a plain field without ``knob``: finite floats, nothing else)."""
    return {"doc": "", "bounds": None, "nonempty": False, "length": None, "items": None, "finite": True,
            **dict(f.metadata)}


def is_finite_number(v: Any) -> bool:
    return not isinstance(v, float) or math.isfinite(v)
