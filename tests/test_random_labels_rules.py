"""Claim 2's label-noise series rules on planted cases: each of the three outcomes, the
beyond-the-margin extension, and the fit-design guard."""

from __future__ import annotations

import numpy as np

from reproduce import stats
from reproduce.rules import random_labels as rules

LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _series(escape: np.ndarray, margin: np.ndarray, input_escape: np.ndarray, per_level: int,
            fitted: list[int] | None = None) -> dict:
    """A series dict as `random_labels` writes it, from per-model medians (`per_level` models per
    level, in level order)."""
    noise = np.repeat(LEVELS, per_level)
    log_esc, log_in = np.log(escape), np.log(input_escape)
    ends = noise == 0.0, noise == 1.0
    return {"levels": list(LEVELS), "fit_threshold": 0.99, "models_per_level": [per_level] * len(LEVELS),
            "fitted_per_level": fitted or [per_level] * len(LEVELS),
            "trend": stats.spearman(noise, log_esc, n_boot=300, seed=0),
            "trend_margin": stats.spearman(noise, margin, n_boot=300, seed=1),
            "trend_input": stats.spearman(noise, log_in, n_boot=300, seed=2),
            "escape_vs_margin": stats.spearman(log_esc, margin, n_boot=300, seed=3),
            "trend_given_margin": stats.partial_spearman(log_esc, noise, [margin], n_boot=300, seed=4),
            "trend_given_margin_and_input": stats.partial_spearman(log_esc, noise, [margin, log_in], n_boot=300,
                                                                   seed=5),
            "ends": stats.mann_whitney_exact(log_esc[ends[0]], log_esc[ends[1]]),
            "ends_margin": stats.mann_whitney_exact(margin[ends[0]], margin[ends[1]])}


def _outcomes(series: dict) -> list[str]:
    return [v.outcome for v in rules.series_verdicts(series)]


def test_planted_trend_beyond_the_margin_is_reproduced():
    rng = np.random.default_rng(0)
    noise = np.repeat(LEVELS, 12)
    margin = rng.normal(0, 1, noise.size)  # the margin carries nothing about the noise
    escape = np.exp(2 - 2 * noise + 0.2 * rng.normal(size=noise.size))
    s = _series(escape, margin, np.exp(rng.normal(size=noise.size)), 12)
    assert _outcomes(s) == ["reproduced"] * 4
    assert s["trend"]["rho"] < -0.8


def test_no_decrease_with_power_is_not_reproduced():
    """Escape σ rising a little with noise (the claim's opposite), 12 models per level."""
    rng = np.random.default_rng(1)
    noise = np.repeat(LEVELS, 12)
    n = noise.size
    s = _series(np.exp(noise + rng.normal(size=n)), rng.normal(size=n), np.exp(rng.normal(size=n)), 12)
    out = _outcomes(s)
    assert out[0] == "not reproduced" and out[1] == "not reproduced", (out, s["trend"], s["ends"])


def test_margin_explains_the_trend():
    """Escape σ is a noisy copy of the margin, which falls with noise: the trend reproduces, the
    partial ρ given the margin does not."""
    rng = np.random.default_rng(2)
    noise = np.repeat(LEVELS, 12)
    margin = 3 - 3 * noise + 0.3 * rng.normal(size=noise.size)
    escape = np.exp(margin + 0.01 * rng.normal(size=noise.size))
    out = _outcomes(_series(escape, margin, np.exp(rng.normal(size=noise.size)), 12))
    assert out[0] == "reproduced" and out[2] != "reproduced"


def test_few_models_are_inconclusive_and_unfitted_levels_void_the_series():
    rng = np.random.default_rng(3)
    noise = np.repeat(LEVELS, 2)
    weak = np.exp(1 - 0.3 * noise + rng.normal(size=noise.size))  # 2 per level: the test cannot decide
    out = _outcomes(_series(weak, rng.normal(size=noise.size), np.exp(rng.normal(size=noise.size)), 2))
    assert out[0] == "inconclusive" and out[1] == "inconclusive"
    noise = np.repeat(LEVELS, 12)
    strong = np.exp(2 - 2 * noise + 0.2 * rng.normal(size=noise.size))
    s = _series(strong, rng.normal(size=noise.size), np.exp(rng.normal(size=noise.size)), 12,
                fitted=[12, 12, 12, 12, 7])  # 7 of 12 models fit at 100% noise: below 2/3
    assert not rules.series_design_met(s) and _outcomes(s) == ["inconclusive"] * 4


def test_series_joins_the_claim_verdict():
    rng = np.random.default_rng(4)
    noise = np.repeat(LEVELS, 12)
    flat = _series(np.exp(rng.normal(size=noise.size)), rng.normal(size=noise.size),
                   np.exp(rng.normal(size=noise.size)), 12)
    t = stats.mann_whitney_exact(rng.normal(3, 1, 10), rng.normal(0, 1, 10))
    old = {"model_level": t, "model_level_absolute": t,
           "pooled_sample_auroc": {"auroc": 0.9, "lo": 0.8, "hi": 0.95, "n_pos": 10, "n_neg": 10}}
    assert rules.verdict(old)[0] == "reproduced"
    assert rules.verdict({**old, "label_noise": flat})[0] == "not reproduced"
