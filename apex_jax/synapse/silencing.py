"""SYNAPSE interventions through the sweep engine: silencing, mean-ablation and noise on chosen
neurons, evaluated with the model's own classifier.

A *mask sweep* runs one forward per (input, mask): the grid is a stack of neuron masks
`[G, d_model]` for one site (or a dict of them, one per site, for all-layer interventions), so
every k level, the ranked masks and all random-control masks of one layer run in a single
sharded sweep whose prefix (the activations before that layer) is computed once per input block.

Metrics come from the per-input predictions `[n, G]` (exact: one deterministic forward each):
accuracy, macro-/weighted-F1, per-class F1, the prediction distribution and the confusion
matrix. Random controls give a z-score and a Laplace-smoothed one-sided p-value per k.
The engine also reduces continuous scores per (input, mask) — the label's logit margin (with
`labels`) and KL(clean ‖ silenced) — which move where no prediction flips.

Example (a tiny model; masks zero neuron 0, or nothing):
    >>> import numpy as np
    >>> masks = np.zeros((2, d_model), np.float32); masks[0, 0] = 1            # doctest: +SKIP
    >>> preds = predictions(mask_sweep(model, params, batch, ids, "blocks.0.hook_resid_post", masks))  # doctest: +SKIP
    >>> preds.shape                                                            # doctest: +SKIP
    (n, 2)

The experiment: `silencing_experiment` runs, per layer site, ONE engine sweep whose grid holds
every mask of that layer: the ranked top-k% masks (global ranking), the bottom-k% masks, each
class's top-k% masks (per-class rankings), and `n_random` random k% masks for every k. The
prefix before the layer is computed once per input block and shared by all of them.
`concat_silencing_experiment` runs SYNAPSE's reference protocol: all layers at once from one
concatenated probe.

Scores are the model's own classifier on the inputs' labels. A ranked selection's *drop* is the
clean score minus the score with the selection silenced; the random control compares it with
the random selections' drops at the same k (z-score, Laplace-smoothed one-sided p-value).
Besides accuracy and F1, every selection has two continuous scores from the engine, means over
inputs: `margin` (the label's logit minus the largest other logit) and `kl` (KL(clean ‖
silenced) of the softmax outputs, nats). They move where no prediction flips, so a small effect
shows in them before it shows in accuracy. For `kl` the "drop" is the increase over the clean 0.

Controls (optional, `SilenceConfig`), each a selection of the same k% in the same sweep:
  * uniform random (always): `n_random` random k% of the site (or of the concatenation);
  * `layer_matched` (all layers at once only, `concat_silencing_experiment`): `n_random` random
    selections with the same number of neurons in every layer as the probe's top-k%, drawn
    within each layer (`rankings.layer_matched_random`). A raw-feature ranking sits almost
    entirely in the last layer; the uniform control then compares the last layer with the
    early ones. Per site (`silencing_experiment`) the random draws already lie in the silenced
    layer, so the uniform control is layer-matched by construction;
  * `bottom`: the bottom-k% of the same ranking;
  * `attribution` (positive control): the top-k% by activation × gradient at the classifier
    token (`rankings.attribution_ranking`): the neurons the model's decision reads most,
    found with the model rather than a probe. If these do not beat random either, the test
    cannot see an effect;
  * `mean_ablation` (mode "zero" only): the top-k%, bottom-k%, attribution top-k% and every
    random selection also *mean-ablated* — each neuron set to its mean (the caller's `means`:
    the run layer and the reproduction pass the mean over the probe's training inputs) —
    compared with the mean-ablated random selections. Zeroing moves an activation off its
    usual range as well as removing its information; mean-ablation removes only the
    input-specific part, so a drop under it is about what the neurons carry, not the shift.

`SilencingResult.controls(score)` compares every ranked selection (top, bottom, class,
attribution) with the uniform random selections of its own ablation (`z`, `p`, `random_mean`,
`random_std`, `draws`), and the top-k% also with the layer-matched ones (`layer_z`, `layer_p`,
`layer_random_mean`, `layer_random_std`, `layer_draws`; None without them), on any score:
accuracy, F1, the mean true-class margin or the mean KL. `CONTROLS_FORMAT` versions these
tables.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from apex_jax.engine import CLASSIFIER_TOKEN, run_sweep
from apex_jax.engine.reprs import compact_repr, names, span
from apex_jax.interventions import Noise, Replace, Scale
from apex_jax.models.model import Model
from apex_jax.specs import K_LEVELS, check_k
from apex_jax.synapse import rankings
from apex_jax.synapse.reuse import reusing_sweep, sweep_context
from apex_jax.tables import check_level, frame_from_dicts

POSITIONS = ("cls", "all")
MODES = ("zero", "mean", "noise")
RANDOM_KINDS = ("random", "random_layer")  # the control draws: uniform, layer-matched
# 2: controls carry the layer-matched comparison (layer_z, layer_p, ...) and mean-ablation covers
#    the bottom-k% and layer-matched selections; 1: the uniform random control only
CONTROLS_FORMAT = 2


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
    return run_sweep(model, params, batch, ids, MaskPerturbation(sites, positions, mode), grid, sites=list(sites),
                     draws=draws, seed=seed, tag=tag, labels=labels, **sweep_kw)


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

    def __call__(self, point: dict, keys) -> dict:
        # "cls": the engine resolves the classifier token per input block (engine/positions.py)
        pos = CLASSIFIER_TOKEN if self.positions == "cls" else None
        out = {}
        for s in self.sites:
            mask = point["mask"][s]
            if self.mode == "zero":
                out[s] = Scale(jnp.zeros((), jnp.float32), positions=pos, neurons=mask)
            elif self.mode == "mean":
                out[s] = Replace(point["mean"][s], positions=pos, neurons=mask)
            else:
                out[s] = Noise(keys, point["sigma"], positions=pos, neurons=mask, relative=True)
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

    def __repr__(self) -> str:
        G, C = self.class_f1.shape
        return compact_repr("Metrics", grid=G, classes=C, accuracy=span(self.accuracy),
                            macro_f1=span(self.macro_f1))

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


# ----------------------------------------------------------------------------- the experiment
SCORES = ("accuracy", "macro_f1", "weighted_f1")
CONTINUOUS = ("margin", "kl")  # engine scores: mean label margin, mean KL(clean ‖ silenced)


@dataclasses.dataclass(frozen=True)
class SilenceConfig:
    """What `silencing_experiment` sweeps."""

    k_levels: tuple[float, ...] = K_LEVELS  # percent of the site's neurons
    n_random: int = 20  # random masks per k (the control)
    positions: str = "cls"  # "cls" (SYNAPSE: the classifier token; a decoder's last real token) or "all"
    mode: str = "zero"  # "zero", "mean" (mean-ablation) or "noise" (on the selected neurons)
    sigma: float = 1.0  # noise mode: std × the token's RMS
    draws: int = 16  # noise mode: draws per (input, mask)
    bottom: bool = True  # also silence the bottom-k% (least important first)
    per_class: bool = True  # also each class's own top-k%
    asymmetry_k: float = 10.0  # k (percent) of the class-asymmetry matrix
    joint: bool = False  # silence every site at once (each with its own ranking): one sweep, site "joint"
    attribution: bool = False  # positive control: also the top-k% by activation × gradient
    mean_ablation: bool = False  # control: the ranked, bottom and random masks also mean-ablated
    # all layers at once only: n_random random masks per k with the top-k%'s count in every layer
    layer_matched: bool = False
    seed: int = 0

    def check(self, n_classes: int) -> None:
        check_k(self.k_levels)
        if self.n_random < 2:
            raise ValueError(f"the random control needs n_random >= 2 draws; got {self.n_random}.")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}; got {self.positions!r}.")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {self.mode!r}.")
        if self.per_class and self.asymmetry_k not in self.k_levels:
            raise ValueError(f"asymmetry_k {self.asymmetry_k} must be one of the k levels {list(self.k_levels)}.")
        if self.mean_ablation and self.mode != "zero":
            raise ValueError(f"mean_ablation adds mean-ablated selections beside zeroed ones; it needs "
                             f"mode='zero' (mode {self.mode!r} already decides every selection).")


TABLE_LEVELS = ("grid", "controls", "curves", "asymmetry")  # SilencingResult.rows / to_pandas


@dataclasses.dataclass
class Selection:
    """One grid point of a layer's sweep."""

    kind: str  # "top", "bottom", "class", "attribution", or a control draw "random" / "random_layer"
    k: float
    cls: int = -1  # class for kind == "class"
    draw: int = -1  # the draw of a "random" / "random_layer" selection
    ablation: str = "zero"  # what replaces the selected neurons: the config's mode, or "mean" (control)


