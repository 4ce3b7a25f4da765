"""APEX analysis on the sweep engine: consistency curves, escape noise, transitions, large-σ bias.

Noise scale. By default σ is *relative*: the noise at a site has standard deviation
σ · RMS(site), where RMS(site) is the root-mean-square of that site's clean activations over
the analysed inputs' real tokens (`calibrate_rms`). Residual streams of different models and
layers live on different scales; relative σ makes one σ grid mean the same signal-to-noise ratio
everywhere, so curves of different models and sites are comparable. `relative=False` uses σ as
an absolute standard deviation.

Noise units (`noise_unit`, relative σ only; `NOISE_UNITS`): "site-rms" (the default) is the
site's RMS over all its dimensions. In decoder LMs a few residual dimensions reach ~1e4
("massive activations") and dominate that RMS, so σ = 0.01 already drowns every other
dimension. "dim-rms" scales each dimension by its own RMS over the clean inputs' real tokens (a
[d_model] scale per residual site): every dimension gets noise σ times its own size.
"median-abs" is a robust per-site scale: the median absolute clean activation, which the
massive dimensions barely move. On SmolLM2-135M only median-abs gives a curve that leaves 1.0
and reaches chance over σ ≈ 0.01–4 (README, APEX section): dim-rms perturbs the massive
dimensions in proportion to their size, which breaks the model as site-rms does.

Common random numbers. Draw d of an input uses the same noise direction z_d at every σ
(noise = σ·z_d), so the share of draws keeping the clean prediction changes across the grid only
through σ. This lowers the variance of consistency curves, gives each draw a well-defined
escape point, and lets the adaptive bisection (`adaptive_escape`) reproduce the fine grid.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from apex_jax import sites as site_lib
from apex_jax import tables
from apex_jax.engine import SweepResult, run_sweep, sweep_inputs
from apex_jax.engine.reprs import compact_repr, span
from apex_jax.errors import InputError
from apex_jax.interventions import Noise
from apex_jax.models.model import Model
from apex_jax.specs import check_sigmas

#: The noise units of relative σ: name -> what the noise's standard deviation is σ times.
NOISE_UNITS = {
    "site-rms": "the site's RMS over all its dimensions and real tokens (one scale per site)",
    "dim-rms": "each dimension's own RMS over the real tokens (a [d_model] scale per residual site)",
    "median-abs": "the site's median absolute activation over real tokens (one robust scale per site)",
}


def calibrate_rms(model: Model, params: Any, batch: dict, sites: Sequence[str]) -> dict[str, float]:
    """RMS of each site's clean activations over real tokens (all tokens for non-text models)."""
    out = model.jitted(tuple(sites))(params, batch)
    mask = batch.get("attention_mask")
    rms = {}
    for s in sites:
        x = np.asarray(out.captured[s], np.float64)
        if mask is not None and x.ndim >= 3 and x.shape[:2] == np.shape(mask):
            x = x[np.asarray(mask) > 0]
        rms[s] = float(np.sqrt(np.mean(np.square(x))))
    return rms


def check_noise_unit(noise_unit: str, relative: bool = True) -> str:
    """`noise_unit` if it is one of `NOISE_UNITS` (and σ is relative, unless it is the default)."""
    if noise_unit not in NOISE_UNITS:
        raise InputError(f"noise_unit must be one of {', '.join(NOISE_UNITS)}; got {noise_unit!r}")
    if not relative and noise_unit != "site-rms":
        raise InputError(f"noise_unit {noise_unit!r} scales relative σ, but σ is absolute (relative=False / "
                         "--absolute); drop one of them")
    return noise_unit


