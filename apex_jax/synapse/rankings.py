"""SYNAPSE step 2: rank [CLS] neurons and turn rankings into neuron masks.

    W = probes["blocks.3.hook_resid_post"].W                # [C, d], standardized units
    r = global_ranking(W)                                    # Σ_c |W[c, j]|
    mask = top_k(r, 10)                                      # float32 [d], exactly k ones
    silence(neurons=mask, positions=jnp.array([0]))          # apex_jax.interventions
    controls = random_k(d, 10, seed=0, draws=20)             # [20, d]
    matched = layer_matched_random(top_k(g_concat, 10), n_layers=6, draws=20)  # same count per layer

Rounding of k%. A level of k percent of d neurons selects `k_count(k, d) = max(1, round(k·d/100))`
neurons, with halves rounded up (10% of 384 = 38.4 -> 38; 2.5% of 384 = 9.6 -> 10).

Ties. Every ranking orders neurons by descending score and breaks ties by the lower neuron index,
so masks are deterministic; `bottom_k` takes ascending scores, ties again by the lower index.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from apex_jax import sites as site_lib
from apex_jax.batching import iter_chunks, num_rows
from apex_jax.engine.positions import token_positions, token_vector
from apex_jax.interventions import Add
from apex_jax.errors import InputError
from apex_jax.models.model import skeleton
from apex_jax.specs import K_LEVELS
from apex_jax.synapse.features import check_cls_sites
from apex_jax.synapse.probes import Probe, ProbeSet

Array = Any


class Ranking(NamedTuple):
    """Neuron scores and the neurons ordered by them."""

    scores: np.ndarray  # [d] float64, higher = more important
    order: np.ndarray  # [d] int64 neuron indices, descending score, ties by lower index


def _scores(scores: Array | Ranking, name: str = "scores") -> np.ndarray:
    if isinstance(scores, Ranking):
        scores = scores.scores
    s = np.asarray(scores, np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array [d]; got shape {s.shape}.")
    if not np.isfinite(s).all():
        bad = np.flatnonzero(~np.isfinite(s))[:10].tolist()
        raise ValueError(f"{name} contain NaN or infinite values at neurons {bad}.")
    return s


def rank(scores: Array) -> Ranking:
    """A `Ranking` of arbitrary per-neuron scores [d] (descending, ties by lower index)."""
    s = _scores(scores)
    return Ranking(s, np.argsort(-s, kind="stable").astype(np.int64))


def _weights(W: Array | Probe, what: str = "global_ranking") -> np.ndarray:
    """A probe's weights [C, d] as float64: W itself or a `Probe`'s W; a `ProbeSet` (several
    probes) is refused with the forms that work."""
    if isinstance(W, ProbeSet):
        site = next(iter(W.probes), "blocks.0.hook_resid_post")
        raise InputError(
            f"{what} ranks the neurons of ONE probe: pass a Probe or its weights W [n_classes, d], e.g. "
            f"{what}(probes[{site!r}]) for the probe set's {list(W.probes)[:3]}...; for every probe at once: "
            f"{{site: {what}(p) for site, p in probes.probes.items()}}.")
    if isinstance(W, Probe):
        W = W.W
    W = np.asarray(W, np.float64)
    if W.ndim != 2 or 0 in W.shape:
        raise ValueError(f"W must be a probe weight matrix [n_classes, d]; got shape {W.shape}.")
    return W


def global_ranking(W: Array | Probe) -> Ranking:
    """Ranks neurons by Σ_c |W[c, j]| over a probe's weights W [C, d].

    Args:
        W: one probe's weights [n_classes, d], or the `Probe` itself (`probes[site]`).

    Raises:
        InputError: a `ProbeSet` (several probes: rank each, `probes[site]`).
        ValueError: W is not a non-empty [C, d] matrix.
    """
    return rank(np.abs(_weights(W)).sum(axis=0))


def class_ranking(W: Array | Probe, c: int) -> Ranking:
    """Ranks neurons by |W[c, j]| for class `c` of a probe's weights W [C, d] (or a `Probe`)."""
    W = _weights(W, "class_ranking")
    if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < W.shape[0]:
        raise ValueError(f"class {c!r} is out of range; valid classes are 0..{W.shape[0] - 1}.")
    return rank(np.abs(W[int(c)]))