@dataclasses.dataclass
class LayerResult:
    site: str
    selections: list[Selection]
    metrics: Metrics  # per selection
    counts: np.ndarray  # [n, G, C]
    margin: np.ndarray | None = None  # [n, G] mean over draws of the label's logit margin
    kl: np.ndarray | None = None  # [n, G] mean over draws of KL(clean ‖ silenced), nats

    def __repr__(self) -> str:
        acc = self.metrics.accuracy
        return compact_repr("LayerResult", site=self.site, selections=len(self.selections),
                            inputs=self.counts.shape[0], min_accuracy=float(acc.min()) if acc.size else None,
                            max_accuracy=float(acc.max()) if acc.size else None)

    def values(self, score: str) -> np.ndarray:
        """A score per selection [G]: a metric (`SCORES`) or the inputs' mean margin / KL."""
        if score in CONTINUOUS:
            return getattr(self, score).mean(0)
        return getattr(self.metrics, score)


@dataclasses.dataclass
class SilencingResult:
    config: SilenceConfig
    clean: Metrics  # one grid point: the clean model
    clean_pred: np.ndarray  # [n]
    layers: list[LayerResult]
    seconds: float
    perturbed_forwards: int
    clean_margin: np.ndarray | None = None  # [n] the label's logit margin of the clean forward

    def __repr__(self) -> str:
        worst = min((float(lr.metrics.accuracy.min()) for lr in self.layers if lr.metrics.accuracy.size),
                    default=None)
        return compact_repr("SilencingResult", sites=names([lr.site for lr in self.layers]),
                            selections=sum(len(lr.selections) for lr in self.layers), inputs=len(self.clean_pred),
                            k_percent=span(self.config.k_levels), n_random=self.config.n_random,
                            mode=self.config.mode, clean_accuracy=float(self.clean.accuracy[0]),
                            min_accuracy=worst, perturbed_forwards=self.perturbed_forwards, seconds=self.seconds)

    def clean_value(self, score: str) -> float:
        """The clean model's score: a metric, the mean clean margin, or 0 for the KL."""
        _check_score(score)
        if score == "margin":
            return float(self.clean_margin.mean())
        if score == "kl":
            return 0.0
        return float(getattr(self.clean, score)[0])

    # ------------------------------------------------------------------ tables
    def table(self) -> list[dict]:
        """One row per (site, selection): the scores, the mean margin and KL, the prediction shares."""
        rows = []
        for lr in self.layers:
            for g, sel in enumerate(lr.selections):
                r = {"site": lr.site, "selection": sel.kind, "ablation": sel.ablation, "class": sel.cls,
                     "draw": sel.draw, "k_percent": sel.k}
                r.update({s: float(getattr(lr.metrics, s)[g]) for s in SCORES})
                r.update({f"mean_{s}": float(lr.values(s)[g]) for s in CONTINUOUS})
                r.update({f"f1_class_{c}": float(v) for c, v in enumerate(lr.metrics.class_f1[g])})
                r.update({f"share_class_{c}": float(v) for c, v in enumerate(lr.metrics.pred_share[g])})
                rows.append(r)
        return rows

    def controls(self, score: str = "accuracy") -> list[dict]:
        """Per (site, ranked selection, k): drop, random drops' mean/std, z and p. Each
        selection is compared with the uniform random selections of its own ablation (zeroed
        with zeroed, mean-ablated with mean-ablated); the top-k% also with the layer-matched
        random selections of its ablation (`layer_*` columns; None where there are none).
        `score`: a metric of `SCORES` or "margin" / "kl" (`CONTINUOUS`; for "kl" the drop is
        the KL's increase over the clean 0). z and p as in `random_control`: p is the share of
        random draws whose drop is at least the ranked one, with the +1 correction."""
        clean = self.clean_value(score)
        sign = -1.0 if score == "kl" else 1.0  # drop = effect size: larger = a bigger change
        rows = []
        for lr in self.layers:
            values = lr.values(score)
            for k in self.config.k_levels:
                def draws(kind: str, ablation: str) -> np.ndarray:
                    return np.asarray([sign * (clean - values[r]) for r, o in enumerate(lr.selections)
                                       if o.kind == kind and o.k == k and o.ablation == ablation], np.float64)

                for g, s in enumerate(lr.selections):
                    if s.kind in RANDOM_KINDS or s.k != k:
                        continue
                    drop = sign * (clean - float(values[g]))
                    rc = random_control(drop, draws("random", s.ablation))
                    matched = draws("random_layer", s.ablation) if s.kind == "top" else np.zeros(0)
                    lc = random_control(drop, matched) if len(matched) >= 2 else dict.fromkeys(rc)
                    rows.append({"site": lr.site, "selection": s.kind, "ablation": s.ablation, "class": s.cls,
                                 "k_percent": k, "score": score, "clean": clean, "value": float(values[g]),
                                 "drop": drop, **rc, "layer_z": lc["z"], "layer_p": lc["p"],
                                 "layer_random_mean": lc["random_mean"], "layer_random_std": lc["random_std"],
                                 "layer_draws": lc["draws"]})
        return rows

    def curves(self, score: str = "accuracy") -> list[dict]:
        """Curve summaries per (site, selection, ablation): area under the drop curve, k at
        half score, for the ranked selections and the random means (uniform "random" and, if
        drawn, layer-matched "random_layer"), on a metric or "margin"."""
        if score == "kl":
            raise ValueError("curves need a score with a clean value to halve; use a metric or 'margin'.")
        clean = self.clean_value(score)
        k = np.asarray(self.config.k_levels, np.float64)
        rows = []
        for lr in self.layers:
            values = lr.values(score)
            ranked = sorted({(s.kind, s.cls, s.ablation) for s in lr.selections if s.kind not in RANDOM_KINDS})
            rand = sorted({(s.kind, -1, s.ablation) for s in lr.selections if s.kind in RANDOM_KINDS})
            for kind, c, ab in ranked + rand:
                v = np.array([np.mean([values[g] for g, s in enumerate(lr.selections)
                                       if s.kind == kind and s.cls == c and s.ablation == ab and s.k == kk])
                              for kk in k])
                rows.append({"site": lr.site, "selection": kind, "ablation": ab, "class": c, "score": score,
                             **curve_summary(k, clean - v, clean, v)})
        return rows

    def rows(self, level: str = "grid") -> list[dict]:
        """The rows of one of the silence run's CSVs: "grid" (silencing.csv, `table`),
        "controls" (controls.csv: accuracy, weighted F1, margin, KL), "curves" (curves.csv: accuracy,
        weighted F1, margin),
        "asymmetry" (asymmetry.csv: per site and silenced class, the F1 drop of every class;
        empty without `config.per_class`)."""
        check_level(level, TABLE_LEVELS, "SilencingResult")
        if level == "grid":
            return self.table()
        if level == "controls":
            return [r for score in ("accuracy", "weighted_f1", "margin", "kl") for r in self.controls(score)]
        if level == "curves":
            return [r for score in ("accuracy", "weighted_f1", "margin") for r in self.curves(score)]
        if not self.config.per_class:
            return []
        rows = []
        for lr in self.layers:
            m = self.asymmetry(lr.site)
            rows += [{"site": lr.site, "silenced_class": i, **{f"f1_drop_class_{j}": m[i, j] for j in range(len(m))}}
                     for i in range(len(m))]
        return rows

    def to_pandas(self, level: str = "grid"):
        """One of the silence run's tables as a pandas DataFrame, with its CSV's columns (see `rows`):
        "grid" — one row per grid point (site, selection, class, draw, k_percent: the scores,
        per-class F1 and prediction shares); "controls"; "curves"; "asymmetry".

        Raises:
            InputError: another level. ImportError: pandas is not installed
                (`pip install "apex-jax[pandas]"`).
        """
        return frame_from_dicts(self.rows(level))

    def asymmetry(self, site: str | None = None) -> np.ndarray:
        """[C, C]: drop in class c2's F1 when class c1's own top-k% neurons are silenced
        (k = config.asymmetry_k), at `site` (default: the last layer swept)."""
        lr = self.layers[-1] if site is None else next(l for l in self.layers if l.site == site)
        C = self.clean.class_f1.shape[1]
        m = np.full((C, C), np.nan)
        for g, s in enumerate(lr.selections):
            if s.kind == "class" and s.k == self.config.asymmetry_k:
                m[s.cls] = self.clean.class_f1[0] - lr.metrics.class_f1[g]
        return m


