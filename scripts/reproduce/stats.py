"""Statistics for the reproduction reports: rank correlation and AUROC with bootstrap intervals.

Point estimates come from scipy (`spearmanr`) and scikit-learn (`roc_auc_score`); intervals are
bootstrap intervals from `scipy.stats.bootstrap`: BCa (bias-corrected and accelerated) for rank
correlations, whose bootstrap distribution is shifted by the duplicates a resample contains
(pairs resampled together), and percentile intervals for AUROCs (the two groups resampled
separately, i.e. stratified; BCa is undefined when every resample gives the same AUROC, as
with a few perfectly separated models). Means over a few seeds get Student-t intervals.

When models are the units (a handful per group), intervals from resampling them are degenerate:
`mann_whitney_exact` gives the exact one-sided p over models and what the design can detect;
`cluster_auroc` pools every model's values but resamples whole models; `partial_spearman`
adjusts a rank correlation for baselines (e.g. the clean softmax margin).
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

LEVEL = 0.95
N_BOOT = 1000


def _clean(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in d.items()}


def _bootstrap(data: tuple, statistic: Callable, paired: bool, n_boot: int, seed: int,
               vectorized: bool = False, method: str = "percentile") -> tuple[float, float]:
    """A bootstrap interval; a BCa interval that comes out undefined (NaN) falls back to the
    percentile interval of the same resamples."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate resamples (e.g. every AUROC = 1) are fine
        res = sps.bootstrap(data, statistic, paired=paired, vectorized=vectorized, n_resamples=n_boot,
                            confidence_level=LEVEL, method=method, rng=np.random.default_rng(seed))
        lo, hi = res.confidence_interval
        if not (np.isfinite(lo) and np.isfinite(hi)):
            dist = res.bootstrap_distribution
            lo, hi = np.quantile(dist[np.isfinite(dist)], [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(lo), float(hi)


def bootstrap_indices(statistic: Callable[[np.ndarray], float], n: int, n_boot: int = N_BOOT, seed: int = 0,
                      method: str = "BCa") -> tuple[float, float]:
    """Bootstrap interval of a statistic of a resampled set of n units (`statistic(indices)`,
    indices drawn with replacement from range(n)), e.g. a correlation between two matrices
    built from per-input counts."""
    stat = lambda idx: statistic(np.asarray(idx, np.int64))
    return _bootstrap((np.arange(n),), stat, True, n_boot, seed, method=method)


def jackknife_groups(statistic: Callable[[np.ndarray], float], n: int, groups: int = 20, seed: int = 0) -> dict:
    """Delete-a-group jackknife interval of a statistic of n units (`statistic(indices)`): the
    units are shuffled into `groups` blocks, each left out once; SE² = (g−1)/g · Σ(θ₋ᵢ − θ̄)²
    and the interval is θ̂ ± t(g−1) · SE. Unlike the bootstrap it never duplicates a unit,
    which matters for statistics of summed counts (e.g. a rank correlation between two matrices
    of counts): duplicated inputs make both matrices noisier and pull every resampled value
    below the estimate, so percentile intervals miss it and BCa over-corrects."""
    idx = np.random.default_rng(seed).permutation(n)
    blocks = np.array_split(idx, groups)
    theta = float(statistic(np.arange(n)))
    loo = np.array([statistic(np.setdiff1d(idx, b, assume_unique=True)) for b in blocks], np.float64)
    g = len(blocks)
    se = float(np.sqrt((g - 1) / g * np.sum((loo - loo.mean()) ** 2)))
    half = float(sps.t.ppf((1 + LEVEL) / 2, g - 1)) * se
    return {"estimate": theta, "lo": theta - half, "hi": theta + half, "se": se, "groups": g}


def spearman(x: Sequence[float], y: Sequence[float], n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Spearman's ρ of paired values (NaN pairs dropped; ±inf are ranked as extremes) with its
    p-value and a BCa bootstrap interval over pairs: {rho, lo, hi, p, n}."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = _finite_ranks(x[keep]), _finite_ranks(y[keep])
    n = len(x)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return _clean({"rho": float("nan"), "lo": float("nan"), "hi": float("nan"), "p": float("nan"), "n": int(n)})
    r = sps.spearmanr(x, y)
    lo, hi = _bootstrap((x, y), _spearman_rows, True, n_boot, seed, vectorized=True, method="BCa")
    return _clean({"rho": float(r.statistic), "lo": lo, "hi": hi, "p": float(r.pvalue), "n": int(n)})


def auroc(positive: Sequence[float], negative: Sequence[float], n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """AUROC of telling `positive` from `negative` scores (higher = positive), with a stratified
    percentile bootstrap interval: {auroc, lo, hi, n_pos, n_neg}. ±inf are ranked as extremes."""
    pos, neg = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    both = _finite_ranks(np.concatenate([pos, neg]))
    pos, neg = both[: len(pos)], both[len(pos):]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("AUROC needs at least one positive and one negative score.")
    point = _auc(pos, neg)
    if n_boot <= 0:
        return {"auroc": point, "lo": None, "hi": None, "n_pos": int(len(pos)), "n_neg": int(len(neg))}
    lo, hi = _bootstrap((pos, neg), _auc_rows, False, n_boot, seed, vectorized=True)
    return {"auroc": point, "lo": lo, "hi": hi, "n_pos": int(len(pos)), "n_neg": int(len(neg))}


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    return float(roc_auc_score(y, np.concatenate([pos, neg])))


def _auc_rows(pos: np.ndarray, neg: np.ndarray, axis: int = -1) -> np.ndarray:
    """AUROC along `axis` for a batch of resamples: the Mann-Whitney U of the positives over
    n_pos * n_neg (ties count one half), which equals roc_auc_score."""
    u = sps.mannwhitneyu(pos, neg, axis=axis, method="asymptotic").statistic
    return u / (pos.shape[axis] * neg.shape[axis])


def mean_ci(values: Sequence[float], bounds: tuple[float, float] | None = (0.0, 1.0)) -> dict:
    """Mean of a few values (e.g. one per seed) with a Student-t interval: {mean, lo, hi, n},
    clipped to `bounds` (default [0, 1] for shares, accuracies and AUROCs; (-1, 1) for
    correlations; None: no clipping)."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    m = float(v.mean())
    if n < 2 or v.std() == 0:
        return {"mean": m, "lo": m, "hi": m, "n": n}
    lo, hi = sps.t.interval(LEVEL, n - 1, loc=m, scale=sps.sem(v))
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return {"mean": m, "lo": float(lo), "hi": float(hi), "n": n}


def _finite_ranks(x: np.ndarray) -> np.ndarray:
    """Replaces ±inf by values beyond the finite range (order kept), so that rank statistics
    and scikit-learn accept them (an escape σ of inf = never escaped on the grid)."""
    x = np.asarray(x, np.float64).copy()
    finite = x[np.isfinite(x)]
    lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
    span = max(hi - lo, 1.0)
    x[x == np.inf] = hi + span
    x[x == -np.inf] = lo - span
    return x


def _spearman_rows(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's ρ along `axis` for a batch of resamples (the Pearson correlation of average
    ranks, as `scipy.stats.spearmanr` computes it); 0 where a resample is constant."""
    ra = sps.rankdata(a, axis=axis)
    rb = sps.rankdata(b, axis=axis)
    ra = ra - ra.mean(axis=axis, keepdims=True)
    rb = rb - rb.mean(axis=axis, keepdims=True)
    den = np.sqrt((ra * ra).sum(axis) * (rb * rb).sum(axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(axis) / np.where(den > 0, den, 1), 0.0)


# ---------------------------------------------------------------- model-level and baseline-adjusted tests


def mann_whitney_null(n_pos: int, n_neg: int) -> np.ndarray:
    """The exact null distribution of the Mann–Whitney U (pairs positive > negative) for
    n_pos vs n_neg values without ties: [n_pos * n_neg + 1] probabilities of U = 0, 1, ….

    Counts arrangements with the recurrence f(m, n, u) = f(m − 1, n, u − n) + f(m, n − 1, u)
    (the largest value is a positive, beating all n negatives, or a negative)."""
    if n_pos < 1 or n_neg < 1:
        raise ValueError(f"the Mann–Whitney test needs at least one value per group; got {n_pos} and {n_neg}.")
    # table[n] holds f(m, n, ·) for the current m, padded to the largest U
    size = n_pos * n_neg + 1
    table = [np.eye(1, size, 0).ravel() for _ in range(n_neg + 1)]  # m = 0: U = 0 only
    for m in range(1, n_pos + 1):
        new = [np.eye(1, size, 0).ravel()]  # n = 0: U = 0 only
        for n in range(1, n_neg + 1):
            shifted = np.zeros(size)
            shifted[n:] = table[n][: size - n]
            new.append(shifted + new[n - 1])
        table = new
    counts = table[n_neg]
    return counts / counts.sum()


def mann_whitney_exact(positive: Sequence[float], negative: Sequence[float], alpha: float = 0.05) -> dict:
    """One-sided exact Mann–Whitney test that `positive` values exceed `negative` ones (one value
    per model: models are the units), with what the design can detect.

    Returns:
        {auroc (= U / (n_pos n_neg)), p (exact, one-sided; ties counted one half in U and the
        p read off the tie-free null, as scipy's "exact" method does), n_pos, n_neg, p_min (the
        smallest p the design can give: every positive above every negative), critical_auroc
        (the smallest AUROC with p < alpha; None if none can), ties (bool)}.
    """
    pos, neg = _finite_ranks(np.concatenate([np.asarray(positive, np.float64),
                                             np.asarray(negative, np.float64)])), None
    pos, neg = pos[: len(positive)], pos[len(positive):]
    n1, n2 = len(pos), len(neg)
    null = mann_whitney_null(n1, n2)
    tail = np.cumsum(null[::-1])[::-1]  # tail[u] = P(U >= u)
    u = float(sps.mannwhitneyu(pos, neg, alternative="greater", method="asymptotic").statistic)
    p = float(tail[int(np.ceil(u - 1e-9))])
    ok = np.flatnonzero(tail < alpha)
    return {"auroc": u / (n1 * n2), "p": p, "n_pos": n1, "n_neg": n2, "p_min": float(null[-1]),
            "critical_auroc": float(ok[0] / (n1 * n2)) if ok.size else None,
            "ties": bool(len(np.unique(np.concatenate([pos, neg]))) < n1 + n2)}


def cluster_auroc(positive: Sequence[Sequence[float]], negative: Sequence[Sequence[float]], n_boot: int = N_BOOT,
                  seed: int = 0) -> dict:
    """AUROC of all pooled values (e.g. every image's escape σ under every model), with a
    percentile bootstrap that resamples whole clusters (models) within each class, so values of
    one model are never treated as independent: {auroc, lo, hi, n_pos, n_neg (clusters),
    interval}. positive / negative: one array of values per cluster."""
    pos = [_finite_ranks(np.asarray(v, np.float64)) for v in positive]
    neg = [_finite_ranks(np.asarray(v, np.float64)) for v in negative]
    allv = _finite_ranks(np.concatenate(pos + neg))  # one common ±inf replacement
    cut = np.cumsum([len(v) for v in pos + neg])[:-1]
    parts = np.split(allv, cut)
    pos, neg = parts[: len(pos)], parts[len(pos):]
    point = _auc(np.concatenate(pos), np.concatenate(neg))
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(n_boot):
        bp = np.concatenate([pos[i] for i in rng.integers(0, len(pos), len(pos))])
        bn = np.concatenate([neg[i] for i in rng.integers(0, len(neg), len(neg))])
        boot.append(float(_auc_rows(bp, bn)))
    lo, hi = (np.quantile(boot, [(1 - LEVEL) / 2, (1 + LEVEL) / 2]) if n_boot > 0 else (np.nan, np.nan))
    return _clean({"auroc": point, "lo": float(lo), "hi": float(hi), "n_pos": len(pos), "n_neg": len(neg),
                   "interval": "percentile bootstrap over models (clusters)"})


def partial_spearman(x: Sequence[float], y: Sequence[float], covariates: Sequence[Sequence[float]],
                     n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Partial Spearman ρ of x and y given covariates: the Pearson correlation of the ranks of x
    and of y after each is regressed (least squares, with an intercept) on the covariates' ranks;
    BCa bootstrap interval over rows. {rho, lo, hi, n}. Rows with a NaN anywhere are dropped;
    ±inf rank as extremes."""
    cols = [np.asarray(v, np.float64) for v in (x, y, *covariates)]
    keep = ~np.any([np.isnan(c) for c in cols], axis=0)
    ranks = np.stack([sps.rankdata(_finite_ranks(c[keep])) for c in cols], axis=1)  # [n, 2 + k]
    n = len(ranks)

    def stat(idx: np.ndarray) -> float:
        r = ranks[idx]
        z = np.column_stack([np.ones(len(r)), r[:, 2:]])
        res = r[:, :2] - z @ np.linalg.lstsq(z, r[:, :2], rcond=None)[0]
        den = np.sqrt((res ** 2).sum(0).prod())
        return float((res[:, 0] * res[:, 1]).sum() / den) if den > 0 else 0.0

    if n < ranks.shape[1] + 2:
        return {"rho": None, "lo": None, "hi": None, "n": int(n)}
    rho = stat(np.arange(n))
    lo, hi = bootstrap_indices(stat, n, n_boot=n_boot, seed=seed) if n_boot > 0 else (None, None)
    return _clean({"rho": rho, "lo": lo, "hi": hi, "n": int(n)})


def welch_difference(a: Sequence[float], b: Sequence[float]) -> dict:
    """Mean of `a` minus mean of `b` for two independent groups of units (e.g. one value per
    model), with Welch's standard error and degrees of freedom, the one-sided p of H0: the
    difference ≤ 0 and the 95% two-sided t interval.

    Returns:
        {mean, se, df, p (one-sided, greater), lo, hi, n_a, n_b}; se, df, p, lo and hi are None
        when either group has fewer than 2 finite values; a zero spread in both groups gives
        se = 0, p 0 or 1 and a zero-width interval.
    """
    x, y = (np.asarray(v, np.float64) for v in (a, b))
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    out = {"mean": float(x.mean() - y.mean()) if len(x) and len(y) else None, "se": None, "df": None,
           "p": None, "lo": None, "hi": None, "n_a": int(len(x)), "n_b": int(len(y))}
    if len(x) < 2 or len(y) < 2:
        return out
    va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = float(np.sqrt(va + vb))
    d = out["mean"]
    if se == 0:
        return {**out, "se": 0.0, "df": float(len(x) + len(y) - 2), "p": 0.0 if d > 0 else 1.0, "lo": d, "hi": d}
    df = float((va + vb) ** 2 / (va ** 2 / (len(x) - 1) + vb ** 2 / (len(y) - 1)))
    half = float(sps.t.ppf((1 + LEVEL) / 2, df)) * se
    return {**out, "se": se, "df": df, "p": float(sps.t.sf(d / se, df)), "lo": d - half, "hi": d + half}


def holm_adjust(p: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values of a family of tests (reject where adjusted < α keeps
    the family-wise error at α): p sorted ascending, the i-th (0-based) times (m − i), running
    maximum, capped at 1; returned in the input order."""
    p = np.asarray(p, np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.minimum(np.maximum.accumulate(p[order] * (m - np.arange(m))), 1.0)
    out = np.empty(m)
    out[order] = adj
    return out