def calibrate_scale(model: Model, params: Any, batch: dict, sites: Sequence[str],
                    noise_unit: str = "site-rms") -> dict[str, Any]:
    """The unit of relative σ at each site, from its clean activations over real tokens.

    Returns {site: scale}: a float for "site-rms" (`calibrate_rms`) and "median-abs" (the median
    of |x|), and for "dim-rms" a float64 array of the site's shape without the batch axis, its
    position axis (if any) kept with size 1 so that it broadcasts over tokens: [1, d_model] for a
    residual site, [1, n_heads, d_head] for attention heads, [d_model] for head.hook_cls.

    Raises:
        InputError: an unknown unit, or "dim-rms" at attention patterns (no feature axis: their
            last axis is a position).
    """
    check_noise_unit(noise_unit)
    if noise_unit == "site-rms":
        return calibrate_rms(model, params, batch, sites)
    if noise_unit == "dim-rms":
        bad = [s for s in sites if site_lib.parse(s)[1] == "attn.hook_pattern"]
        if bad:
            raise InputError(f"noise_unit 'dim-rms' needs a feature axis; {bad[0]} is an attention pattern "
                             "(its last axis is a key position): use site-rms or median-abs there")
    out = model.jitted(tuple(sites))(params, batch)
    mask = batch.get("attention_mask")
    scales = {}
    for s in sites:
        x = np.asarray(out.captured[s], np.float64)
        pos = site_lib.position_axis(s)
        real = mask is not None and x.ndim >= 3 and x.shape[:2] == np.shape(mask)
        if noise_unit == "median-abs":
            scales[s] = float(np.median(np.abs(x[np.asarray(mask) > 0] if real else x)))
            continue
        if real:  # [tokens, *features]: the real tokens only, then back to a position axis of 1
            scales[s] = np.sqrt(np.mean(np.square(x[np.asarray(mask) > 0]), axis=0))[None]
        else:
            axes = (0,) if pos is None or x.ndim < 3 else (0, pos)
            scales[s] = np.sqrt(np.mean(np.square(x), axis=axes, keepdims=True))[0]
    return scales


