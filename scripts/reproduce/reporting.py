"""Formatting helpers shared by the claims' report sections (`<claim>.section`).

Each claim module renders its own README section from its `summary.json`; these helpers keep
numbers, intervals and verdict comparisons written the same way in every section.
"""

from __future__ import annotations

from typing import Iterable

# Prose for each escape-σ estimator id a summary can name (`"escape_sigma_estimator"`).
ESCAPE_SIGMA_ESTIMATORS = {
    "log_sigma_interpolation": ("log-σ interpolation between the last grid σ at/above and the first below the "
                                "threshold"),
}


def num(x: float | str | None, nd: int = 3) -> str:
    """A number with `nd` decimals; "n/a" for None or NaN (a statistic that could not be computed,
    or was not measured in that run); strings (e.g. "inf" from strict JSON) pass through."""
    if x is None or (isinstance(x, float) and x != x):
        return "n/a"
    if isinstance(x, str):
        return x
    return f"{x:.{nd}f}"


def ci(d: dict, key: str, nd: int = 3) -> str:
    """`value [lo, hi]` of an interval result `d` whose point estimate is `d[key]`."""
    return f"{num(d[key], nd)} [{num(d['lo'], nd)}, {num(d['hi'], nd)}]"


def above(d: dict, bound: float) -> bool:
    """Whether the interval `d` lies entirely above `bound` (False if it is undefined)."""
    return d.get("lo") is not None and d["lo"] > bound


def below(d: dict, bound: float) -> bool:
    """Whether the interval `d` lies entirely below `bound` (False if it is undefined)."""
    return d.get("hi") is not None and d["hi"] < bound


def span(values: Iterable[float]) -> str:
    """`min–max` of `values`."""
    values = list(values)
    return f"{num(min(values))}–{num(max(values))}"


def estimator_sentence(summary: dict) -> str:
    """"Escape σ: <estimator>. " when the summary names its escape-σ estimator, else "" (summaries
    written before the field existed)."""
    key = summary.get("escape_sigma_estimator")
    if key is None:
        return ""
    return f"Escape σ: {ESCAPE_SIGMA_ESTIMATORS.get(key, key)}. "
