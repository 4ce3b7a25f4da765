"""Grid specs of the command line and the library: APEX's σ grid and SYNAPSE's k% levels.

A grid holds each value once: a repeated σ or k would repeat a CSV column or row and count one
setting twice, so repeats are an error (never silently merged), as are values outside the range.

    parse_sigmas("logspace:0.01:4:16")   # 16 log-spaced σ from 0.01 to 4
    parse_sigmas("0.1,0.5,1")            # a list (sorted ascending)
    parse_k("synapse")                   # the 18 reference levels (K_LEVELS)
    parse_k("5,10,20")                   # percentages in (0, 100]
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from apex_jax.errors import InputError

# The SYNAPSE reference protocol's neuron levels, in percent of a layer's width (DESIGN.md).
K_LEVELS = (2.5, 5, 7.5, 10, 12.5, 15, 17.5, 20, 25, 30, 35, 40, 45, 50, 65, 75, 80, 95)


def _repeats(values: Sequence[float]) -> list[float]:
    seen, rep = set(), []
    for v in values:
        if v in seen and v not in rep:
            rep.append(v)
        seen.add(v)
    return rep


def parse_sigmas(spec: str) -> np.ndarray:
    """σ grid from `logspace:LO:HI:N` (N log-spaced values, 0 < LO < HI) or a list `0.1,0.5,1`.

    Returns:
        float32 [G], sorted ascending (see `check_sigmas`).

    Raises:
        ValueError: a malformed spec, LO <= 0, LO >= HI, N < 1, or an invalid list.
    """
    spec = str(spec).strip()
    if spec.startswith("logspace:"):
        usage = f"bad sigma spec {spec!r}; expected logspace:LO:HI:N with 0 < LO < HI and N >= 1."
        parts = spec.split(":")[1:]
        try:
            lo, hi, num = float(parts[0]), float(parts[1]), int(parts[2])
        except (ValueError, IndexError) as e:
            raise InputError(usage) from e
        if len(parts) != 3 or not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi) or num < 1:
            raise InputError(usage)
        values = np.logspace(math.log10(lo), math.log10(hi), num)
    else:
        try:
            values = np.array([float(v) for v in spec.split(",") if v.strip()])
        except ValueError as e:
            raise InputError(f"bad sigma spec {spec!r}; expected logspace:LO:HI:N or a list like 0.1,0.5,1.") from e
    return check_sigmas(values)


def check_sigmas(values: Sequence[float]) -> np.ndarray:
    """A sorted float32 σ grid [G]; error unless non-empty, finite, >= 0 and without repeats
    (after rounding to float32, the precision the sweep uses)."""
    values = np.asarray(values, np.float64).ravel()
    if values.size == 0 or not np.isfinite(values).all() or (values < 0).any():
        raise InputError(f"sigmas must be a non-empty list of finite values >= 0; got {values.tolist()}.")
    grid = np.sort(values).astype(np.float32)
    repeated = _repeats(grid.tolist())
    if repeated:
        raise InputError(f"sigmas repeat {[float(f'{v:g}') for v in repeated]}; give each σ once.")
    return grid


def parse_k(spec: str) -> tuple[float, ...]:
    """k% levels from `synapse` (the 18 reference levels, `K_LEVELS`) or a list `5,10,20`.

    Raises:
        ValueError: a malformed list, a level outside (0, 100], or a repeated level.
    """
    spec = str(spec).strip()
    if spec == "synapse":
        return tuple(float(k) for k in K_LEVELS)
    try:
        levels = tuple(float(k) for k in spec.split(",") if k.strip())
    except ValueError as e:
        raise InputError(f"bad k spec {spec!r}; use 'synapse' (the 18 reference levels) or a list like 5,10,20.") from e
    return check_k(levels)


def check_k(levels: Sequence[float]) -> tuple[float, ...]:
    """Validated k% levels (in the given order): non-empty, each in (0, 100], none repeated."""
    levels = tuple(float(k) for k in levels)
    if not levels or not all(math.isfinite(k) and 0 < k <= 100 for k in levels):
        raise InputError(f"k levels must be percentages in (0, 100]; got {list(levels)}.")
    repeated = _repeats(levels)
    if repeated:
        raise InputError(f"k levels repeat {[f'{k:g}' for k in repeated]}; give each level once.")
    return levels