@dataclasses.dataclass
class ApexResult:
    """Counts and continuous scores of an APEX sweep on a σ grid and the analyses read from them.

    The engine's margin and KL are taken against the clean prediction (APEX asks whether noise
    moves the model off its own answer, not off the label), so at σ = 0 the margin is the clean
    confidence margin and the KL is 0.

    Escape σ. `escape_sigma()` is the *grid* estimator: the smallest grid σ whose share kept is
    below the threshold. `AdaptiveEscape.escape_sigma` is the *bisection* estimator (the upper end
    of a bracket of stated relative width); `reproduce/common.escape_sigma` interpolates in log σ.
    All three estimate one quantity, the σ at which the share of draws keeping the clean
    prediction falls below the threshold; every output names the one it holds.
    """

    sigmas: np.ndarray  # [G]
    sites: list[str]
    sweep: SweepResult
    threshold: float
    site_rms: dict[str, float] | None
    ids: np.ndarray | None = None  # [n] the inputs' ids (None: 0..n-1)
    noise_unit: str = "site-rms"  # the unit of relative σ (NOISE_UNITS); ignored when σ is absolute
    noise_scale: dict[str, Any] | None = None  # {site: float or per-dimension array} (None: absolute σ)

    def __repr__(self) -> str:
        esc = self.escape_sigma()
        return compact_repr("ApexResult", inputs=len(self.clean), sigmas=span(self.sigmas), sites=len(self.sites),
                            draws=self.sweep.draws, share_kept=float(self.consistency.mean()),
                            escaped=int(np.isfinite(esc).sum()), median_escape_sigma=float(np.median(esc)))

    @property
    def clean(self) -> np.ndarray:
        return self.sweep.clean

    @property
    def probs(self) -> np.ndarray:
        """p̂(y | x, σ): [n, G, C]."""
        return self.sweep.counts / self.sweep.draws

    @property
    def consistency(self) -> np.ndarray:
        """Share of draws keeping the clean prediction: [n, G]."""
        return self.sweep.kept

    @property
    def mean_margin(self) -> np.ndarray:
        """Mean over draws of the clean prediction's logit margin (its logit minus the largest
        other) under noise: [n, G]. Positive while the clean class is kept on average."""
        return self.sweep.mean_margin

    @property
    def mean_kl(self) -> np.ndarray:
        """Mean over draws of KL(clean ‖ noisy) of the softmax outputs, in nats: [n, G]."""
        return self.sweep.mean_kl

    @property
    def clean_margin(self) -> np.ndarray:
        """The clean forward's margin of its own prediction (the confidence baseline): [n]."""
        return self.sweep.clean_margin

    def escape_sigma(self) -> np.ndarray:
        """Smallest grid σ whose consistency is below the threshold; inf if none: [n]."""
        below = self.consistency < self.threshold
        first = np.argmax(below, axis=1)
        return np.where(below.any(1), self.sigmas[first], np.inf)

    def transitions(self, sigma_index: int) -> np.ndarray:
        """Clean class -> noisy class draw counts at one σ: [C, C]."""
        C = self.probs.shape[2]
        m = np.zeros((C, C), np.int64)
        np.add.at(m, self.clean, self.sweep.counts[:, sigma_index])
        return m

    def top_transition(self, sigma_index: int) -> np.ndarray:
        """Each input's most likely non-clean class at one σ (-1 if no draw left the clean one): [n]."""
        c = self.sweep.counts[:, sigma_index].copy()
        c[np.arange(len(c)), self.clean] = -1
        return np.where(c.max(1) > 0, c.argmax(1), -1)

    def class_shares(self, sigma_index: int = -1) -> np.ndarray:
        """Share of all draws over all inputs predicting each class at one σ: [C] (draws with
        non-finite logits predict no class: the shares then sum to less than 1)."""
        c = self.sweep.counts[:, sigma_index].sum(0)
        return c / (self.sweep.counts.shape[0] * self.sweep.draws)

    def bias(self, sigma_index: int = -1) -> dict:
        """Large-σ model bias: class shares, entropy (nats), dominant class and its share."""
        shares = self.class_shares(sigma_index)
        nz = shares[shares > 0]
        nonfinite = float(self.sweep.nonfinite[:, sigma_index].mean())
        return {"sigma": float(self.sigmas[sigma_index]), "class_shares": shares.tolist(),
                "entropy": float(-(nz * np.log(nz)).sum()),
                # no class dominates draws that all went non-finite
                "dominant_class": int(shares.argmax()) if shares.max() > 0 else None,
                "dominant_share": float(shares.max()), "nonfinite_share": nonfinite}

    def transition_index(self) -> int:
        """The grid index used for transitions: the smallest σ at which any draw leaves its clean
        prediction (small-σ transitions, as in APEX); the last σ if none does."""
        moved = (self.consistency < 1).any(0)
        return int(np.argmax(moved)) if moved.any() else len(self.sigmas) - 1

    def to_pandas(self, level: str = "input", *, labels: Sequence[int] | None = None,
                  texts: Sequence[str] | None = None):
        """The result as a pandas DataFrame with the columns of the run folder's CSV.

        Args:
            level: "input": one row per input, the columns of samples.csv (id, label,
                clean_prediction, escape_sigma — inf if the input never escapes on the grid —,
                top_transition, kept_sigma_{σ} per σ); "grid": one row per σ, the columns of
                sigmas.csv (sigma, share_kept, flip_rate, share_escaped, dominant_class,
                dominant_share, entropy).
            labels: the inputs' labels [n] for the "label" column; without them the column is left out.
            texts: the inputs' texts [n] for samples.csv's "text" column (its first 120
                characters on one line); without them the column is left out.

        Raises:
            InputError: another level. ImportError: pandas is not installed
                (`pip install "apex-jax[pandas]"`).
        """
        tables.check_level(level, ("input", "grid"), "ApexResult")
        if level == "grid":
            return tables.frame(*sigmas_table(self))
        n = len(self.clean)
        ids = self.ids if self.ids is not None else np.arange(n)
        if labels is not None and len(labels) != n:
            raise InputError(f"ApexResult.to_pandas: {len(labels)} labels for {n} inputs")
        if texts is not None and len(texts) != n:
            raise InputError(f"ApexResult.to_pandas: {len(texts)} texts for {n} inputs")
        df = tables.frame(*samples_table(self, ids, labels if labels is not None else [0] * n, texts))
        return df if labels is not None else df.drop(columns="label")



