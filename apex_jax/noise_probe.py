"""A small APEX-style noise probe: prediction flip rates under Gaussian activation noise.

For every input and σ, K noisy forward passes with N(0, σ²) added at the chosen sites (default:
every block's `hook_resid_post`, as the APEX paper perturbs every layer); the flip rate is the
share of draws whose prediction differs from the clean one. Runs on the sweep engine
(`apex_jax.engine`): prefix-cached, vmapped draws, deterministic keys.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from apex_jax.engine import run_sweep
from apex_jax.interventions import Noise
from apex_jax.models.model import Model


def default_sites(model: Model) -> list[str]:
    """Every block's `hook_resid_post`."""
    return [f"blocks.{i}.hook_resid_post" for i in range(model.config.n_layers)]


def flip_rates(
    model: Model,
    params: Any,
    batch: dict,
    ids: Sequence[int],
    sigmas: Sequence[float],
    *,
    draws: int = 32,
    sites: Sequence[str] | None = None,
    seed: int = 0,
    relative: bool = False,
    draws_per_chunk: int | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Clean predictions [n] and flip rates [n_sigma, n] of a batch under activation noise.

    Args:
        model, params: the classifier.
        batch: encoded inputs (`model.encode`), n examples.
        ids: a stable id per input (keys the noise).
        sigmas: noise scales (absolute, or relative to each site's per-token RMS).
        draws: noisy forward passes per input and σ.
        sites: perturbed sites (default: every block's hook_resid_post).
        draws_per_chunk: draws per sweep unit per jitted step (the engine's units per call).
    """
    sigmas = np.asarray(sigmas, np.float32)
    if sigmas.ndim != 1 or sigmas.size == 0 or not np.isfinite(sigmas).all() or (sigmas < 0).any():
        raise ValueError(f"sigmas must be a non-empty list of finite values >= 0; got {sigmas.tolist()}.")
    sites = list(sites or default_sites(model))

    def perturb(sigma, keys):
        return {s: Noise(keys, sigma, relative=relative) for s in sites}

    result = run_sweep(model, params, batch, ids, perturb, sigmas, sites=sites, draws=draws,
                       seed=seed, units_per_call=draws_per_chunk, progress=progress,
                       tag=f"noise relative={relative}")
    return result.clean, 1.0 - result.kept.T