def _check_score(score: str) -> None:
    if score not in SCORES + CONTINUOUS:
        raise ValueError(f"score must be one of {SCORES + CONTINUOUS}; got {score!r}.")


def selections_and_masks(global_scores: np.ndarray, class_scores: np.ndarray | None, config: SilenceConfig,
                         seed: int, attribution: np.ndarray | None = None,
                         n_layers: int | None = None) -> tuple[list[Selection], np.ndarray]:
    """The grid of one layer (or of all layers concatenated): selections and their 0/1 masks [G, d].

    Per k, in this order: the top-k% ("top"), the attribution top-k% (`config.attribution`),
    the bottom-k% (`config.bottom`), each class's top-k% (`config.per_class`), `n_random`
    uniform random k% ("random"), `n_random` layer-matched random ("random_layer",
    `config.layer_matched`); then, with `config.mean_ablation`, the same top, attribution,
    bottom and random masks again with ablation "mean".

    Args:
        global_scores: [d] neuron importance (the probe's global ranking).
        class_scores: [C, d] per-class importance, or None.
        attribution: [d] activation × gradient scores; needed when `config.attribution`.
        n_layers: how many equal-width layers `global_scores` concatenates; needed when
            `config.layer_matched`.
    """
    d = len(global_scores)
    if config.attribution and attribution is None:
        raise ValueError("config.attribution needs attribution scores [d] per site (rankings.attribution_ranking).")
    if config.layer_matched and n_layers is None:
        raise ValueError("config.layer_matched needs n_layers (the layers the scores concatenate).")
    sels, masks = [], []
    base = config.mode
    for ki, k in enumerate(config.k_levels):
        top = rankings.top_k(global_scores, k)
        ranked = [("top", top)]
        if config.attribution:
            ranked.append(("attribution", rankings.top_k(attribution, k)))
        if config.bottom:
            ranked.append(("bottom", rankings.bottom_k(global_scores, k)))
        for kind, mask in ranked:
            sels.append(Selection(kind, k, ablation=base))
            masks.append(mask)
        if config.per_class and class_scores is not None:
            for c in range(class_scores.shape[0]):
                sels.append(Selection("class", k, cls=c, ablation=base))
                masks.append(rankings.top_k(class_scores[c], k))
        draws = [("random", rankings.random_k(d, k, draws=config.n_random, seed=seed * 1000 + ki))]
        if config.layer_matched:  # its own stream: adding it leaves the uniform draws as they were
            draws.append(("random_layer", rankings.layer_matched_random(
                top, n_layers, seed=np.random.default_rng((seed, ki, 1)), draws=config.n_random)))
        for kind, rand in draws:
            for r in range(config.n_random):
                sels.append(Selection(kind, k, draw=r, ablation=base))
                masks.append(rand[r])
        if config.mean_ablation:  # the same ranked and random masks, mean-ablated
            for kind, mask in ranked:
                sels.append(Selection(kind, k, ablation="mean"))
                masks.append(mask)
            for kind, rand in draws:
                for r in range(config.n_random):
                    sels.append(Selection(kind, k, draw=r, ablation="mean"))
                    masks.append(rand[r])
    return sels, np.stack(masks).astype(np.float32)


