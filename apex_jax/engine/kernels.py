"""The sweep's compiled kernels: module-level `jax.jit` functions, JAX's jit cache the only cache.

Besides class counts, the chunk kernel reduces two continuous scores per (input, grid point)
(`scores`): the reference class's logit margin and KL(clean ‖ perturbed), summed over draws in
float32 within a unit (a fixed-shape reduction, so the same bits whatever the chunking).

Static (hashable structure, part of the compile key): the architecture `ArchConfig`, the site
tuple, the `perturb` function (hashed by identity: pass the same function object to reuse a
compilation), draws_per_step, n_classes, common_noise, the mesh and the sites whose classifier
token is per input (`positions.per_example_sites`). Arrays (never recompile):
params, the cached prefix, input ids, the root key of the seed, the draw offset, K, the grid
points and the unit indices. So a new seed, K, σ grid of the same length or inputs of the same
length bucket run the compiled kernel again, and a second checkpoint of one architecture shares it.
"""

from __future__ import annotations

import collections
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from apex_jax.engine.keys import draw_keys
from apex_jax.engine.mesh import UNIT_AXIS  # the mesh axis units are sharded over
from apex_jax.engine.positions import resolve
from apex_jax.models.encoder import ArchConfig
from apex_jax.models.model import Prefix, skeleton

Perturb = Callable[[Any, jax.Array], dict]  # (grid point pytree, keys [inputs]) -> perturbations

# Python-side trace counts per kernel ("chunk", "prefix"): the body of a jitted function runs
# only when JAX traces it, so these count compilations (tests; SweepResult.settings["compiles"]).
TRACES: collections.Counter = collections.Counter()


@functools.partial(jax.jit, static_argnames=("config", "sites"))
def prefix_and_clean(config: ArchConfig, params: Any, batch: dict, *, sites: tuple[str, ...]
                     ) -> tuple[Prefix, jax.Array]:
    """The cached prefix before the first block `sites` need, and the clean logits from it.

    Args:
        batch: one input block ({"input_ids", "attention_mask", ...} [inputs, pos] or pixels).

    Returns:
        (Prefix with hidden [inputs, pos, d_model], clean logits [inputs, n_classes]).
    """
    TRACES["prefix"] += 1
    model = skeleton(config)
    prefix = model.prefix(params, batch, sites)
    # head_only, as the chunk kernel runs (less work, equal logits): the scores' reference is
    # then the draws' own code path, so a σ = 0 draw differs from it only by the batching
    # ([inputs] here, [draws, inputs] there), i.e. float32 rounding or nothing
    return prefix, model.apply(params, prefix, head_only=True).logits


@functools.partial(jax.jit, static_argnames=(
    "config", "perturb", "draws_per_step", "n_classes", "common_noise", "mesh", "token_sites"))
