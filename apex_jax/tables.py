"""Results as pandas tables: the one place apex-jax imports pandas, an optional extra
(`pip install "apex-jax[pandas]"`).

Every result's `to_pandas(level=...)` builds its frame from the rows the run layer writes as CSV,
so a frame and its CSV have the same columns in the same order (numbers at full precision in the
frame, 6 significant digits in the file):

    ApexResult.to_pandas("input")        samples.csv    one row per input
    ApexResult.to_pandas("grid")         sigmas.csv     one row per σ
    ProbeSet.to_pandas()                 probes.csv     one row per probe
    SilencingResult.to_pandas("grid")    silencing.csv  one row per (site, selection, k, draw)
    SilencingResult.to_pandas("controls" | "curves" | "asymmetry")   controls.csv, curves.csv, asymmetry.csv
    AttackResult.to_pandas()             attacks.csv    one row per (attack, magnitude)
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from apex_jax.errors import InputError

__all__ = ["check_level", "frame", "frame_from_dicts", "pandas"]


def pandas():
    """The pandas module, or an ImportError that says how to install it."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("to_pandas() needs pandas, an optional dependency of apex-jax: "
                          "pip install \"apex-jax[pandas]\" (or pip install pandas)") from None
    return pd


def check_level(level: str, levels: Sequence[str], owner: str) -> None:
    """InputError unless `level` is one of `levels` (checked before pandas is imported)."""
    if level not in levels:
        raise InputError(f"{owner}.to_pandas: level must be one of {', '.join(repr(v) for v in levels)}; got {level!r}")


def _value(v: Any) -> Any:
    """numpy scalars as Python values (a column of them gets a plain numpy dtype); None (an
    undefined number, an empty CSV cell) as NaN, what pandas reads from an empty cell."""
    if v is None:
        return math.nan
    return v.item() if hasattr(v, "item") and getattr(v, "ndim", 1) == 0 else v


def frame(header: Sequence[str], rows: Sequence[Sequence[Any]]):
    """A DataFrame of rows given in `header` order."""
    pd = pandas()
    return pd.DataFrame([[_value(v) for v in r] for r in rows], columns=list(header))


def frame_from_dicts(rows: Sequence[Mapping[str, Any]]):
    """A DataFrame of dict rows; its columns are the union of their keys in first-seen order, as
    `apex_jax.fileio.write_csv` writes them (a missing key is a missing value, NaN)."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    return frame(keys, [[r.get(k) for k in keys] for r in rows])