def _fills(sels: list[Selection], means: np.ndarray) -> np.ndarray:
    """Replacement values [G, d] of a mixed sweep: the mean for mean-ablated selections, 0 else."""
    use = np.array([s.ablation == "mean" for s in sels])
    return np.where(use[:, None], np.asarray(means, np.float32)[None], np.float32(0))


def silencing_experiment(
    model: Model,
    params: Any,
    batch: dict,
    labels: np.ndarray,
    ids: Sequence[int],
    scores: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
    config: SilenceConfig = SilenceConfig(),
    means: Mapping[str, np.ndarray] | None = None,
    attribution: Mapping[str, np.ndarray] | None = None,
    **sweep_kw,
) -> SilencingResult:
    """Silencing curves for every site in `scores` ({site: (global [d], per-class [C, d])}).

    Args:
        batch, labels, ids: the evaluation inputs (encoded), their labels [n] and stable ids.
        scores: neuron importance per site, e.g. from a probe (`rankings.global_ranking`).
        means: for mode="mean" or `config.mean_ablation`, the value each neuron is set to per
            site [d]: its mean [CLS] activation over the training inputs (the run layer passes
            the probe's training mean) or over any reference set the caller chooses.
        attribution: for `config.attribution`, activation × gradient scores per site [d]
            (`rankings.attribution_ranking(...).scores`).
        sweep_kw: passed to the engine (grid_per_step, memory_budget, mesh, run_dir, progress).

    Raises:
        ValueError: `config.layer_matched` (per site the random draws already lie in the
            silenced layer: it is for `concat_silencing_experiment`), missing means or
            attribution scores.
    """
    C = model.config.n_classes
    config.check(C)
    if config.layer_matched:
        raise ValueError("layer_matched is a control of concat_silencing_experiment (one ranking over all layers); "
                         "per site the random draws already lie in the silenced layer, so they are layer-matched.")
    labels = np.asarray(labels)
    if len(labels) != len(ids):
        raise ValueError(f"{len(labels)} labels for {len(ids)} inputs.")
    if not scores:
        raise ValueError("no sites to silence: give scores for at least one site.")
    layers = []
    seconds, forwards = 0.0, 0
    clean_pred = None
    needs_means = config.mode == "mean" or config.mean_ablation
    if needs_means and (means is None or any(s not in means for s in scores)):
        raise ValueError(f"mode='mean' and mean_ablation need the mean [CLS] vector of every site: {list(scores)}.")
    if config.attribution and (attribution is None or any(s not in attribution for s in scores)):
        raise ValueError(f"config.attribution needs attribution scores for every site: {list(scores)}.")
    grids = {site: selections_and_masks(np.asarray(g), c, config, seed=config.seed + si,
                                        attribution=None if attribution is None else np.asarray(attribution[site]))
             for si, (site, (g, c)) in enumerate(scores.items())}
    # one sweep per site (prefix cached before it), or one joint sweep over all sites at once
    jobs = ([("joint", next(iter(grids.values()))[0], {s: m for s, (_, m) in grids.items()})] if config.joint
            else [(site, sels, {site: masks}) for site, (sels, masks) in grids.items()])
    draws = config.draws if config.mode == "noise" else 1
    # zeroed and mean-ablated selections share one sweep: replace by 0 or by the mean
    mode = "mean" if config.mean_ablation else config.mode
    clean_margin = None
    for j, (name, sels, masks) in enumerate(jobs):
        fills = None
        if config.mean_ablation:
            fills = {s: _fills(sels, means[s]) for s in masks}
        elif config.mode == "mean":
            fills = {s: means[s] for s in masks}
        kw = {"desc": f"silencing {name} ({j + 1}/{len(jobs)})", **sweep_kw}  # a progress label per sweep
        res = mask_sweep(model, params, batch, ids, None, masks, positions=config.positions,
                                   mode=mode, means=fills, sigma=config.sigma, draws=draws,
                                   seed=config.seed, labels=labels, **kw)
        clean_pred, clean_margin = res.clean, res.clean_margin
        layers.append(LayerResult(name, sels, metrics_from_counts(labels, res.counts), res.counts,
                                  res.mean_margin, res.mean_kl))
        seconds += res.seconds
        forwards += res.perturbed_forwards
    return SilencingResult(config, metrics(labels, clean_pred, C), clean_pred, layers, seconds, forwards,
                           clean_margin)