# --------------------------------------------------------------------------------- masks
def k_count(k_percent: float, d: int) -> int:
    """Neurons in a k% level of d: max(1, round(k·d/100)), halves rounded up; k in (0, 100]."""
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
        raise ValueError(f"d must be a positive integer (the layer width); got {d!r}.")
    k = float(k_percent)
    if not (math.isfinite(k) and 0 < k <= 100):
        raise ValueError(f"k_percent must be in (0, 100]; got {k_percent!r}.")
    return max(1, min(int(d), math.floor(k * d / 100 + 0.5)))


def _mask(indices: np.ndarray, d: int) -> np.ndarray:
    m = np.zeros((d,), np.float32)
    m[indices] = 1.0
    return m


def top_k(scores: Array | Ranking, k_percent: float) -> np.ndarray:
    """Float32 0/1 mask [d] of the `k_count(k_percent, d)` highest-scoring neurons."""
    s = _scores(scores)
    order = np.argsort(-s, kind="stable")
    return _mask(order[: k_count(k_percent, s.size)], s.size)


def bottom_k(scores: Array | Ranking, k_percent: float) -> np.ndarray:
    """Float32 0/1 mask [d] of the `k_count(k_percent, d)` lowest-scoring neurons."""
    s = _scores(scores)
    order = np.argsort(s, kind="stable")
    return _mask(order[: k_count(k_percent, s.size)], s.size)


def top_k_levels(scores: Array | Ranking, levels: Sequence[float] = K_LEVELS) -> np.ndarray:
    """Stacked `top_k` masks [len(levels), d], one per k% level (e.g. to vmap a silencing sweep)."""
    if len(levels) == 0:
        raise ValueError("levels is empty; give k percentages such as K_LEVELS.")
    return np.stack([top_k(scores, k) for k in levels])


def random_k(
    d: int, k_percent: float, seed: int | np.random.Generator = 0, draws: int = 1
) -> np.ndarray:
    """Random control masks: [draws, d] float32, each row exactly `k_count(k_percent, d)` ones.

    Draw r takes the k smallest of `rng.random(d)` (row r of one [draws, d] draw from
    `numpy.random.default_rng(seed)`), so the masks depend only on (seed, d, k, draws).
    """
    k = k_count(k_percent, d)
    if isinstance(draws, bool) or not isinstance(draws, (int, np.integer)) or draws < 1:
        raise ValueError(f"draws must be a positive integer; got {draws!r}.")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    picks = np.argsort(rng.random((int(draws), int(d))), axis=1, kind="stable")[:, :k]
    masks = np.zeros((int(draws), int(d)), np.float32)
    np.put_along_axis(masks, picks, 1.0, axis=1)
    return masks


def layer_counts(mask: Array, n_layers: int) -> np.ndarray:
    """Selected neurons per layer [L] (int64) of a 0/1 mask [L·d] over equal-width layers
    concatenated in order (neuron g is unit g mod d of layer g // d, as in `split_concat`)."""
    m = np.asarray(mask)
    if m.ndim != 1 or isinstance(n_layers, bool) or not isinstance(n_layers, (int, np.integer)) or n_layers < 1 \
            or m.size % n_layers:
        raise ValueError(f"mask must be [L*d] with L = n_layers = {n_layers!r} equal-width layers; got shape {m.shape}.")
    return (m.reshape(int(n_layers), -1) != 0).sum(axis=1).astype(np.int64)