# The run folder's tables (samples.csv, sigmas.csv) and `ApexResult.to_pandas`: one definition of every column.
#: samples.csv shows this many characters of each input text (the rest as "…").
TEXT_SHOWN = 120


def _shown(text: str) -> str:
    text = " ".join(str(text).split())  # one line: newlines and tabs as spaces
    return text if len(text) <= TEXT_SHOWN else text[:TEXT_SHOWN - 1] + "…"


def samples_table(result: ApexResult, ids: Sequence[int], labels: Sequence[Any],
                  texts: Sequence[str] | None = None) -> tuple[list[str], list[list]]:
    """(header, rows) of samples.csv: id, label, [text: the input, its first 120 characters on
    one line, when `texts` are given], clean_prediction, escape_sigma (grid estimator,
    inf if the input never escapes on the grid), top_transition, kept_sigma_{σ} per σ,
    clean_margin (the clean prediction's logit margin), margin_sigma_{σ} and kl_sigma_{σ} per σ
    (means over draws of the margin and of KL(clean ‖ noisy), nats)."""
    esc = result.escape_sigma()
    kept, margin, kl = result.consistency, result.mean_margin, result.mean_kl
    clean_margin = result.clean_margin
    top = result.top_transition(result.transition_index())
    shown = [[_shown(t)] for t in texts] if texts is not None else [[] for _ in ids]
    header = ["id", "label", *(["text"] if texts is not None else []), "clean_prediction", "escape_sigma",
              "top_transition",
              *(f"kept_sigma_{s:.6g}" for s in result.sigmas), "clean_margin",
              *(f"margin_sigma_{s:.6g}" for s in result.sigmas), *(f"kl_sigma_{s:.6g}" for s in result.sigmas)]
    rows = [[ids[j], labels[j], *shown[j], result.clean[j], esc[j], top[j], *kept[j].tolist(), float(clean_margin[j]),
             *margin[j].tolist(), *kl[j].tolist()] for j in range(len(ids))]
    return header, rows


def sigmas_table(result: ApexResult) -> tuple[list[str], list[list]]:
    """(header, rows) of sigmas.csv, one row per σ: sigma, share_kept (mean over inputs of the
    share of draws keeping the clean prediction), flip_rate (1 - share_kept), share_escaped
    (inputs whose grid escape σ is at most this σ), dominant_class, dominant_share and entropy
    (nats) of the class shares of all draws at this σ, mean_margin and mean_kl (means over
    inputs of the clean-prediction margin and of KL(clean ‖ noisy), nats), clean_margin (the
    mean clean margin, the same on every row) and nonfinite_share (the share of draws whose
    logits were NaN or inf: they predict no class and are left out of the means)."""
    esc = result.escape_sigma()
    kept = result.consistency.mean(0)
    margin, kl = result.mean_margin.mean(0), result.mean_kl.mean(0)
    clean = float(result.clean_margin.mean())
    header = ["sigma", "share_kept", "flip_rate", "share_escaped", "dominant_class", "dominant_share", "entropy",
              "mean_margin", "mean_kl", "clean_margin", "nonfinite_share"]
    rows = []
    for g, s in enumerate(result.sigmas):
        b = result.bias(g)
        rows.append([float(s), float(kept[g]), float(1 - kept[g]), float((esc <= s).mean()), b["dominant_class"],
                     b["dominant_share"], b["entropy"], float(margin[g]), float(kl[g]), clean, b["nonfinite_share"]])
    return header, rows


