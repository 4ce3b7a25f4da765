"""Interventions: pytrees of arrays that change an activation site (DESIGN.md principle 2).

A perturbation is a mapping `{site name: intervention}` (or a tuple of interventions applied in
order). An absent site is a no-op. Everything that varies across a sweep (σ, PRNG keys, masks,
values) is an array leaf, so a perturbation can be `jax.vmap`-ed and sharded; only the kind of
intervention and the `relative` switch are static.

Every intervention can be restricted
  * to token positions: `positions`, an integer index array `[n]` along the site's position axis
    (the same positions for every example), or `[batch, n]` (each example its own: e.g. a
    decoder's classifier token, `model.classifier_positions(batch)[:, None]`), and
    (e.g. `jnp.array([0])` = [CLS] only), and
  * to neurons: `neurons`, a 0/1 (or bool) mask broadcastable to the site's feature shape (the
    shape without batch and position axes, e.g. `[d_model]` for residual sites).
Outside the selection the activation passes unchanged.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from apex_jax.interventions import Noise, Scale, apply_intervention
    >>> x = jnp.ones((2, 3, 4))                       # [batch, pos, d_model]
    >>> silence = Scale(jnp.zeros(()), positions=jnp.array([0]))
    >>> apply_intervention(silence, x, "blocks.0.hook_resid_post", 0)[:, 0].sum()
    Array(0., dtype=float32)
    >>> noisy = apply_intervention(Noise(jax.random.key(0), jnp.float32(0.0)), x, "hook_embed", 0)
    >>> bool((noisy == x).all())                      # σ = 0 is exactly the identity
    True

The noise of a `Noise` intervention is drawn inside the compiled function from its key folded
with the site's index, so one key can drive many sites with independent noise. A key with a
leading batch axis (`[batch]` typed keys or `[batch, 2]` raw keys) draws each example's noise
from its own key, which makes results independent of how inputs are batched.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from apex_jax import sites as site_lib
from apex_jax.errors import InputError

Array = Any


@struct.dataclass
class Add:
    """Adds a fixed array (broadcastable to the site's shape) to the activation."""

    value: Array
    positions: Array | None = None
    neurons: Array | None = None

    def transform(self, x, site_id, pos_axis):
        return x + jnp.asarray(self.value, x.dtype)


@struct.dataclass
class Noise:
    """Adds Gaussian noise N(0, std²) drawn in the compiled function.

    `std = sigma` (absolute, the default) or, with `relative=True`,
    `std = sigma · RMS(x)` where the RMS is taken per example and position over the site's
    feature axes, so one σ means the same signal-to-noise ratio at every site and token.

    σ must be finite and >= 0. A σ known on the host (a Python number, list, NumPy or concrete
    JAX array) is checked when the `Noise` is built and again by `apply_intervention`, raising
    `InputError`. Inside `jax.jit`/`vmap` σ is a tracer whose value cannot be inspected, so
    there a negative (or NaN) σ makes the perturbed activation NaN, and therefore the logits
    NaN: a visibly invalid result instead of a valid-looking one computed with |σ|. Callers
    that build σ on the host (sweep grids) should check it there.
    """

    key: Array
    sigma: Array
    positions: Array | None = None
    neurons: Array | None = None
    relative: bool = struct.field(pytree_node=False, default=False)

    def __post_init__(self):
        # Catch a bad σ where it is written (host values only: traced or abstract leaves, as
        # seen inside jit/vmap, pass; `apply` checks again, naming the site).
        sigma = self.sigma
        if isinstance(sigma, jax.core.Tracer) or not isinstance(
            sigma, (int, float, list, tuple, np.ndarray, np.generic, jax.Array)
        ):
            return
        if isinstance(sigma, jax.Array) and not sigma.is_fully_addressable:
            return  # spread over processes: `apply` cannot see it either
        try:
            s = np.asarray(sigma)
        except (TypeError, ValueError):  # e.g. a list holding tracers: checked under jit
            return
        if s.dtype.kind in "fiu" and (~np.isfinite(s) | (s < 0)).any():
            raise InputError(f"Noise: sigma must be finite and >= 0; got {_shown_bad_sigma(s)}.")

    def transform(self, x, site_id, pos_axis):
        sigma = jnp.asarray(self.sigma, x.dtype)
        # Under jit a negative σ cannot raise: make it NaN so the output is visibly invalid
        # (noise is symmetric, so -σ would otherwise give a plausible answer). A scalar-sized
        # select, negligible next to the draw.
        sigma = jnp.where(sigma >= 0, sigma, jnp.nan)
        if self.relative:
            feature_axes = tuple(a for a in range(1, x.ndim) if a != pos_axis)
            sigma = sigma * jnp.sqrt(jnp.mean(jnp.square(x), axis=feature_axes, keepdims=True))
        # drawn in (at least) float32, so a bfloat16 model sees the float32 model's noise, rounded
        draw_dtype = jnp.promote_types(x.dtype, jnp.float32)
        return x + sigma * _normal(self.key, site_id, x.shape, draw_dtype).astype(x.dtype)


@struct.dataclass
class Scale:
    """Multiplies the activation by `scale` (broadcastable); `scale = 0` silences."""

    scale: Array
    positions: Array | None = None
    neurons: Array | None = None

    def transform(self, x, site_id, pos_axis):
        return x * jnp.asarray(self.scale, x.dtype)


@struct.dataclass
class Replace:
    """Replaces the activation by `value` (broadcastable), e.g. a mean for mean-ablation."""

    value: Array
    positions: Array | None = None
    neurons: Array | None = None

    def transform(self, x, site_id, pos_axis):
        return jnp.broadcast_to(jnp.asarray(self.value, x.dtype), x.shape)


Intervention = Union[Add, Noise, Scale, Replace]
Perturbations = Mapping[str, Union[Intervention, Sequence[Intervention]]]
KINDS = (Add, Noise, Scale, Replace)
_VALUE_LEAF = {Add: "value", Noise: "sigma", Scale: "scale", Replace: "value"}


def silence(neurons: Array | None = None, positions: Array | None = None) -> Scale:
    """Zeroes the selected neurons (SYNAPSE silencing); `positions=jnp.array([0])` = [CLS] only."""
    return Scale(jnp.zeros((), jnp.float32), positions=positions, neurons=neurons)


def neuron_mask(indices: Sequence[int] | Array, size: int) -> jax.Array:
    """A float 0/1 mask of length `size` with ones at `indices`.

    Args:
        indices: neuron indices in `[0, size)` (repeats are harmless).
        size: the number of neurons (the site's feature width), >= 1.

    Raises:
        InputError: `size` is not a positive integer, or (for indices known on the host)
            `indices` are not integers or lie outside `[0, size)`; the message names the bad
            indices and the valid range. Negative indices are never counted from the end.

    Inside `jax.jit` the indices are tracers and cannot be checked: an out-of-range or negative
    index then selects no neuron (it is dropped, not wrapped). Build masks outside jit, or
    check the indices where they are made.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise InputError(f"neuron_mask: size must be a positive integer (the site's width); got {size!r}.")
    idx = indices if isinstance(indices, jax.core.Tracer) else jnp.asarray(indices)
    if not jnp.issubdtype(idx.dtype, jnp.integer):
        if idx.size == 0:
            idx = idx.astype(jnp.int32)  # jnp.asarray([]) is float
        else:
            raise InputError(f"neuron_mask: indices must be integers; got dtype {idx.dtype}.")
    if not isinstance(idx, jax.core.Tracer):
        host = np.asarray(idx).reshape(-1)
        bad = np.unique(host[(host < 0) | (host >= size)])
        if bad.size:
            shown = bad[:10].tolist() + (["..."] if bad.size > 10 else [])
            raise InputError(
                f"neuron_mask: indices {shown} are outside the valid range [0, {size}) "
                f"(0..{size - 1}; negative indices are not counted from the end)."
            )
    # Traced: map negatives past the end so mode="drop" drops them instead of wrapping.
    idx = jnp.where(idx < 0, size, idx)
    return jnp.zeros((size,), jnp.float32).at[idx].set(1.0, mode="drop")


def _is_batched_key(key) -> bool:
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key.ndim == 1
    return key.ndim == 2


def _draw(key, shape, dtype):
    # One flat draw, reshaped: the same numbers as `normal(key, shape)` (threefry numbers the
    # elements in row-major order), but XLA compiles a 1-D draw 2-4x faster than an N-D one.
    size = int(np.prod(shape, dtype=np.int64))
    return jax.random.normal(key, (size,), dtype).reshape(shape)


def _normal(key, site_id: int, shape, dtype):
    if _is_batched_key(key):
        draw = lambda k: _draw(jax.random.fold_in(k, site_id), shape[1:], dtype)
        keys = key
        if keys.shape[0] != shape[0]:
            raise InputError(
                f"Noise key has a batch of {keys.shape[0]} keys but the batch has {shape[0]} "
                "examples; give one key, or one key per example."
            )
        return jax.vmap(draw)(keys)
    return _draw(jax.random.fold_in(key, site_id), shape, dtype)


def _check_broadcast(name: str, leaf, x, site: str, kind: str) -> None:
    shape = tuple(np.shape(leaf))
    try:
        ok = np.broadcast_shapes(shape, x.shape) == tuple(x.shape)
    except ValueError:
        ok = False
    if not ok:
        raise InputError(
            f"{kind} at site '{site}': leaf '{name}' has shape {shape}, which does not broadcast "
            f"to the site's shape {tuple(x.shape)} {site_lib.layout(site)}."
        )


def _selection(iv, x, site: str, pos_axis: int | None):
    """Boolean mask broadcastable to x (True = intervene), or None for everywhere."""
    kind = type(iv).__name__
    sel = None
    if iv.positions is not None:
        if pos_axis is None:
            raise InputError(
                f"{kind} at site '{site}': 'positions' given, but {site_lib.layout(site)} has no "
                "position axis; drop 'positions' for head sites."
            )
        positions = jnp.asarray(iv.positions)
        per_example = positions.ndim == 2
        if positions.ndim not in (1, 2) or not jnp.issubdtype(positions.dtype, jnp.integer) or (
            per_example and positions.shape[0] != x.shape[0]
        ):
            raise InputError(
                f"{kind} at site '{site}': 'positions' must be a 1-D integer index array [n] (e.g. "
                f"jnp.array([0]) for [CLS]) or [batch, n] per example (batch {x.shape[0]}); got "
                f"shape {positions.shape}, dtype {positions.dtype}."
            )
        n_pos = x.shape[pos_axis]
        if not isinstance(positions, jax.core.Tracer):
            bad = np.asarray(positions)
            bad = bad[(bad < 0) | (bad >= n_pos)]
            if bad.size:
                raise InputError(
                    f"{kind} at site '{site}': positions {bad.tolist()} are outside [0, {n_pos})."
                )
        shape = [1] * x.ndim
        shape[pos_axis] = n_pos
        if per_example:  # [batch, n_pos] selection, one row per example
            rows = jnp.arange(x.shape[0])[:, None]
            pmask = jnp.zeros((x.shape[0], n_pos), bool).at[rows, positions].set(True)
            shape[0] = x.shape[0]
        else:
            pmask = jnp.zeros((n_pos,), bool).at[positions].set(True)
        sel = pmask.reshape(shape)
    if iv.neurons is not None:
        neurons = jnp.asarray(iv.neurons)
        feature_shape = tuple(
            d for a, d in enumerate(x.shape) if a != 0 and a != pos_axis
        )
        try:
            ok = neurons.ndim >= 1 and np.broadcast_shapes(neurons.shape, feature_shape) == feature_shape
        except ValueError:
            ok = False
        if not ok:
            raise InputError(
                f"{kind} at site '{site}': 'neurons' mask has shape {neurons.shape}; expected the "
                f"site's feature shape {feature_shape} (site {site_lib.layout(site)} without batch "
                "and position axes)."
            )
        nmask = jnp.broadcast_to(neurons != 0, feature_shape)
        if pos_axis is not None:
            nmask = jnp.expand_dims(nmask, pos_axis - 1)
        nmask = nmask[None]
        sel = nmask if sel is None else (sel & nmask)
    return sel


def apply_intervention(iv, x, site: str, site_id: int, pos_axis: int | None = 1):
    """Applies one intervention (or a sequence, in order) to the activation `x` at `site`."""
    if isinstance(iv, (tuple, list)):
        for one in iv:
            x = apply_intervention(one, x, site, site_id, pos_axis)
        return x
    if not isinstance(iv, KINDS):
        raise TypeError(
            f"site '{site}': {type(iv).__name__} is not an intervention; use one of "
            f"{', '.join(k.__name__ for k in KINDS)} (apex_jax.interventions)."
        )
    kind = type(iv).__name__
    leaf = _VALUE_LEAF[type(iv)]
    _check_broadcast(leaf, getattr(iv, leaf), x, site, kind)
    if isinstance(iv, Noise):
        _check_sigma(iv.sigma, site)
    sel = _selection(iv, x, site, pos_axis)
    new = iv.transform(x, site_id, pos_axis)
    return new if sel is None else jnp.where(sel, new, x)


def _check_sigma(sigma, site: str) -> None:
    if isinstance(sigma, jax.core.Tracer):
        return  # values are only known on device; checked by the caller that built them
    s = np.asarray(sigma)
    if s.dtype.kind in "fiu" and (~np.isfinite(s) | (s < 0)).any():
        raise InputError(f"Noise at site '{site}': sigma must be finite and >= 0; got {_shown_bad_sigma(s)}.")


def _shown_bad_sigma(s: np.ndarray) -> str:
    """The offending σ values (all of a small array, else the first bad ones), for messages."""
    if s.size <= 10:
        return str(s.tolist())
    bad = s[~np.isfinite(s) | (s < 0)]
    return f"{bad[:5].tolist()} among {s.size} values"


def validate(perturbations: Perturbations | None, valid_sites: Sequence[str]) -> dict:
    """Checks site names and intervention types; returns a plain dict."""
    if perturbations is None:
        return {}
    if not isinstance(perturbations, Mapping):
        raise TypeError(
            "perturbations must be a mapping {site name: intervention}; got "
            f"{type(perturbations).__name__}."
        )
    unknown = [s for s in perturbations if s not in valid_sites]
    if unknown:
        raise InputError(
            f"unknown site(s) {unknown}; valid sites: {site_lib.describe(valid_sites)}."
        )
    return dict(perturbations)