def layer_matched_random(mask: Array, n_layers: int, seed: int | Sequence[int] | np.random.Generator = 0,
                         draws: int = 1) -> np.ndarray:
    """Random control masks [draws, L·d] float32 with the same number of neurons in every layer
    as `mask` (a ranked selection over L equal-width layers concatenated), drawn uniformly
    within each layer.

    The uniform control (`random_k` over all L·d neurons) spreads a selection evenly over the
    layers; a ranking that concentrates in one layer (raw features of the last layer have the
    largest scale, so their probe weights rank first) is then compared with mostly other
    layers. This control keeps the ranked set's layer profile and randomises only which units
    of each layer are taken. Layer l's units of draw r are the `layer_counts(mask)[l]` smallest
    of `rng.random(d)` (from one [draws, L, d] draw of `numpy.random.default_rng(seed)`).
    """
    counts = layer_counts(mask, n_layers)
    if isinstance(draws, bool) or not isinstance(draws, (int, np.integer)) or draws < 1:
        raise ValueError(f"draws must be a positive integer; got {draws!r}.")
    L = int(n_layers)
    d = np.asarray(mask).size // L
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    # the rank of each unit's uniform number within its layer; a unit is taken if its rank < count
    ranks = np.argsort(np.argsort(rng.random((int(draws), L, d)), axis=2, kind="stable"), axis=2, kind="stable")
    return (ranks < counts[None, :, None]).reshape(int(draws), L * d).astype(np.float32)


def split_concat(masks: Array, sites: Sequence[str], d: int | None = None) -> dict[str, np.ndarray]:
    """Masks over all layers concatenated (in `sites` order) -> one mask per site.

    Neuron g of the concatenation is unit g mod d of layer g // d (SYNAPSE's global index), so
    a global top-k% maps back to (layer, unit) pairs.

    Args:
        masks: [L·d] or [G, L·d] 0/1 masks over the concatenated [CLS] vectors.
        sites: the L sites, in the order their features were concatenated.
        d: the width of one site (default: the concatenation's width / L).

    Returns:
        {site: float32 [d] or [G, d]}.
    """
    m = np.asarray(masks, np.float32)
    if m.ndim not in (1, 2):
        raise ValueError(f"masks must be [L*d] or [G, L*d]; got shape {m.shape}.")
    sites = list(sites)
    if not sites:
        raise ValueError("give at least one site.")
    width = m.shape[-1]
    d = width // len(sites) if d is None else int(d)
    if d * len(sites) != width:
        raise ValueError(f"masks have {width} neurons; {len(sites)} sites of width {d} need {d * len(sites)}.")
    return {s: m[..., i * d:(i + 1) * d] for i, s in enumerate(sites)}


def mass_cover(scores: Array | Ranking, p: float) -> np.ndarray:
    """Mask [d] of the fewest top neurons whose scores sum to at least p% of the total.

    Taking neurons in ranking order gives the largest mass for any set size, so this prefix is
    the smallest covering set. Scores must be >= 0 with a positive total; p in (0, 100].
    """
    s = _scores(scores)
    if (s < 0).any():
        raise ValueError("mass_cover needs non-negative scores (e.g. |W| sums); some are negative.")
    p = float(p)
    if not (math.isfinite(p) and 0 < p <= 100):
        raise ValueError(f"p must be a percentage in (0, 100]; got {p}.")
    order = np.argsort(-s, kind="stable")
    cum = np.cumsum(s[order])
    if cum[-1] <= 0:
        raise ValueError("mass_cover: all scores are 0, so no set covers a share of their total.")
    # Compare with the same running sum's total so that p = 100 selects exactly the non-zero mass.
    m = int(np.searchsorted(cum, p / 100 * cum[-1], side="left")) + 1
    return _mask(order[: min(m, s.size)], s.size)


# ------------------------------------------------------------------------ agreement
def spearman(a: Array | Ranking, b: Array | Ranking) -> float:
    """Spearman rank correlation between two score vectors [d] (NaN if one is constant)."""
    from scipy.stats import spearmanr

    a, b = _scores(a, "a"), _scores(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"rankings have different widths: {a.shape[0]} and {b.shape[0]}.")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")  # correlation with a constant ranking is undefined
    return float(spearmanr(a, b).statistic)