def run_apex(
    model: Model,
    *args: Any,
    params: Any = None,
    batch: dict | None = None,
    ids: Sequence[int] | None = None,
    sigmas: Sequence[float] | None = None,
    sites: Sequence[str] | None = None,
    draws: int = 64,
    seed: int = 0,
    relative: bool = True,
    threshold: float = 0.5,
    noise_unit: str = "site-rms",
    **sweep_kw,
) -> ApexResult:
    """Runs the APEX noise sweep (σ grid × `draws` noise draws per input) and wraps the counts.

    Gaussian noise of scale σ (× each site's `noise_unit`, by default its clean RMS, unless
    `relative=False`) is added at every site of `sites`; each input's predictions under noise are counted per class and
    compared with its clean prediction (no labels needed).

    Two call forms:
        run_apex(model, batch, sigmas, ...)                  # params and ids from the model / batch
        run_apex(model, params, batch, ids, sigmas, ...)     # explicit (the original form)

    Args:
        model: an `apex_jax.Model` with a classifier head.
        batch: model inputs from `model.encode(...)` ([n, ...] arrays).
        sigmas: the σ grid, non-negative and finite (e.g. `[0.05, 0.2, 1, 4]` or
            `apex_jax.parse_sigmas("logspace:0.01:4:16")`).
        params: the parameters to run (default: `model.params`).
        ids: one integer id per input, which (with `seed`) fixes its noise (default:
            0..n-1); give stable ids to get the same noise for an input in any batch.
        sites: the perturbed sites (default: every block's hook_resid_post).
        draws: noise draws per input and σ.
        seed: seed of the noise.
        relative: σ in units of each site's clean scale (True) or absolute (False).
        threshold: an input escapes at the first σ whose share of draws keeping the clean
            prediction falls below this.
        noise_unit: the unit of relative σ (`NOISE_UNITS`): "site-rms" (each site's RMS over
            all dimensions), "dim-rms" (each dimension's own RMS) or "median-abs" (the site's
            median |activation|: for decoder LMs, whose few massive residual dimensions
            dominate the site RMS).
        **sweep_kw: engine options (`progress`, `run_dir` to resume, `mesh`, `pad_multiple`,
            `units_per_call`, `desc`).

    Returns:
        An `ApexResult`: `consistency` [n, G], `escape_sigma()`, `transitions(g)`, `bias(g)`,
        `to_pandas()`.

    Raises:
        TypeError: neither call form. ValueError / InputError: a bad σ grid, threshold, site
            or batch.

    Example:
        >>> import numpy as np
        >>> from apex_jax import create, run_apex
        >>> from apex_jax.models.presets import vit_hf_config
        >>> model = create(vit_hf_config("vit-micro", 1, 8), num_labels=3)  # a tiny random ViT
        >>> batch = model.encode(np.random.default_rng(0).random((4, 1, 8, 8), np.float32))
        >>> res = run_apex(model, batch, [0.1, 4.0], draws=8, progress=False)
        >>> res.consistency.shape
        (4, 2)
    """
    params, batch, ids, sigmas = _apex_call(model, args, params, batch, ids, sigmas)
    sigmas = check_sigmas(sigmas)
    sites = list(sites or site_lib.preset_sites("resid_post", model.config.n_layers))
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1]; got {threshold}.")
    check_noise_unit(noise_unit, relative)
    batch = sweep_inputs(model, batch)  # the noise scales are calibrated on what the sweep runs
    perturb, scale, found, tag = _noise(model, params, batch, sites, relative, noise_unit)
    sweep = run_sweep(model, params, batch, ids, perturb, _noise_grid(sigmas, scale), sites=sites, draws=draws,
                      seed=seed, tag=tag, common_noise=True, **sweep_kw)
    rms = found if noise_unit == "site-rms" else None
    return ApexResult(sigmas, sites, sweep, threshold, rms, np.asarray(ids), noise_unit, found)


def _is_batch(x: Any) -> bool:
    """Whether `x` looks like model inputs (a mapping with input_ids or pixel_values), not params."""
    return hasattr(x, "keys") and ("input_ids" in x or "pixel_values" in x)


