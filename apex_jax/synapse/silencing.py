"""SYNAPSE interventions through the sweep engine: silencing, mean-ablation and noise on chosen
neurons, evaluated with the model's own classifier.

A *mask sweep* runs one forward per (input, mask): the grid is a stack of neuron masks
`[G, d_model]` for one site (or a dict of them, one per site, for all-layer interventions), so
every k level, the ranked masks and all random-control masks of one layer run in a single
sharded sweep whose prefix (the activations before that layer) is computed once per input block.

Metrics come from the per-input predictions `[n, G]` (exact: one deterministic forward each):
accuracy, macro-/weighted-F1, per-class F1, the prediction distribution, and the clean → new
class map. Random controls give a z-score and a Laplace-smoothed one-sided p-value per k.
The engine also reduces continuous scores per (input, mask) — the label's logit margin (with
`labels`) and KL(clean ‖ silenced) — which move where no prediction flips.

Example (a tiny model; masks zero neuron 0, or nothing):
    >>> import numpy as np
    >>> masks = np.zeros((2, d_model), np.float32); masks[0, 0] = 1            # doctest: +SKIP
    >>> preds = mask_sweep(model, params, batch, ids, "blocks.0.hook_resid_post", masks)  # doctest: +SKIP
    >>> preds.shape                                                            # doctest: +SKIP
    (n, 2)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from apex_jax import sites as site_lib
from apex_jax.classifier_token import right_padded, single_position
from apex_jax.engine import run_sweep
from apex_jax.interventions import Noise, Replace, Scale
from apex_jax.models.decoder import classifier_positions
from apex_jax.models.model import Model

POSITIONS = ("cls", "all")
MODES = ("zero", "mean", "noise")


def _site_masks(masks: np.ndarray | Mapping[str, np.ndarray], site: str | Sequence[str] | None):
    """Normalizes masks to {site: float32 [G, d]} with one G."""
    if not isinstance(masks, Mapping):
        if site is None:
            raise ValueError("give `site` (a site name) with a mask array, or a dict {site: masks}.")
        sites = [site] if isinstance(site, str) else list(site)
        masks = {s: masks for s in sites}
    out = {s: np.asarray(m, np.float32) for s, m in masks.items()}
    if not out:
        raise ValueError("no masks given.")
    shapes = {s: m.shape for s, m in out.items()}
    if any(m.ndim != 2 for m in out.values()) or len({m.shape[0] for m in out.values()}) != 1:
        raise ValueError(f"masks must be [G, d] arrays with one G for every site; got {shapes}.")
    if any(m.shape[0] == 0 for m in out.values()):
        raise ValueError("masks have an empty grid (G = 0).")
    return out


def mask_sweep(
    model: Model,
    params: Any,
    batch: dict,
    ids: Sequence[int],
    site: str | Sequence[str] | None,
    masks: np.ndarray | Mapping[str, np.ndarray],
    *,
    positions: str = "cls",
    mode: str = "zero",
    means: Mapping[str, np.ndarray] | None = None,
    sigma: float = 1.0,
    draws: int = 1,
    seed: int = 0,
    labels: Sequence[int] | None = None,
    **sweep_kw,
):
    """Runs one intervention per mask and returns the engine's `SweepResult`.

    Args:
        site: the site the masks apply to (or several sites sharing the masks); ignored when
            `masks` is a dict {site: [G, d]}.
        masks: [G, d] 0/1 neuron masks (1 = intervene), or {site: [G, d]}.
        positions: "cls" (the classifier token only, as SYNAPSE silences: [CLS] = position 0
            for encoders, each input's last real token for decoders) or "all" positions.
        mode: "zero" (silence), "mean" (replace by `means[site]`, e.g. the clean mean [CLS]
            vector) or "noise" (add Gaussian noise of std σ × the token's RMS over the site's
            features to the selected neurons; `draws` > 1).
        means: mode "mean": per site the replacement values, [d] for every mask or [G, d] one
            row per mask (a row of zeros silences: zero- and mean-ablations in one sweep).
        labels: [n] true classes: the sweep's margins are then the label's (else the clean
            prediction's; see `SweepResult`).
        sweep_kw: passed to `run_sweep` (grid_per_step, inputs_per_step, mesh, run_dir, ...).

    Returns:
        SweepResult: counts [n, G, C] (with draws = 1, each input's prediction is one-hot),
        margin and KL sums [n, G].
    """
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}; got {positions!r}.")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}.")
    site_masks = _site_masks(masks, site)
    unknown = [s for s in site_masks if s not in model.sites]
    if unknown:
        raise ValueError(f"unknown site(s) {unknown}; see `apex-jax sites MODEL`.")
    for s, m in site_masks.items():
        if m.shape[1] != model.config.d_model:
            raise ValueError(f"masks for {s} have {m.shape[1]} neurons; the site has {model.config.d_model}.")
    if mode == "mean":
        if means is None or any(s not in means for s in site_masks):
            raise ValueError(f"mode='mean' needs means for every site: {sorted(site_masks)}.")
        for s, m in site_masks.items():
            shape = np.shape(means[s])
            if shape not in ((m.shape[1],), m.shape):
                raise ValueError(f"means for {s} have shape {shape}; expected [{m.shape[1]}] or {list(m.shape)}.")
    if mode == "noise" and not (np.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be finite and >= 0; got {sigma}.")
    if mode != "noise" and draws != 1:
        raise ValueError("deterministic interventions (zero, mean) take draws=1.")
    sites = tuple(site_masks)
    grid: dict = {"mask": dict(site_masks)}
    if mode == "mean":
        grid["mean"] = {s: np.broadcast_to(np.asarray(means[s], np.float32), site_masks[s].shape).copy()
                        for s in sites}
    if mode == "noise":
        grid["sigma"] = np.full(len(next(iter(site_masks.values()))), sigma, np.float32)
    tag = f"synapse sites={list(sites)} positions={positions} mode={mode}"
    if not model.config.is_decoder:
        perturb = MaskPerturbation(sites, positions, mode)
        return run_sweep(model, params, batch, ids, perturb, grid, sites=list(sites), draws=draws,
                         seed=seed, tag=tag, labels=labels, **sweep_kw)
    # Decoders: the classifier token is each input's last real token. The engine crops inputs
    # to their length bucket from the right, so pad on the right; the positions then survive
    # the crop, and travel with their input as a per-input grid leaf (the masks, means and σ
    # are shared: zero-copy broadcast views, read back at row 0 in the perturbation).
    batch = right_padded(batch)
    n = len(ids)
    G = len(next(iter(site_masks.values())))
    cls_pos = np.asarray(classifier_positions(jnp.asarray(batch["attention_mask"])), np.int32)
    per_input = jax.tree.map(lambda a: np.broadcast_to(a[:, None], (G, n, *a.shape[1:])), grid)
    per_input["pos"] = np.broadcast_to(cls_pos[None], (G, n))
    # one position only where the engine's suffix runs the head_only last block: sites that all
    # lie after it (the last block's output alone) give a prefix of every block, full length
    runs_last = model.resume_block(sites) < model.config.n_layers
    single = tuple(runs_last and single_position(model.config, s, True) for s in sites)
    perturb = MaskPerturbation(sites, positions, mode, per_input=True, single=single)
    return run_sweep(model, params, batch, ids, perturb, per_input, sites=list(sites), draws=draws,
                     seed=seed, tag=tag + " token=last", per_input_grid=True, labels=labels, **sweep_kw)


@dataclasses.dataclass(frozen=True)
class MaskPerturbation:
    """`(grid point, keys) -> {site: intervention}` for the engine: zero, mean-replace or add
    noise to the masked neurons (at [CLS] or every position).

    Static structure only (sites, positions, mode); masks, means and σ are grid leaves. Being a
    frozen dataclass it hashes by value, which is what the engine's kernel cache keys on, so
    repeated sweeps of one structure reuse one compiled kernel.
    """

    sites: tuple[str, ...]
    positions: str
    mode: str
    # Decoders: grid leaves are per input ([inputs, ...], shared values repeated) and
    # point["pos"] [inputs] is each input's classifier token; `single[i]`: site i has one
    # position in the engine's head_only run (the classifier token, index 0).
    per_input: bool = False
    single: tuple[bool, ...] = ()

    def __call__(self, point: dict, keys) -> dict:
        out = {}
        for i, s in enumerate(self.sites):
            pos = None
            if self.positions == "cls" and site_lib.position_axis(s) is not None:  # head sites: one vector
                if self.per_input and not self.single[i]:
                    pos = point["pos"][:, None]  # [inputs, 1]: each input's last real token
                else:
                    pos = jnp.array([0])
            mask = point["mask"][s][0] if self.per_input else point["mask"][s]
            if self.mode == "zero":
                out[s] = Scale(jnp.zeros((), jnp.float32), positions=pos, neurons=mask)
            elif self.mode == "mean":
                mean = point["mean"][s][0] if self.per_input else point["mean"][s]
                out[s] = Replace(mean, positions=pos, neurons=mask)
            else:
                sigma = point["sigma"][0] if self.per_input else point["sigma"]
                out[s] = Noise(keys, sigma, positions=pos, neurons=mask, relative=True)
        return out


def predictions(sweep) -> np.ndarray:
    """Each input's prediction per grid point [n, G] from a draws = 1 sweep."""
    if sweep.draws != 1:
        raise ValueError("predictions() needs a deterministic sweep (draws = 1); use counts for noise.")
    return sweep.counts.argmax(-1)


# ----------------------------------------------------------------------------- metrics
@dataclasses.dataclass
class Metrics:
    """Classification metrics per grid point (vectorized over G)."""

    accuracy: np.ndarray  # [G]
    macro_f1: np.ndarray  # [G]
    weighted_f1: np.ndarray  # [G]
    class_f1: np.ndarray  # [G, C]
    pred_share: np.ndarray  # [G, C] share of inputs predicted as each class
    confusion: np.ndarray  # [G, C, C] true class -> predicted class counts

    def row(self, g: int) -> dict:
        return {"accuracy": float(self.accuracy[g]), "macro_f1": float(self.macro_f1[g]),
                "weighted_f1": float(self.weighted_f1[g]), "class_f1": self.class_f1[g].tolist(),
                "pred_share": self.pred_share[g].tolist()}


def metrics(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> Metrics:
    """Accuracy, macro-/weighted-F1 (scikit-learn's definitions: F1 of a class with no true and
    no predicted inputs is 0), per-class F1 and prediction shares; `preds` [n] or [n, G]."""
    preds = np.asarray(preds)
    if preds.ndim == 1:
        preds = preds[:, None]
    if preds.size and (preds.min() < 0 or preds.max() >= n_classes):
        raise ValueError(f"labels and predictions must lie in [0, {n_classes}).")
    counts = np.zeros(preds.shape + (n_classes,), np.int64)
    np.put_along_axis(counts, preds[..., None], 1, axis=-1)
    return metrics_from_counts(labels, counts)


def metrics_from_counts(labels: np.ndarray, counts: np.ndarray) -> Metrics:
    """`metrics` over all draws of a noisy sweep: counts [n, G, C] (draws predicting each
    class) pool into one confusion matrix per grid point, each draw weighing as one prediction."""
    labels = np.asarray(labels)
    counts = np.asarray(counts, np.int64)
    n, G, C = counts.shape
    if len(labels) != n or n == 0:
        raise ValueError(f"need one label per input; got {len(labels)} labels for {n} inputs.")
    if labels.min() < 0 or labels.max() >= C:
        raise ValueError(f"labels and predictions must lie in [0, {C}).")
    onehot = np.eye(C, dtype=np.int64)[labels]  # [n, C]
    conf = np.einsum("ny,ngc->gyc", onehot, counts)  # [G, true, predicted]
    total = conf.sum((1, 2)).astype(np.float64)  # n · draws
    tp = np.diagonal(conf, axis1=1, axis2=2).astype(np.float64)
    support = conf.sum(2)
    predicted = conf.sum(1)
    denom = support + predicted
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    return Metrics(tp.sum(1) / total, f1.mean(1), (f1 * support / total[:, None]).sum(1), f1,
                   predicted / total[:, None], conf)


def transition_map(clean: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    """Clean prediction -> new prediction counts [C, C] for one grid point's predictions [n]."""
    m = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(m, (np.asarray(clean), np.asarray(preds)), 1)
    return m


def random_control(score: float | np.ndarray, random_scores: np.ndarray) -> dict:
    """Compares a ranked selection's drop with random selections' drops (higher = bigger drop).

    z = (score − mean(random)) / std(random) (sample std; ±inf when the random drops are all
    equal and differ from the score, 0 when equal), and the Laplace-smoothed one-sided p-value
    p = (1 + #{random ≥ score}) / (1 + R), which is never 0 with finitely many draws.
    """
    r = np.asarray(random_scores, np.float64)
    if r.ndim != 1 or len(r) < 2:
        raise ValueError(f"need >= 2 random draws; got {r.shape}.")
    score = float(score)
    mu, sd = float(r.mean()), float(r.std(ddof=1))
    if sd > 0:
        z = (score - mu) / sd
    else:
        z = 0.0 if score == mu else float(np.sign(score - mu) * np.inf)
    p = (1 + int((r >= score).sum())) / (1 + len(r))
    return {"z": z, "p": p, "random_mean": mu, "random_std": sd, "draws": len(r)}


def curve_summary(k: np.ndarray, drop: np.ndarray, clean_score: float, score: np.ndarray) -> dict:
    """Area under the drop curve over k (trapezoid, k in percent / 100) and the smallest k at
    which the score falls to half its clean value (linear interpolation; None if it never does)."""
    k = np.asarray(k, np.float64)
    drop = np.asarray(drop, np.float64)
    score = np.asarray(score, np.float64)
    x = k / 100.0
    area = float(np.sum((x[1:] - x[:-1]) * (drop[1:] + drop[:-1]) / 2)) if len(k) > 1 else 0.0
    half = clean_score / 2
    k_half = None
    below = np.flatnonzero(score <= half)
    if below.size:
        i = int(below[0])
        if i == 0:
            k_half = float(k[0])
        else:
            s0, s1 = score[i - 1], score[i]
            t = (s0 - half) / (s0 - s1) if s0 != s1 else 1.0
            k_half = float(k[i - 1] + t * (k[i] - k[i - 1]))
    return {"area_under_drop": area, "k_at_half_score": k_half}