# ------------------------------------------------------------ the reference protocol: all layers at once
ALL_LAYERS = "all layers"
ALL_LAYERS_POOLER = "all layers + pooler"


def concat_silencing_experiment(
    model: Model,
    params: Any,
    batch: dict,
    labels: np.ndarray,
    ids: Sequence[int],
    W: np.ndarray,
    sites: Sequence[str],
    config: SilenceConfig = SilenceConfig(),
    pooler: bool = False,
    means: Mapping[str, np.ndarray] | None = None,
    attribution: Mapping[str, np.ndarray] | None = None,
    reuse: dict | None = None,
    **sweep_kw,
) -> SilencingResult:
    """SYNAPSE's reference protocol: ONE probe on every layer's [CLS] concatenated ranks the
    neurons globally; the top-k% of the concatenation, mapped back to (layer, unit), are zeroed
    at the classifier token of every layer at once, in one forward.

    The grid holds, per k, the global top-k% (Σ_c |W[c, g]|), optionally the attribution
    top-k% of the concatenated activation × gradient scores, the bottom-k% and each class's
    top-k% (|W[c, g]|), `n_random` random k% of the concatenation (the uniform control) and,
    with `config.layer_matched`, `n_random` random selections with the top-k%'s count in every
    layer; with `config.mean_ablation` the top, attribution, bottom and random selections again,
    mean-ablated (each neuron set to `means[site]`). With `pooler=True` a second variant runs in
    the same sweep: the top-k% and the random (uniform and layer-matched) selections, zeroed, and
    in addition the last layer's selected units zeroed at the classifier input `head.hook_cls`
    (BERT's pooler output, tanh(dense(·)): zeroing it equals zeroing the pooler's dense output,
    where the reference code hooks).

    Args:
        W: the concatenated probe's weights [C, L·d] (e.g. `ProbeSet[CONCAT].W`).
        sites: the L sites in the order the probe concatenated them (`ProbeSet.sites`).
        config: k levels, controls; `positions` and `mode` as in `silencing_experiment`;
            `joint` is ignored (this is always joint).
        means: with `config.mean_ablation`, the value per site [d] each neuron is set to (e.g.
            the mean [CLS] over the probe's training inputs).
        attribution: with `config.attribution`, activation × gradient scores per site [d]; the
            attribution top-k% is taken over their concatenation in `sites` order.
        reuse: a dict the caller keeps across experiments on the same model, parameters,
            inputs and engine settings (e.g. every probe trained on one model): grid points already computed there
            (the seeded random controls, the attribution top-k%) are not run again
            (`reuse.reusing_sweep`; zeroing and mean-ablation only). None: run everything.
        sweep_kw: passed to the engine.

    Returns:
        A `SilencingResult` with one `LayerResult` named `ALL_LAYERS` (and `ALL_LAYERS_POOLER`);
        its `perturbed_forwards` and `seconds` count what ran in this call.
    """
    C = model.config.n_classes
    config.check(C)
    if config.mode == "mean":
        raise ValueError("concat_silencing_experiment zeroes or adds noise (mode 'zero' or 'noise'); mean-ablation "
                         "runs beside zeroing with config.mean_ablation=True.")
    W = np.asarray(W, np.float64)
    sites = list(sites)
    d = model.config.d_model
    if W.ndim != 2 or W.shape != (C, len(sites) * d):
        raise ValueError(f"W must be [{C}, {len(sites)} * {d}] (classes × the concatenated sites); got {W.shape}.")
    labels = np.asarray(labels)
    if len(labels) != len(ids):
        raise ValueError(f"{len(labels)} labels for {len(ids)} inputs.")
    for name, given, needed in (("means", means, config.mean_ablation), ("attribution", attribution, config.attribution)):
        if needed and (given is None or any(s not in given for s in sites)):
            raise ValueError(f"config.{'mean_ablation' if name == 'means' else 'attribution'} needs {name} [d] for "
                             f"every site: {sites}.")
    g_scores = rankings.global_ranking(W).scores
    c_scores = np.abs(W)
    attr = None if not config.attribution else np.concatenate([np.asarray(attribution[s], np.float64) for s in sites])
    if attr is not None and attr.shape != g_scores.shape:
        raise ValueError(f"attribution scores cover {attr.size} neurons; the sites have {g_scores.size}.")
    sels, masks = selections_and_masks(g_scores, c_scores, config, seed=config.seed, attribution=attr,
                                       n_layers=len(sites))
    grid = rankings.split_concat(masks, sites, d)
    parts = [(ALL_LAYERS, sels)]
    all_sels = list(sels)
    if pooler:
        if "head.hook_cls" not in model.sites:
            raise ValueError("pooler=True needs the head.hook_cls site; this model has no classifier input site.")
        pc = dataclasses.replace(config, bottom=False, per_class=False, attribution=False, mean_ablation=False)
        psels, pmasks = selections_and_masks(g_scores, None, pc, seed=config.seed, n_layers=len(sites))
        pgrid = rankings.split_concat(pmasks, sites, d)  # the same top and random draws as the first variant
        grid = {s: np.concatenate([grid[s], pgrid[s]]) for s in sites}
        grid["head.hook_cls"] = np.concatenate([np.zeros((len(sels), d), np.float32), pgrid[sites[-1]]])
        parts.append((ALL_LAYERS_POOLER, psels))
        all_sels += psels
    fills = None
    if config.mean_ablation:  # zeroed and mean-ablated selections share one sweep: replace by 0 or by the mean
        fills = {s: _fills(all_sels, means[s]) if s in sites else np.zeros_like(grid[s]) for s in grid}
    draws = config.draws if config.mode == "noise" else 1
    if reuse is not None and config.mode != "noise":
        def sweep(masks, values):  # the rows `reuse` has not seen
            return mask_sweep(model, params, batch, ids, None, masks, positions=config.positions,
                              mode="zero" if values is None else "mean", means=values, labels=labels, **sweep_kw)

        res = reusing_sweep(reuse, sweep, grid, fills, sweep_context(ids, labels, config.positions))
    else:
        res = mask_sweep(model, params, batch, ids, None, grid, positions=config.positions,
                         mode="mean" if config.mean_ablation else config.mode, means=fills, sigma=config.sigma,
                         draws=draws, seed=config.seed, labels=labels, **sweep_kw)
    layers, start = [], 0
    for name, ss in parts:
        part = slice(start, start + len(ss))
        counts = res.counts[:, part]
        layers.append(LayerResult(name, ss, metrics_from_counts(labels, counts), counts,
                                  res.mean_margin[:, part], res.mean_kl[:, part]))
        start += len(ss)
    return SilencingResult(config, metrics(labels, res.clean, C), res.clean, layers, res.seconds,
                           res.perturbed_forwards, res.clean_margin)
