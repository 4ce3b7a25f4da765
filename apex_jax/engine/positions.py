"""The classifier token and padding: where a model's "[CLS]" is, for every architecture.

The classifier reads one token (DESIGN.md, "Activation sites"): [CLS] (position 0) for encoders,
the last real token for decoders (`classifier_positions`; left or right padding). Methods never
decide this themselves; every reader and writer of "the classifier-token vector of a site" goes
through this module, so the rule lives in one place:

* in a sweep, a perturbation says `positions=CLASSIFIER_TOKEN` and the engine resolves it per
  input block (`resolve`, from the block's `classifier_index`) to the token of each input;
* outside the engine (features, attribution):

    idx = token_index(config, site, mask, head_only=True)           # [batch] int32, or None
    vec = token_vector(config, site, x, mask, head_only=True)       # [batch, features]
    pos = token_positions(config, site, mask, head_only=True)       # `positions=` of an intervention

`head_only`: under `Model.apply(..., head_only=True)` a decoder's last block computes its sites
after hook_k/hook_v (and the final norm) at the classifier token only: those sites then have
ONE position, index 0 (`single_position`). For encoders the index is always 0.

Padding: the engine crops text to each input's length bucket from the right, so it runs a
decoder's batch right-padded (`sweep_inputs`; the same values at real tokens: positions come
from the mask). Methods that compute statistics on the inputs a sweep runs (e.g. APEX's noise
calibration) take them from `sweep_inputs` too.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from apex_jax import sites as site_lib
from apex_jax.models import classifier_positions

Array = Any

# Last-block sites that keep every position under head_only (keys and values are needed for all
# tokens); every later site of the last block has the classifier token only.
_FULL_IN_LAST_BLOCK = ("hook_resid_pre", "attn.hook_k", "attn.hook_v")


class ClassifierToken:
    """The symbolic `positions=` of an intervention at the classifier token (`CLASSIFIER_TOKEN`):
    the sweep engine replaces it by each input's token (`resolve`) before the model sees it."""

    _instance = None

    def __new__(cls):  # one value: `positions is CLASSIFIER_TOKEN` identifies it
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "CLASSIFIER_TOKEN"

    def __reduce__(self):
        return (ClassifierToken, ())

    def __array__(self, *args, **kwargs):
        raise TypeError("positions=CLASSIFIER_TOKEN is resolved by the sweep engine (run_sweep); outside a "
                        "sweep resolve it with apex_jax.engine.positions.resolve or give token_positions(...).")


CLASSIFIER_TOKEN = ClassifierToken()


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


# ------------------------------------------------------------------ inside the sweep engine
def per_example_sites(config, sites: Sequence[str]) -> tuple[str, ...]:
    """The sites of a sweep over `sites` whose classifier token differs per input (a decoder's
    last real token); at the others it is index 0 (encoders, and a decoder's sites that have one
    position in the engine's head_only suffix) or there is no position axis (head sites).

    The suffix runs the head_only last block only if some site lies before its output; sites
    that all lie after it (the last block's output alone) give a prefix of every block, full length.
    """
    if not _is_decoder(config):
        return ()
    n = config.n_layers
    runs_last = min((site_lib.resume_block(s, n) for s in sites), default=n) < n
    return tuple(s for s in sites if site_lib.position_axis(s) is not None
                 and not (runs_last and single_position(config, s, True)))


def classifier_index(config, inputs: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """Each input's classifier-token index along the position axis, [n] int32 (0 for encoders
    and images; a decoder's last real token, from the attention mask)."""
    if not _is_decoder(config):
        return np.zeros(n, np.int32)
    return np.asarray(classifier_positions(jnp.asarray(inputs["attention_mask"])), np.int32)


def resolve(perturbation: Mapping[str, Any], index: Array, per_example: Sequence[str]) -> dict:
    """`perturbation` with every `positions=CLASSIFIER_TOKEN` replaced: by `index[:, None]`
    (each input's own token, [inputs] int32) at the `per_example` sites, by `[0]` at other
    sites with a position axis and by None at head sites. Other interventions are unchanged."""

    def one(site, iv):
        if isinstance(iv, (tuple, list)):
            return type(iv)(one(site, i) for i in iv)
        if getattr(iv, "positions", None) is not CLASSIFIER_TOKEN:
            return iv
        if site_lib.position_axis(site) is None:
            pos = None
        elif site in per_example:
            pos = index[:, None]
        else:
            pos = jnp.array([0])
        return iv.replace(positions=pos)

    return {s: one(s, iv) for s, iv in perturbation.items()}


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


def sweep_inputs(model, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inputs as the sweep engine runs them: a decoder's text right-padded (the engine crops
    each input to its length bucket from the right), anything else as it is."""
    return right_padded(inputs) if _is_decoder(model.config) else dict(inputs)