def _apex_call(model: Model, args: tuple, params: Any, batch: Any, ids: Any, sigmas: Any) -> tuple:
    """(params, batch, ids, sigmas) of either `run_apex` call form, defaults filled in."""
    usage = ("run_apex takes run_apex(model, batch, sigmas, ...) or run_apex(model, params, batch, ids, sigmas, "
             "...)")
    if len(args) > 4:
        raise TypeError(f"{usage}; got {1 + len(args)} positional arguments.")
    old = len(args) >= 3 or (len(args) == 2 and _is_batch(args[1]))  # (params, batch, [ids, [sigmas]])
    names = ("params", "batch", "ids", "sigmas") if old else ("batch", "sigmas")
    if len(args) > len(names):
        raise TypeError(f"{usage}; got {1 + len(args)} positional arguments.")
    given = {"params": params, "batch": batch, "ids": ids, "sigmas": sigmas}
    for name, value in zip(names, args):
        if given[name] is not None:
            raise TypeError(f"run_apex got {name} both by position and by keyword.")
        given[name] = value
    params, batch, ids, sigmas = (given[k] for k in ("params", "batch", "ids", "sigmas"))
    if batch is None or sigmas is None:
        raise TypeError(f"{usage}; {'batch' if batch is None else 'sigmas'} is missing.")
    if params is None:
        params = model.params
    if ids is None:
        ids = np.arange(len(next(iter(batch.values()))))
    return params, batch, ids, sigmas


def _noise(model: Model, params: Any, batch: dict, sites: Sequence[str], relative: bool,
           noise_unit: str = "site-rms"):
    """(perturbation, scales, {site: scale} or None, tag). Per-site units give scales [S]
    (1 for absolute σ) and a `NoisePerturbation`; "dim-rms" gives a tuple of per-site arrays and a
    `DimNoisePerturbation`. The scales travel as grid leaves and the perturbation is a value
    (equal for equal site lists), so sweeps on other inputs, seeds or models of the same
    architecture reuse one compiled kernel. The tag (fingerprinted) names the unit unless it is
    site-rms, so site-rms sweeps keep the fingerprints of earlier versions."""
    found = calibrate_scale(model, params, batch, sites, noise_unit) if relative else None
    tag = f"apex sites={list(sites)} relative={relative}"
    if relative and noise_unit != "site-rms":
        tag += f" noise_unit={noise_unit}"
    if relative and noise_unit == "dim-rms":
        return (DimNoisePerturbation(tuple(sites)), tuple(np.asarray(found[s], np.float32) for s in sites), found,
                tag)
    scale = np.asarray([found[s] if found else 1.0 for s in sites], np.float32)
    return NoisePerturbation(tuple(sites)), scale, found, tag


@dataclasses.dataclass(frozen=True)
class NoisePerturbation:
    """`(grid point, keys) -> {site: Noise}` for the engine: σ × the site's scale at each site.

    Static structure only (the site tuple): the σ and scales are grid leaves. Being a frozen
    dataclass it hashes by value, which is what the engine's kernel cache keys on.
    """

    sites: tuple[str, ...]

    def __call__(self, point: dict, keys: jax.Array) -> dict:
        sigma, scale = point["sigma"], point["scale"]  # [] and [S], or [inputs] and [inputs, S]
        pert = {}
        for i, s in enumerate(self.sites):
            ndim = site_lib.layout(s).count(",") + 1
            std = sigma * scale[..., i]
            pert[s] = Noise(keys, jnp.reshape(std, jnp.shape(std) + (1,) * (ndim - 1)) if jnp.ndim(std) else std)
        return pert


@dataclasses.dataclass(frozen=True)
class DimNoisePerturbation:
    """`(grid point, keys) -> {site: Noise}` with one noise scale per dimension ("dim-rms"):
    the std at site i is σ × point["scale"][i], an array of the site's shape without the batch
    axis (position axis of size 1; `calibrate_scale`), or with a leading [inputs] axis."""

    sites: tuple[str, ...]

    def __call__(self, point: dict, keys: jax.Array) -> dict:
        sigma, scales = point["sigma"], point["scale"]  # [] or [inputs]; per site [*f] or [inputs, *f]
        pert = {}
        for i, s in enumerate(self.sites):
            feat = jnp.ndim(scales[i]) - jnp.ndim(sigma)  # the site's own axes (batch axis excluded)
            pert[s] = Noise(keys, jnp.reshape(sigma, jnp.shape(sigma) + (1,) * feat) * scales[i])
        return pert


