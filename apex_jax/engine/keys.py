"""Deterministic noise keys.

The key of draw d for input id i at grid point g is
    fold_in(fold_in(fold_in(key(seed), i), g), d)
and the model folds the site in, so noise depends only on (seed, input id, grid index, draw
index, site): never on chunking, batch composition, input order, device count or resumption.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from apex_jax.errors import InputError


def root_key_data(seed: int) -> np.ndarray:
    """The raw data of `jax.random.key(seed)` ([2] uint32 for threefry), computed on the host.

    The engine passes this to its kernels as an array argument (then `draw_keys(
    jax.random.wrap_key_data(data), ...)`), so a new seed never recompiles and the keys are
    exactly those of the Python-int seed, whatever its size or the x64 setting.
    """
    if not 0 <= int(seed) <= 2**32 - 1:  # 32-bit PRNG seeds: others would collide (-1 with 2**32 - 1)
        raise InputError(f"seed must lie in [0, {2**32 - 1}]; got {seed}")
    return np.asarray(jax.random.key_data(jax.random.key(seed)))


def draw_keys(seed: Any, ids: Any, grid_index: Any, draws: Any) -> jax.Array:
    """Typed PRNG keys [n_draws, n_inputs] for (seed, input ids [n], grid index, draw indices).

    Args:
        seed: a Python int, an integer scalar (traced or not: the same keys for seeds in
            [0, 2**32)), or a typed PRNG key (`jax.random.key(seed)`) used as the root.
    """
    is_key = hasattr(seed, "dtype") and jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key)
    root = seed if is_key else jax.random.key(seed)
    fold = jax.random.fold_in
    per_input = jax.vmap(lambda i: fold(fold(root, i), grid_index))(jnp.asarray(ids, jnp.uint32))
    return jax.vmap(lambda d: jax.vmap(lambda k: fold(k, d))(per_input))(jnp.asarray(draws, jnp.uint32))
