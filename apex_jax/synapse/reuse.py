"""Mask sweeps that run each distinct grid point once across several experiments on one model.

Several SYNAPSE experiments on the same model and inputs often silence the same neurons: the
uniform random controls are drawn from a seed, not from the probe, so every probe trained on one
model gets the same random selections; the activation × gradient control depends on the model
only. A deterministic (zeroing or mean-ablating) grid point's result depends only on what it
does at each site, not on the other grid points of its sweep (the engine's results do not
depend on how the grid is cut into steps), so a result computed once can stand in for every
later copy.

`reusing_sweep` keeps those results in a plain dict (`memo`) that the caller holds across
calls **on the same model, parameters, inputs and engine settings** (the caller's contract, as with any cache
of that kind; the inputs' ids, labels and the positions are part of every key). A grid point's
key is what it does: per site with any neuron selected, the site, the selected neurons and the
values they are set to (0 for zeroing, so a zeroed point of a mixed zero / mean sweep and the
same point of a zeroing sweep share a key). Noise sweeps are random and never reused.

Example (the second call runs only the grid point the first did not have; `sweep(masks, fills)`
runs a mask sweep, e.g. `silencing.mask_sweep` on one model and batch):
    >>> memo, context = {}, sweep_context(ids, labels, "cls")                  # doctest: +SKIP
    >>> first = reusing_sweep(memo, sweep, grid_ab, None, context)             # doctest: +SKIP
    >>> second = reusing_sweep(memo, sweep, grid_bc, None, context)            # doctest: +SKIP
    >>> second.settings["reused_grid_points"]                                  # doctest: +SKIP
    1
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Callable, Mapping, Sequence

import numpy as np

from apex_jax.engine import SweepResult


def grid_point_keys(masks: Mapping[str, np.ndarray], fills: Mapping[str, np.ndarray] | None,
                    context: bytes = b"") -> list[bytes]:
    """One key per grid point of `masks` {site: [G, d]}: the sites it touches, the neurons it
    selects there and the values it sets them to (`fills` {site: [G, d]}; None: zeroing)."""
    sites = sorted(masks)
    G = len(masks[sites[0]])
    keys = []
    for g in range(G):
        h = hashlib.sha256(context)
        for s in sites:
            selected = np.asarray(masks[s][g]) != 0
            if not selected.any():  # a site the point leaves alone: the same as no site
                continue
            values = np.zeros(selected.shape, np.float32) if fills is None else np.where(
                selected, np.asarray(fills[s][g], np.float32), np.float32(0))
            h.update(s.encode() + b"\0" + np.packbits(selected).tobytes() + values.tobytes())
        keys.append(h.digest())
    return keys


def sweep_context(ids: Sequence[int], labels: np.ndarray | None, positions: str) -> bytes:
    """What every grid point's key of one sweep shares: the inputs' ids, their labels (the
    margin's reference class) and the positions the masks apply at."""
    parts = [positions.encode(), np.asarray(ids, np.int64).tobytes(),
             b"" if labels is None else np.asarray(labels, np.int64).tobytes()]
    return hashlib.sha256(b"|".join(parts)).digest()


def reusing_sweep(memo: dict, sweep: Callable[[dict, dict | None], SweepResult], masks: Mapping[str, np.ndarray],
                  fills: Mapping[str, np.ndarray] | None, context: bytes) -> SweepResult:
    """A deterministic mask sweep of {site: [G, d]} `masks`, zeroed (`fills` None) or set to
    `fills` {site: [G, d]}, that runs only the grid points `memo` has no result for (each
    distinct one once) and stores theirs. `sweep(masks, fills)` runs a mask sweep of the rows it
    is given (e.g. `silencing.mask_sweep` with mode "zero" or "mean"); `context` is
    `sweep_context(...)` of the inputs. The returned `SweepResult` covers the whole grid in its
    order; its `perturbed_forwards` and `seconds` count only what ran here, and
    `settings["reused_grid_points"]` how many came from `memo`."""
    keys = grid_point_keys(masks, fills, context)
    run: dict[bytes, int] = {}  # key -> the grid point that computes it here
    for g, key in enumerate(keys):
        if key not in memo and key not in run:
            run[key] = g
    ran = None
    if run:
        rows = list(run.values())
        ran = sweep({s: m[rows] for s, m in masks.items()}, None if fills is None else {s: f[rows] for s, f in fills.items()})
        for j, key in enumerate(run):
            memo[key] = (ran.counts[:, j], ran.margin_sum[:, j], ran.kl_sum[:, j])
        memo["clean", context] = dataclasses.replace(ran, counts=ran.counts[:, :0], margin_sum=None, kl_sum=None,
                                                     plan=None)
    base = memo["clean", context]  # the clean forward: the same for every sweep with this context
    parts = [memo[key] for key in keys]
    return dataclasses.replace(
        base, counts=np.stack([p[0] for p in parts], axis=1), margin_sum=np.stack([p[1] for p in parts], axis=1),
        kl_sum=np.stack([p[2] for p in parts], axis=1),
        seconds=0.0 if ran is None else ran.seconds, perturbed_forwards=0 if ran is None else ran.perturbed_forwards,
        plan=None if ran is None else ran.plan,
        settings={**(base.settings if ran is None else ran.settings), "reused_grid_points": len(keys) - len(run)})
