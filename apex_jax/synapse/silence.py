"""SYNAPSE experiment: silencing curves with random controls and the class-asymmetry matrix.

`silencing_experiment` runs, per layer site, ONE engine sweep whose grid holds every mask of
that layer: the ranked top-k% masks (global ranking), the bottom-k% masks, each class's top-k%
masks (per-class rankings), and `n_random` random k% masks for every k. The prefix before the
layer is computed once per input block and shared by all of them (DESIGN principle 5).

Scores are the model's own classifier on the inputs' labels. A ranked selection's *drop* is the
clean score minus the score with the selection silenced; the random control compares it with
the random selections' drops at the same k (z-score, Laplace-smoothed one-sided p-value).
Besides accuracy and F1, every selection has two continuous scores from the engine, means over
inputs: `margin` (the label's logit minus the largest other logit) and `kl` (KL(clean ‖
silenced) of the softmax outputs, nats). They move where no prediction flips, so a small effect
shows in them before it shows in accuracy. For `kl` the "drop" is the increase over the clean 0.

Positive controls (optional, `SilenceConfig`): selections that should have an effect when the
test can see one.
  * `attribution`: the top-k% by activation × gradient at the classifier token
    (`rankings.attribution_ranking` on the evaluation inputs, the label's logit): the neurons
    the model's decision reads most, found with the model rather than a probe.
  * `mean_ablation` (mode "zero" only): the top-k% (and attribution top-k%) *mean-ablated* —
    replaced by their mean over the evaluation inputs instead of zero — with their own random
    mean-ablated controls. Zeroing moves an activation off its usual range as well as removing
    its information; mean-ablation removes only the input-specific part, so a drop under it
    is about what the neurons carry, not about the shift.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from apex_jax.models.model import Model
from apex_jax.specs import K_LEVELS, check_k
from apex_jax.synapse import rankings, silencing

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
    mean_ablation: bool = False  # positive control: ranked and random masks also mean-ablated
    seed: int = 0

    def check(self, n_classes: int) -> None:
        check_k(self.k_levels)
        if self.n_random < 2:
            raise ValueError(f"the random control needs n_random >= 2 draws; got {self.n_random}.")
        if self.positions not in silencing.POSITIONS:
            raise ValueError(f"positions must be one of {silencing.POSITIONS}; got {self.positions!r}.")
        if self.mode not in silencing.MODES:
            raise ValueError(f"mode must be one of {silencing.MODES}; got {self.mode!r}.")
        if self.per_class and self.asymmetry_k not in self.k_levels:
            raise ValueError(f"asymmetry_k {self.asymmetry_k} must be one of the k levels {list(self.k_levels)}.")
        if self.mean_ablation and self.mode != "zero":
            raise ValueError(f"mean_ablation adds mean-ablated selections beside zeroed ones; it needs "
                             f"mode='zero' (mode {self.mode!r} already decides every selection).")


TABLE_LEVELS = ("grid", "controls", "curves", "asymmetry")  # SilencingResult.rows / to_pandas


@dataclasses.dataclass
class Selection:
    """One grid point of a layer's sweep."""

    kind: str  # "top", "bottom", "class", "random", "attribution"
    k: float
    cls: int = -1  # class for kind == "class"
    draw: int = -1  # random draw for kind == "random"
    ablation: str = "zero"  # what replaces the selected neurons: the config's mode, or "mean" (control)


@dataclasses.dataclass
class LayerResult:
    site: str
    selections: list[Selection]
    metrics: silencing.Metrics  # per selection
    counts: np.ndarray  # [n, G, C]
    margin: np.ndarray | None = None  # [n, G] mean over draws of the label's logit margin
    kl: np.ndarray | None = None  # [n, G] mean over draws of KL(clean ‖ silenced), nats

    def values(self, score: str) -> np.ndarray:
        """A score per selection [G]: a metric (`SCORES`) or the inputs' mean margin / KL."""
        if score in CONTINUOUS:
            return getattr(self, score).mean(0)
        return getattr(self.metrics, score)