def run_chunk(
    params: Any,
    prefix: Prefix,
    block_ids: jax.Array,
    token_index: jax.Array,
    reference: jax.Array,
    clean_logits: jax.Array,
    root_key: jax.Array,
    offset: jax.Array,
    draws: jax.Array,
    grid_points: Any,
    g_idx: jax.Array,
    d_idx: jax.Array,
    *,
    config: ArchConfig,
    perturb: Perturb,
    draws_per_step: int,
    n_classes: int,
    common_noise: bool,
    mesh: jax.sharding.Mesh,
    token_sites: tuple[str, ...] = (),
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Class counts and continuous scores of one chunk of units of one input block.

    Args:
        params: the model's parameters.
        prefix: the block's cached prefix ([inputs, pos, d_model]).
        block_ids: input ids [inputs] (key the noise; filler rows hold any id).
        token_index: each input's classifier-token index [inputs] int32 (`positions.classifier_index`):
            interventions at `positions=CLASSIFIER_TOKEN` are resolved to it at `token_sites`
            (`positions.per_example_sites`) and to index 0 elsewhere (`positions.resolve`).
        reference: the class each input's margin is taken for [inputs] int32 (its label or
            its clean prediction; see `scores`).
        clean_logits: clean logits [inputs, n_classes] float32 (the KL's reference).
        root_key: `keys.root_key_data(seed)`, the raw root key [2] uint32.
        offset: first draw index of the sweep (int32 scalar); draws: K (int32 scalar).
        grid_points: grid leaves [units, grid_per_step, ...] (sharded over the unit axis).
        g_idx: grid indices [units, grid_per_step]; -1 marks filler slots and filler units.
        d_idx: draw block per unit [units].

    Returns:
        (counts [units, grid_per_step, inputs, n_classes] int32,
         margin sums [units, grid_per_step, inputs] float32,
         KL sums [units, grid_per_step, inputs] float32): each summed over the unit's real
        draws with finite logits (filler draws and slots, and non-finite draws, add 0).
    """
    TRACES["chunk"] += 1
    model = skeleton(config)
    D, C = draws_per_step, n_classes

    def one_point(params, prefix, block_ids, token_index, reference, clean_logits, root, offset, draws,
                  grid_point, g, d):
        draw_index = d * D + jnp.arange(D)
        keys = draw_keys(root, block_ids, 0 if common_noise else jnp.maximum(g, 0), offset + draw_index)
        perturbed = lambda k: resolve(perturb(grid_point, k), token_index, token_sites)
        logits = jax.vmap(lambda k: model.apply(params, prefix, perturbed(k), head_only=True).logits)(keys)
        # a draw whose logits are not finite predicts no class (argmax would call it class 0) and
        # adds no score: counts then sum to the finite draws, and the rest are reported as such
        finite = jnp.isfinite(logits).all(-1)  # [D, inputs]
        hits = jax.nn.one_hot(jnp.argmax(logits, -1), C, dtype=jnp.int32)  # [D, inputs, C]
        valid = (draw_index < draws) & (g >= 0)
        counted = valid[:, None] & finite
        margin, kl = scores(logits, reference, clean_logits)  # [D, inputs] each
        # where, not a product: a filler or non-finite draw's NaN must not leak into the sum
        real = lambda x: jnp.sum(jnp.where(counted, x, 0.0), axis=0)
        return jnp.sum(hits * counted[..., None], axis=0), real(margin), real(kl)

    def unit(shared, grid_points, g, d):  # grid_per_step grid points at once
        run = lambda: jax.vmap(lambda p, gi: one_point(*shared, p, gi, d))(grid_points, g)
        # filler units (a chunk's tail) skip the forward entirely: lax.map runs units one by
        # one, so this is a real branch, not a select
        n_inputs = shared[2].shape[0]  # block_ids
        varying = lambda x: jax.lax.pcast(x, (UNIT_AXIS,), to="varying")
        skip = lambda: (varying(jnp.zeros((g.shape[0], n_inputs, C), jnp.int32)),
                        varying(jnp.zeros((g.shape[0], n_inputs), jnp.float32)),
                        varying(jnp.zeros((g.shape[0], n_inputs), jnp.float32)))
        return jax.lax.cond(jnp.any(g >= 0), run, skip)

    def local_chunk(params, prefix, block_ids, token_index, reference, clean_logits, root_data, offset, draws,
                    grid_points, g_idx, d_idx):
        shared = (params, prefix, block_ids, token_index, reference, clean_logits,
                  jax.random.wrap_key_data(root_data), offset, draws)
        return jax.lax.map(lambda a: unit(shared, *a), (grid_points, g_idx, d_idx))

    # only the unit axis is manual: on a ("units", "model") mesh the parameters stay split over
    # "model" and XLA partitions the model's matmuls over it (engine/mesh.py)
    sharded = jax.shard_map(local_chunk, mesh=mesh, out_specs=P(UNIT_AXIS),
                            in_specs=(P(),) * 9 + (P(UNIT_AXIS),) * 3, axis_names={UNIT_AXIS})
    return sharded(params, prefix, block_ids, token_index, reference, clean_logits, root_key, offset, draws,
                   grid_points, g_idx, d_idx)


def scores(logits: jax.Array, reference: jax.Array, clean_logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The continuous scores of perturbed logits [..., inputs, C] (computed in float32).

    margin = logit[reference] − max_{c ≠ reference} logit[c]: > 0 iff the reference class is
    still predicted (ties aside); its size says how far the perturbation is from flipping it.
    KL = KL(clean ‖ perturbed) = Σ_c p_clean[c] (log p_clean[c] − log p_pert[c]) ≥ 0: the
    expected extra log-loss of the perturbed model on the clean model's own distribution. This
    direction weighs the classes the clean model believes in, stays finite (softmax has full
    support) and is 0 exactly when the perturbed logits equal the clean ones; rounding
    negatives are clipped to 0.

    Args:
        logits: perturbed logits [..., inputs, C].
        reference: the margin's class per input [inputs] int32.
        clean_logits: clean logits [inputs, C] (their log-softmax is taken here, by the same
            code as the perturbed one's, so equal logits give KL exactly 0).

    Returns:
        (margin [..., inputs], KL [..., inputs]) float32.
    """
    logits = logits.astype(jnp.float32)
    onehot = jax.nn.one_hot(reference, logits.shape[-1], dtype=bool)  # [inputs, C]
    ref = jnp.sum(jnp.where(onehot, logits, 0.0), axis=-1)
    other = jnp.max(jnp.where(onehot, -jnp.inf, logits), axis=-1)
    logq = jax.nn.log_softmax(logits, axis=-1)
    clean_logp = jax.nn.log_softmax(clean_logits.astype(jnp.float32), axis=-1)
    kl = jnp.sum(jnp.exp(clean_logp) * (clean_logp - logq), axis=-1)
    return ref - other, jnp.maximum(kl, 0.0)
