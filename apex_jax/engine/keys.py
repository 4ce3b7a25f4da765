"""Deterministic noise keys (DESIGN.md principle 3).

The key of draw d for input id i at grid point g is
    fold_in(fold_in(fold_in(key(seed), i), g), d)
and the model folds the site in, so noise depends only on (seed, input id, grid index, draw
index, site): never on chunking, batch composition, input order, device count or resumption.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def draw_keys(seed: int, ids: Any, grid_index: Any, draws: Any) -> jax.Array:
    """Typed PRNG keys [n_draws, n_inputs] for (seed, input ids [n], grid index, draw indices)."""
    root = jax.random.key(seed)
    fold = jax.random.fold_in
    per_input = jax.vmap(lambda i: fold(fold(root, i), grid_index))(jnp.asarray(ids, jnp.uint32))
    return jax.vmap(lambda d: jax.vmap(lambda k: fold(k, d))(per_input))(jnp.asarray(draws, jnp.uint32))