def _noise_grid(sigmas: np.ndarray, scale: np.ndarray | tuple) -> dict:
    """Grid leaves for the perturbation: σ [G] or [G, n] with the site scales broadcast beside it
    ([S] for per-site units; a tuple of per-site arrays for "dim-rms")."""
    sigmas = np.asarray(sigmas, np.float32)
    if isinstance(scale, tuple):
        return {"sigma": sigmas, "scale": tuple(np.broadcast_to(a, sigmas.shape + a.shape).copy() for a in scale)}
    return {"sigma": sigmas, "scale": np.broadcast_to(scale, sigmas.shape + scale.shape).copy()}


@dataclasses.dataclass
class AdaptiveEscape:
    """Result of `adaptive_escape`: the bisection estimator of escape σ (see `ApexResult`)."""

    escape_sigma: np.ndarray  # [n]: smallest σ found with consistency below the threshold (inf: none)
    lower: np.ndarray  # [n]: largest σ found at or above the threshold
    resolution: float  # upper/lower <= 1 + resolution wherever the escape is bracketed
    rounds: int
    perturbed_forwards: int
    seconds: float

    def __repr__(self) -> str:
        esc = np.asarray(self.escape_sigma)
        return compact_repr("AdaptiveEscape", inputs=len(esc), escaped=int(np.isfinite(esc).sum()),
                            median_escape_sigma=float(np.median(esc)) if esc.size else None,
                            resolution=self.resolution, rounds=self.rounds,
                            perturbed_forwards=self.perturbed_forwards, seconds=self.seconds)


