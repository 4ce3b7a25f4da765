"""The classifier token of a site: where SYNAPSE's "[CLS]" is, for encoders and decoders.

The classifier reads one token (DESIGN.md, "Activation sites"): [CLS] (position 0) for encoders,
the last real token for decoders (`Model.classifier_positions`; left or right padding). Every
SYNAPSE reader and writer of "the [CLS] vector of a site" (features, attribution, silencing) goes
through this module, so the rule lives in one place:

    idx = token_index(config, site, mask, head_only=True)           # [batch] int32, or None
    vec = token_vector(config, site, x, mask, head_only=True)       # [batch, features]
    pos = token_positions(config, site, mask, head_only=True)       # `positions=` of an intervention

`head_only`: under `Model.apply(..., head_only=True)` a decoder's last block computes its sites
after hook_k/hook_v (and the final norm) at the classifier token only: those sites then have
ONE position, index 0 (`single_position`). For encoders the index is always 0, so their results
are the same ops as before (bit-identical).

`right_padded(inputs)`: a decoder batch padded on the left, re-padded on the right (the same
values at real tokens: positions come from the mask). The sweep engine crops text to each
input's length bucket from the right, so it needs right padding.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from apex_jax import sites as site_lib
from apex_jax.models.decoder import classifier_positions

Array = Any

# Last-block sites that keep every position under head_only (keys and values are needed for all
# tokens); every later site of the last block has the classifier token only.
_FULL_IN_LAST_BLOCK = ("hook_resid_pre", "attn.hook_k", "attn.hook_v")


def single_position(config, site: str, head_only: bool) -> bool:
    """Whether `site` has one position (the classifier token, index 0) in a head_only run."""
    if not (head_only and config.n_classes is not None) or site_lib.position_axis(site) is None:
        return False
    n = config.n_layers
    if site == site_lib.FINAL_NORM_SITE:
        return True
    block, local = site_lib.parse(site)
    return block == n - 1 and local not in _FULL_IN_LAST_BLOCK


def _is_decoder(config) -> bool:
    return bool(getattr(config, "is_decoder", False))


def token_index(config, site: str, mask: Array | None, *, head_only: bool = False,
                batch: int | None = None) -> Array | None:
    """Index of the classifier token along `site`'s position axis, per example: [batch] int32.

    None for head sites (no position axis). 0 for encoders, images and single-position sites
    (`single_position`); the last real token of `mask` [batch, pos] for decoders otherwise.
    `batch` is the batch size when `mask` is None.
    """
    if site_lib.position_axis(site) is None:
        return None
    if _is_decoder(config) and not single_position(config, site, head_only):
        return classifier_positions(jnp.asarray(mask))
    n = batch if mask is None else np.shape(mask)[0]
    return jnp.zeros((n,), jnp.int32)


def token_positions(config, site: str, mask: Array | None, *, head_only: bool = False) -> Array | None:
    """The `positions=` of an intervention at the classifier token of `site`: `jnp.array([0])`
    for encoders and single-position sites, `[batch, 1]` per example for decoders, None for head
    sites."""
    if site_lib.position_axis(site) is None:
        return None
    if _is_decoder(config) and not single_position(config, site, head_only):
        return classifier_positions(jnp.asarray(mask))[:, None]
    return jnp.array([0], jnp.int32)


def token_vector(config, site: str, x: Array, mask: Array | None, *, head_only: bool = False) -> Array:
    """The classifier-token vector of an activation `x` captured at `site`, flattened to
    [batch, features] (head sites are taken as they are; head axes are flattened)."""
    axis = site_lib.position_axis(site)
    if axis is not None:
        if _is_decoder(config) and not single_position(config, site, head_only):
            idx = classifier_positions(jnp.asarray(mask))
            x = jnp.take_along_axis(x, idx.reshape((-1,) + (1,) * (x.ndim - 1)), axis=1)[:, 0]
        else:
            x = x[:, 0]
    return x.reshape(x.shape[0], -1)


def right_padded(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Text inputs with each row's real tokens moved to the front (right padding); rows already
    right-padded, and non-text inputs, are returned unchanged (the same arrays).

    For a decoder this changes no value at a real token (positions come from the mask). Pad
    slots keep the row's own pad values (shifted along), so pad ids stay pad ids.
    """
    mask = inputs.get("attention_mask")
    if mask is None or np.ndim(mask) != 2:
        return dict(inputs)
    mask = np.asarray(mask)
    lengths = (mask > 0).sum(1)
    if all(mask[i, : lengths[i]].all() for i in range(len(mask))):
        return dict(inputs)
    order = np.argsort(mask <= 0, axis=1, kind="stable")  # real tokens first, in order
    out = {}
    for k, v in inputs.items():
        v = np.asarray(v)
        out[k] = np.take_along_axis(v, order, axis=1) if v.shape == mask.shape else v
    return out