@dataclasses.dataclass
class SilencingResult:
    config: SilenceConfig
    clean: silencing.Metrics  # one grid point: the clean model
    clean_pred: np.ndarray  # [n]
    layers: list[LayerResult]
    seconds: float
    perturbed_forwards: int
    clean_margin: np.ndarray | None = None  # [n] the label's logit margin of the clean forward

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
        selection is compared with the random selections of its own ablation (zeroed with
        zeroed, mean-ablated with mean-ablated). `score`: a metric of `SCORES` or "margin" /
        "kl" (`CONTINUOUS`; for "kl" the drop is the KL's increase over the clean 0)."""
        clean = self.clean_value(score)
        sign = -1.0 if score == "kl" else 1.0  # drop = effect size: larger = a bigger change
        rows = []
        for lr in self.layers:
            values = lr.values(score)
            for k in self.config.k_levels:
                for g, s in enumerate(lr.selections):
                    if s.kind == "random" or s.k != k:
                        continue
                    rand = [sign * (clean - values[r]) for r, o in enumerate(lr.selections)
                            if o.kind == "random" and o.k == k and o.ablation == s.ablation]
                    drop = sign * (clean - float(values[g]))
                    rc = silencing.random_control(drop, np.asarray(rand))
                    rows.append({"site": lr.site, "selection": s.kind, "ablation": s.ablation, "class": s.cls,
                                 "k_percent": k, "score": score, "clean": clean, "value": float(values[g]),
                                 "drop": drop, **rc})
        return rows

    def curves(self, score: str = "accuracy") -> list[dict]:
        """Curve summaries per (site, selection, ablation): area under the drop curve, k at
        half score, for the ranked selections and the random mean (a metric or "margin")."""
        if score == "kl":
            raise ValueError("curves need a score with a clean value to halve; use a metric or 'margin'.")
        clean = self.clean_value(score)
        k = np.asarray(self.config.k_levels, np.float64)
        rows = []
        for lr in self.layers:
            values = lr.values(score)
            ranked = sorted({(s.kind, s.cls, s.ablation) for s in lr.selections if s.kind != "random"})
            rand = sorted({("random", -1, s.ablation) for s in lr.selections if s.kind == "random"})
            for kind, c, ab in ranked + rand:
                v = np.array([np.mean([values[g] for g, s in enumerate(lr.selections)
                                       if s.kind == kind and s.cls == c and s.ablation == ab and s.k == kk])
                              for kk in k])
                rows.append({"site": lr.site, "selection": kind, "ablation": ab, "class": c, "score": score,
                             **silencing.curve_summary(k, clean - v, clean, v)})
        return rows

    def rows(self, level: str = "grid") -> list[dict]:
        """The rows of one of the silence run's CSVs: "grid" (silencing.csv, `table`),
        "controls" (controls.csv: accuracy, weighted F1, margin, KL), "curves" (curves.csv: accuracy,
        weighted F1, margin),
        "asymmetry" (asymmetry.csv: per site and silenced class, the F1 drop of every class;
        empty without `config.per_class`)."""
        from apex_jax.tables import check_level

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
        from apex_jax.tables import frame_from_dicts

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
                         seed: int, attribution: np.ndarray | None = None) -> tuple[list[Selection], np.ndarray]:
    """The grid of one layer: selections and their 0/1 masks [G, d].

    Args:
        global_scores: [d] neuron importance (the probe's global ranking).
        class_scores: [C, d] per-class importance, or None.
        attribution: [d] activation × gradient scores; needed when `config.attribution`.
    """
    d = len(global_scores)
    if config.attribution and attribution is None:
        raise ValueError("config.attribution needs attribution scores [d] per site (rankings.attribution_ranking).")
    sels, masks = [], []
    base = config.mode
    for ki, k in enumerate(config.k_levels):
        ranked = [("top", rankings.top_k(global_scores, k))]
        if config.attribution:
            ranked.append(("attribution", rankings.top_k(attribution, k)))
        for kind, mask in ranked:
            sels.append(Selection(kind, k, ablation=base))
            masks.append(mask)
        if config.bottom:
            sels.append(Selection("bottom", k, ablation=base))
            masks.append(rankings.bottom_k(global_scores, k))
        if config.per_class and class_scores is not None:
            for c in range(class_scores.shape[0]):
                sels.append(Selection("class", k, cls=c, ablation=base))
                masks.append(rankings.top_k(class_scores[c], k))
        rand = rankings.random_k(d, k, draws=config.n_random, seed=seed * 1000 + ki)
        for r in range(config.n_random):
            sels.append(Selection("random", k, draw=r, ablation=base))
            masks.append(rand[r])
        if config.mean_ablation:  # the same ranked and random masks, mean-ablated
            for kind, mask in ranked:
                sels.append(Selection(kind, k, ablation="mean"))
                masks.append(mask)
            for r in range(config.n_random):
                sels.append(Selection("random", k, draw=r, ablation="mean"))
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
        means: for mode="mean" or `config.mean_ablation`, the clean mean [CLS] vector per site [d].
        attribution: for `config.attribution`, activation × gradient scores per site [d]
            (`rankings.attribution_ranking(...).scores`).
        sweep_kw: passed to the engine (grid_per_step, memory_budget, mesh, run_dir, progress).
    """
    C = model.config.n_classes
    config.check(C)
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
        res = silencing.mask_sweep(model, params, batch, ids, None, masks, positions=config.positions,
                                   mode=mode, means=fills, sigma=config.sigma, draws=draws,
                                   seed=config.seed, labels=labels, **kw)
        clean_pred, clean_margin = res.clean, res.clean_margin
        layers.append(LayerResult(name, sels, silencing.metrics_from_counts(labels, res.counts), res.counts,
                                  res.mean_margin, res.mean_kl))
        seconds += res.seconds
        forwards += res.perturbed_forwards
    return SilencingResult(config, silencing.metrics(labels, clean_pred, C), clean_pred, layers, seconds, forwards,
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
    **sweep_kw,
) -> SilencingResult:
    """SYNAPSE's reference protocol: ONE probe on every layer's [CLS] concatenated ranks the
    neurons globally; the top-k% of the concatenation, mapped back to (layer, unit), are zeroed
    at the classifier token of every layer at once, in one forward.

    The grid holds, per k, the global top-k% (Σ_c |W[c, g]|), optionally the bottom-k% and each
    class's top-k% (|W[c, g]|), and `n_random` random k% of the concatenation (the control).
    With `pooler=True` a second variant runs in the same sweep: the same top-k% and random
    selections, and in addition the last layer's selected units zeroed at the classifier input
    `head.hook_cls` (BERT's pooler output, tanh(dense(·)): zeroing it equals zeroing the pooler's
    dense output, where the reference code hooks).

    Args:
        W: the concatenated probe's weights [C, L·d] (e.g. `ProbeSet[CONCAT].W`).
        sites: the L sites in the order the probe concatenated them (`ProbeSet.sites`).
        config: k levels, controls; `positions` and `mode` as in `silencing_experiment`;
            `joint` is ignored (this is always joint).
        sweep_kw: passed to the engine.

    Returns:
        A `SilencingResult` with one `LayerResult` named `ALL_LAYERS` (and `ALL_LAYERS_POOLER`).
    """
    C = model.config.n_classes
    config.check(C)
    if config.mode == "mean":
        raise ValueError("concat_silencing_experiment zeroes or adds noise; mode='mean' is per-site only "
                         "(silencing_experiment).")
    W = np.asarray(W, np.float64)
    sites = list(sites)
    d = model.config.d_model
    if W.ndim != 2 or W.shape != (C, len(sites) * d):
        raise ValueError(f"W must be [{C}, {len(sites)} * {d}] (classes × the concatenated sites); got {W.shape}.")
    labels = np.asarray(labels)
    if len(labels) != len(ids):
        raise ValueError(f"{len(labels)} labels for {len(ids)} inputs.")
    g_scores = rankings.global_ranking(W).scores
    c_scores = np.abs(W)
    sels, masks = selections_and_masks(g_scores, c_scores, config, seed=config.seed)
    grid = rankings.split_concat(masks, sites, d)
    parts = [(ALL_LAYERS, sels)]
    if pooler:
        if "head.hook_cls" not in model.sites:
            raise ValueError("pooler=True needs the head.hook_cls site; this model has no classifier input site.")
        pc = dataclasses.replace(config, bottom=False, per_class=False)
        psels, pmasks = selections_and_masks(g_scores, None, pc, seed=config.seed)  # same top and random draws
        pgrid = rankings.split_concat(pmasks, sites, d)
        grid = {s: np.concatenate([grid[s], pgrid[s]]) for s in sites}
        grid["head.hook_cls"] = np.concatenate([np.zeros((len(sels), d), np.float32), pgrid[sites[-1]]])
        parts.append((ALL_LAYERS_POOLER, psels))
    draws = config.draws if config.mode == "noise" else 1
    res = silencing.mask_sweep(model, params, batch, ids, None, grid, positions=config.positions,
                               mode=config.mode, sigma=config.sigma, draws=draws,
                               seed=config.seed, labels=labels, **sweep_kw)
    layers, start = [], 0
    for name, ss in parts:
        part = slice(start, start + len(ss))
        counts = res.counts[:, part]
        layers.append(LayerResult(name, ss, silencing.metrics_from_counts(labels, counts), counts,
                                  res.mean_margin[:, part], res.mean_kl[:, part]))
        start += len(ss)
    return SilencingResult(config, silencing.metrics(labels, res.clean, C), res.clean, layers, res.seconds,
                           res.perturbed_forwards, res.clean_margin)
