"""Compact reprs of result objects, in the style of pandas / xarray: shapes and headline numbers,
never whole arrays.

    >>> compact_repr("ApexResult", inputs=32, sigmas=span([0.02, 0.5, 4]), clean_accuracy=0.90625)
    'ApexResult(inputs=32, sigmas=3 [0.02 … 4], clean_accuracy=0.906)'
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = ["compact_repr", "number", "span", "names"]


def number(x: Any) -> str:
    """A number in at most 3 significant digits (ints as they are; None, nan and inf spelled out)."""
    if x is None:
        return "None"
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return f"{x:.3g}"


class _Raw(str):
    """Text shown as it is (not quoted) inside `compact_repr`."""

    def __repr__(self) -> str:
        return str(self)


def span(values: Sequence[Any]) -> _Raw:
    """`n [first … last]` of a sequence of numbers (`n [v]` for one, `0` for none)."""
    v = np.asarray(values).ravel()
    if v.size == 0:
        return _Raw("0")
    if v.size == 1:
        return _Raw(f"1 [{number(v[0])}]")
    return _Raw(f"{v.size} [{number(v[0])} … {number(v[-1])}]")


def names(items: Sequence[str], show: int = 2) -> _Raw:
    """`n [a, b, …]` of a list of names, showing the first `show`."""
    items = list(items)
    shown = ", ".join(items[:show]) + (", …" if len(items) > show else "")
    return _Raw(f"{len(items)} [{shown}]")


def compact_repr(name: str, **fields: Any) -> str:
    """`name(k=v, ...)`: numbers via `number`, strings quoted, `span`/`names` text as it is."""
    parts = []
    for k, v in fields.items():
        if isinstance(v, _Raw):
            s = str(v)
        elif isinstance(v, str):
            s = repr(v)
        elif v is None or isinstance(v, (bool, int, float, np.number, np.bool_)):
            s = number(v)
        elif isinstance(v, tuple) and len(v) and all(isinstance(i, (int, np.integer)) for i in v):
            s = "×".join(str(int(i)) for i in v)  # a shape
        else:
            s = repr(v)
        parts.append(f"{k}={s}")
    return f"{name}({', '.join(parts)})"
