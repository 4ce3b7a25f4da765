"""A small APEX-style noise probe: prediction flip rates under Gaussian activation noise.

For every input and σ, K noisy forward passes with N(0, σ²) added at the chosen sites (default:
every block's `hook_resid_post`, as the APEX paper perturbs every layer); the flip rate is the
share of draws whose prediction differs from the clean one.

Work that cannot change the answer is done once: activations before the first perturbed site
are computed once per input (`Model.prefix`) and reused for all σ and draws; draws run as one
vmapped, jitted chunk per σ, and only per-input flip counts leave the device.

Noise is deterministic by construction: draw d of input id i at grid index g uses the key
fold_in(fold_in(fold_in(root(seed), i), g), d), further folded with the site inside the model,
so results do not depend on batch composition, chunking or order.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from apex_jax.interventions import Noise
from apex_jax.models.model import Model


def default_sites(model: Model) -> list[str]:
    """Every block's `hook_resid_post`."""
    return [f"blocks.{i}.hook_resid_post" for i in range(model.config.n_layers)]


def draw_keys(seed: int, ids: Any, grid_index: Any, draws: Any) -> jax.Array:
    """Typed PRNG keys [n_draws, n_inputs] for (seed, input id, grid index, draw index)."""
    root = jax.random.key(seed)
    per_input = jax.vmap(lambda i: jax.random.fold_in(root, i))(jnp.asarray(ids, jnp.uint32))
    per_grid = jax.vmap(lambda k: jax.random.fold_in(k, grid_index))(per_input)
    return jax.vmap(lambda d: jax.vmap(lambda k: jax.random.fold_in(k, d))(per_grid))(
        jnp.asarray(draws, jnp.uint32)
    )


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
    draws_per_chunk: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Clean predictions [n] and flip rates [n_sigma, n] of a batch under activation noise.

    Args:
        model, params: the classifier.
        batch: encoded inputs (`model.encode`), n examples.
        ids: a stable id per input (keys the noise).
        sigmas: noise scales (absolute, or relative to each site's per-token RMS).
        draws: noisy forward passes per input and σ.
        sites: perturbed sites (default: every block's hook_resid_post).
    """
    sigmas = np.asarray(sigmas, np.float32)
    if sigmas.ndim != 1 or sigmas.size == 0 or np.isnan(sigmas).any() or (sigmas < 0).any():
        raise ValueError(f"sigmas must be a non-empty list of finite values >= 0; got {sigmas.tolist()}.")
    if draws < 1:
        raise ValueError(f"draws must be >= 1; got {draws}.")
    if model.config.n_classes is None:
        raise ValueError("flip rates need a classifier; load the model with num_labels=N.")
    sites = list(sites or default_sites(model))
    ids = np.asarray(ids)
    n = len(ids)
    clean = np.asarray(model.jitted()(params, batch).logits.argmax(-1))
    prefix = jax.jit(model.prefix, static_argnums=2)(params, batch, tuple(sites))
    chunk = max(1, min(draws_per_chunk, draws))

    @jax.jit
    def flips(prefix, sigma, grid_index, draw_index, valid):
        keys = draw_keys(seed, ids, grid_index, draw_index)  # [chunk, n]

        def one(k):
            pert = {s: Noise(k, sigma, relative=relative) for s in sites}
            return model.apply(params, prefix, pert).logits.argmax(-1)

        preds = jax.vmap(one)(keys)  # [chunk, n]
        return jnp.sum((preds != clean) & valid[:, None], axis=0)

    counts = np.zeros((len(sigmas), n), np.int64)
    for g, sigma in enumerate(sigmas):
        for d0 in range(0, draws, chunk):
            index = np.arange(d0, d0 + chunk)
            counts[g] += np.asarray(flips(prefix, sigma, g, index, index < draws))
    return clean, counts / draws