def layerwise_spearman(a: Array | Ranking, b: Array | Ranking, layers: int | Sequence[int]) -> dict:
    """Spearman ρ of two score vectors over layers concatenated in order: over the whole
    concatenation and within each layer.

    Over the concatenation, differences of scale between layers (raw features: the last
    layer's probe weights and attributions are both largest) can make ρ high, or low, whatever
    the order within each layer; the per-layer ρ compares the neurons of one layer only.

    Args:
        a, b: scores [Σ widths].
        layers: the number of equal-width layers, or each layer's width in order.

    Returns:
        {"concat": ρ over all neurons, "layers": [ρ within layer l] (NaN where one side is
        constant)}.
    """
    a, b = _scores(a, "a"), _scores(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"rankings have different widths: {a.shape[0]} and {b.shape[0]}.")
    if isinstance(layers, (int, np.integer)) and not isinstance(layers, bool):
        if layers < 1 or a.size % int(layers):
            raise ValueError(f"{a.size} neurons do not split into {layers} equal-width layers.")
        widths = [a.size // int(layers)] * int(layers)
    else:
        widths = [int(w) for w in layers]
        if not widths or min(widths) < 1 or sum(widths) != a.size:
            raise ValueError(f"layer widths {widths} must be positive and sum to the {a.size} neurons.")
    edges = np.cumsum([0] + widths)
    return {"concat": spearman(a, b), "layers": [spearman(a[lo:hi], b[lo:hi]) for lo, hi in zip(edges[:-1], edges[1:])]}


def spearman_matrix(rankings: Mapping[str, Array | Ranking] | Sequence[Array | Ranking]) -> np.ndarray:
    """Pairwise Spearman correlations [m, m] of m rankings (mapping order), 1 on the diagonal."""
    items = list(rankings.values()) if isinstance(rankings, Mapping) else list(rankings)
    if not items:
        raise ValueError("spearman_matrix got no rankings.")
    m = len(items)
    out = np.eye(m)
    for i in range(m):
        for j in range(i + 1, m):
            out[i, j] = out[j, i] = spearman(items[i], items[j])
    return out


# --------------------------------------------------------------------- attribution
@functools.partial(jax.jit, static_argnames=("config", "sites", "feature_shapes", "predicted"))
def _attribution(params: Any, batch: dict, target: jax.Array, *, config, sites: tuple[str, ...],
                 feature_shapes: tuple[tuple[int, ...], ...], predicted: bool) -> tuple[jax.Array, ...]:
    """|activation × gradient| at the classifier token ([CLS] / a decoder's last real token) of
    every site of `sites` per example: one [batch, features] per site, from ONE forward and
    backward pass (a zero Add at each site; adding 0 changes no activation, so each site's
    gradient is the one a pass with that site alone gives). Static: the architecture
    (`ArchConfig`), the sites, their feature shapes and whether the target is the prediction;
    params, inputs and targets are arguments, so every checkpoint shares it."""
    model = skeleton(config)  # parameter-free: apply takes params
    mask = batch.get("attention_mask")
    b = next(iter(batch.values())).shape[0]
    has_pos = [site_lib.position_axis(s) is not None for s in sites]
    # the classifier token: [0] for encoders, [batch, 1] (last real token) for decoders
    positions = [token_positions(config, s, mask, head_only=True) for s in sites]
    # A zero Add at [CLS] of each site: d(logit)/d(value) is the gradient at the activation.
    zeros = tuple(jnp.zeros((b, 1, *f) if p else (b, *f), jnp.float32) for f, p in zip(feature_shapes, has_pos))

    def objective(values):
        perts = {s: Add(v, positions=pos) for s, v, pos in zip(sites, values, positions)}
        out = model.apply(params, batch, perts, capture=sites, head_only=True)
        t = jnp.argmax(jax.lax.stop_gradient(out.logits), axis=1) if predicted else target
        picked = jnp.take_along_axis(out.logits, t[:, None], axis=1)
        return picked.sum(), tuple(out.captured[s] for s in sites)  # examples are independent: sum = per row

    grads, acts = jax.grad(objective, has_aux=True)(zeros)
    out = []
    for s, grad, act, p in zip(sites, grads, acts, has_pos):
        if p:
            grad = grad[:, 0]  # the Add's value has one position: the classifier token
        act = token_vector(config, s, act, mask, head_only=True)
        out.append(jnp.abs(act * grad.reshape(b, -1)))
    return tuple(out)


def attribution_ranking(
    model,
    params: Any,
    inputs: Mapping[str, np.ndarray],
    site: str,
    target: int | Array | None = None,
    batch_size: int = 64,
) -> Ranking:
    """Activation × gradient at [CLS] of `site`: score_j = mean_i |a_ij · ∂logit_t(i) / ∂a_ij|.

    Args:
        model: an `apex_jax.Model` with a classification head.
        params: its parameters.
        inputs: `model.encode(...)` output ([n, ...] arrays).
        site: a site of `model.sites` (not an attention pattern); head sites have no position.
        target: the logit to explain: None = the model's clean prediction per input, an int =
            that class for all inputs, or [n] class indices (e.g. true labels).
        batch_size: examples per forward/backward pass.

    Returns:
        Ranking over the site's [CLS] features ([d]; heads × d_head flattened for q/k/v/z).
    """
    return attribution_rankings(model, params, inputs, [site], target, batch_size)[site]


def attribution_rankings(
    model,
    params: Any,
    inputs: Mapping[str, np.ndarray],
    sites: Sequence[str],
    target: int | Array | None = None,
    batch_size: int = 64,
) -> dict[str, Ranking]:
    """`attribution_ranking` of several sites at once: {site: Ranking}, from one forward and
    backward pass per chunk (one compiled kernel for all the sites, not one per site).

    Args:
        sites: sites of `model.sites` (not attention patterns), each at most once.
        model, params, inputs, target, batch_size: as in `attribution_ranking`.
    """
    if model.config.n_classes is None:
        raise ValueError(f"{model!r} has no classification head, so there is no logit to attribute.")
    sites = check_cls_sites(model, tuple(sites))
    n = num_rows(inputs)
    n_classes = model.config.n_classes
    predicted = target is None
    if predicted:
        targets = np.zeros((n,), np.int32)
    else:
        t = np.asarray(target)
        if t.dtype.kind not in "iu" or t.ndim > 1:
            raise ValueError(
                f"target must be None, an int or [n] integer classes; got {t.dtype} {t.shape}."
            )
        targets = np.broadcast_to(t, (n,)).astype(np.int32) if t.ndim == 0 else t.astype(np.int32)
        if targets.shape != (n,):
            raise ValueError(f"target has {targets.shape[0]} entries but inputs have n = {n}.")
        bad = np.unique(targets[(targets < 0) | (targets >= n_classes)])
        if bad.size:
            raise ValueError(f"target classes {bad.tolist()} are out of range; valid: 0..{n_classes - 1}.")

    totals = None
    for chunk in iter_chunks(inputs, batch_size):
        if totals is None:
            captured = jax.eval_shape(lambda p, x: model.apply(p, x, capture=sites).captured, params, chunk.batch)
            feature_shapes = tuple(tuple(captured[s].shape[2:] if site_lib.position_axis(s) is not None
                                         else captured[s].shape[1:]) for s in sites)
        got = _attribution(params, chunk.batch, targets[chunk.rows], config=model.config, sites=sites,
                           feature_shapes=feature_shapes, predicted=predicted)
        # drop the filler rows
        parts = [np.asarray(g, np.float64)[: chunk.stop - chunk.start].sum(axis=0) for g in got]
        totals = parts if totals is None else [a + b for a, b in zip(totals, parts)]
    return {s: rank(t / n) for s, t in zip(sites, totals)}