def adaptive_escape(
    model: Model,
    params: Any,
    batch: dict,
    ids: Sequence[int],
    lo: float,
    hi: float,
    *,
    resolution: float = 0.05,
    sites: Sequence[str] | None = None,
    draws: int = 64,
    seed: int = 0,
    relative: bool = True,
    threshold: float = 0.5,
    stage_draws: int | None = None,
    delta: float = 0.05,
    coarse: int = 8,
    noise_unit: str = "site-rms",
    **sweep_kw,
) -> AdaptiveEscape:
    """Escape σ by bisection in log σ, per input, to a stated relative resolution.

    First `coarse` log-spaced σ from lo to hi (ends included) are evaluated; an input already
    below the threshold at lo escapes at lo (or below), one never below it never escapes (inf),
    and otherwise its first coarse σ below the threshold and the coarse σ before it bracket the
    escape. (Consistency need not fall monotonically in σ — real models can dip below the
    threshold and recover at large σ, where the model's bias class may be the clean one — so
    the ends alone are not enough; a dip narrower than the coarse spacing can still be missed.)
    Then each round evaluates every bracketed input at the geometric midpoint of its bracket,
    until upper/lower <= 1 + resolution: ceil(log2(ln(step) / ln(1 + resolution))) rounds of
    `draws` draws each, step = (hi/lo)^(1/(coarse−1)). With the same seed, draws and sites, the noise equals `run_apex`'s (common
    random numbers), so the result agrees with a fine grid up to the resolution and the grid
    spacing. `noise_unit` is the unit of relative σ, as in `run_apex`.

    Sequential stopping (`stage_draws`): each evaluation draws `stage_draws` at a time (draw
    indices continue, so the draws are those of the fixed-K run) and stops for an input once
    Hoeffding's bound puts its share kept on one side of the threshold:
    |p̂ − threshold| > sqrt(ln(2·S/δ) / (2m)) after m draws, S = draws / stage_draws looks. Each
    such early decision is wrong with probability at most `delta`; undecided inputs use all
    `draws`, exactly as without sequential stopping.
    """
    if not 0 < lo < hi or not np.isfinite([lo, hi]).all():
        raise ValueError(f"need 0 < lo < hi (finite); got lo={lo}, hi={hi}.")
    if resolution <= 0:
        raise ValueError(f"resolution must be > 0; got {resolution}.")
    if stage_draws is not None and (stage_draws < 1 or draws % stage_draws):
        raise ValueError(f"stage_draws must divide draws ({draws}); got {stage_draws}.")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1); got {delta}.")
    if coarse < 2:
        raise ValueError(f"coarse must be >= 2 (the ends lo and hi); got {coarse}.")
    check_noise_unit(noise_unit, relative)
    sites = list(sites or site_lib.preset_sites("resid_post", model.config.n_layers))
    batch = sweep_inputs(model, batch)  # the noise scales are calibrated on what the sweep runs
    perturb, scale, _, tag = _noise(model, params, batch, sites, relative, noise_unit)
    n = len(ids)
    stage = stage_draws or draws
    looks = draws // stage
    kw = dict(sites=sites, draws=stage, seed=seed, tag=tag, common_noise=True, per_input_grid=True, **sweep_kw)

    ids = np.asarray(ids)

    def kept(sigma_per_input: np.ndarray, rows: np.ndarray) -> np.ndarray:  # [G, m] -> [m, G]
        # Only the inputs still bracketed run; noise is keyed by input id, so subsetting
        # does not change any input's draws.
        kept_count = np.zeros((len(rows), sigma_per_input.shape[0]))
        undecided = np.ones(len(rows), bool)
        for look in range(looks):
            r = np.flatnonzero(undecided)
            sub = {k: np.asarray(v)[rows[r]] for k, v in batch.items()}
            res = run_sweep(model, params, sub, ids[rows[r]], perturb,
                            _noise_grid(sigma_per_input[:, r], scale), draw_offset=look * stage, **kw)
            stats["forwards"] += res.perturbed_forwards
            stats["seconds"] += res.seconds
            kept_count[r] += res.kept * stage
            m = (look + 1) * stage
            margin = math.sqrt(math.log(2 * looks / delta) / (2 * m))
            undecided[r] = (np.abs(kept_count[r] / m - threshold) <= margin).any(1)
            done_draws[rows[r]] = m
            if not undecided.any():
                break
        return kept_count / done_draws[rows][:, None]

    stats = {"forwards": 0, "seconds": 0.0}
    done_draws = np.zeros(n)
    # coarse stage: the first coarse σ below the threshold brackets the escape, so a curve that
    # dips below and comes back above (non-monotone in σ) is caught if the dip spans a coarse point
    points = np.geomspace(lo, hi, max(2, coarse))
    # one σ per call: sequential stopping then decides each (input, σ) on its own (common random
    # numbers make the draws the same as in one joint sweep)
    first = np.stack([kept(np.full((1, n), p), np.arange(n))[:, 0] for p in points], 1)  # [n, coarse]
    below = first < threshold
    hit = np.argmax(below, axis=1)
    below_lo, above_hi = below[:, 0], ~below.any(1)
    active = ~below_lo & ~above_hi
    lower = np.where(active, points[np.maximum(hit - 1, 0)], lo).astype(np.float64)
    upper = np.where(active, points[hit], hi).astype(np.float64)
    step = points[1] / points[0]
    rounds = max(0, math.ceil(math.log2(math.log(step) / math.log1p(resolution))))
    for _ in range(rounds):
        if not active.any():
            break
        mid = np.sqrt(lower * upper)
        rows = np.flatnonzero(active)
        k = np.zeros(n)
        k[rows] = kept(mid[rows][None], rows)[:, 0]
        escaped = active & (k < threshold)
        upper = np.where(escaped, mid, upper)
        lower = np.where(active & ~escaped, mid, lower)
    escape = np.where(above_hi, np.inf, np.where(below_lo, lo, upper))
    lower = np.where(below_lo, 0.0, lower)
    return AdaptiveEscape(escape, lower, resolution, rounds, stats["forwards"], stats["seconds"])
