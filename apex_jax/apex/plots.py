"""Figures of an APEX run: consistency curves, escape-σ histogram, transitions, large-σ shares."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from apex_jax.apex.analysis import ApexResult
from apex_jax.fileio import pyplot, save_figure


FIGURES = ("consistency_curves.png", "escape_sigma_hist.png", "transitions.png", "large_sigma_shares.png")
TRANSITION_FLIP_RATE = 0.1  # transitions.png shows the smallest σ at which this share of draws flips


def transition_sigma(result: ApexResult, share: float = TRANSITION_FLIP_RATE) -> tuple[int, float]:
    """(grid index, flip rate) of the σ whose transitions transitions.png shows: the smallest σ at
    which at least `share` of all draws leave their clean prediction (below it the matrix is
    almost the identity), else the σ with the largest flip rate (the first, if several)."""
    flip = 1.0 - np.asarray(result.consistency, np.float64).mean(0)  # sigmas.csv's flip_rate
    at = np.flatnonzero(flip >= share - 1e-9)  # 1 - 0.9 is 0.0999…: a share met up to rounding
    i = int(at[0]) if at.size else int(np.argmax(flip))
    return i, float(flip[i])


def _grid_ticks(ax, sigmas: np.ndarray, lo: float, hi: float, most: int = 7) -> None:
    """Labels a log σ axis at the grid's own σ values (at most `most`, evenly thinned) instead of
    matplotlib's minor-tick labels, which overlap when the axis spans less than a decade."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ticks = np.asarray([s for s in sigmas if lo <= s <= hi and s > 0], float)
    if ticks.size > most:
        ticks = ticks[np.unique(np.linspace(0, ticks.size - 1, most).round().astype(int))]
    if ticks.size < 2:  # too few grid values on the axis: keep matplotlib's major ticks only
        ax.xaxis.set_minor_formatter(NullFormatter())
        return
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_all(out: Path, result: ApexResult, label_names: Sequence[str], relative: bool) -> list[Path]:
    """Writes consistency_curves.png, escape_sigma_hist.png, transitions.png and
    large_sigma_shares.png into `out`; returns their paths."""
    plt = pyplot()
    out = Path(out)
    unit = {"site-rms": "site RMS", "dim-rms": "each dimension's RMS", "median-abs": "site median |x|"}
    name = getattr(result, "noise_unit", "site-rms")  # results made before units existed: today's unit
    xlabel = f"σ (× {unit.get(name, name)})" if relative else "σ"
    paths = []

    fig, ax = plt.subplots(figsize=(5, 3.5))
    s = np.maximum(result.sigmas, 1e-12)
    for row in result.consistency:
        ax.plot(s, row, color="tab:blue", alpha=0.12, lw=0.8)
    ax.plot(s, result.consistency.mean(0), color="black", lw=2, label="mean")
    ax.axhline(result.threshold, color="tab:red", ls="--", lw=1, label="threshold")
    ax.set(xscale="log", xlabel=xlabel, ylabel="share keeping clean prediction", ylim=(-0.02, 1.02))
    ax.legend()
    paths.append(save_figure(fig, out / "consistency_curves.png"))

    fig, ax = plt.subplots(figsize=(5, 3.5))
    esc = result.escape_sigma()
    finite = esc[np.isfinite(esc)]
    if finite.size:
        bins = np.logspace(np.log10(max(finite.min(), 1e-6)), np.log10(finite.max() * 1.01 + 1e-12), 20)
        ax.hist(finite, bins=bins, color="tab:blue")
        ax.set_xscale("log")
        _grid_ticks(ax, result.sigmas, bins[0], bins[-1])
    ax.set(xlabel=f"escape {xlabel}", ylabel="inputs",
           title=f"{int(np.isinf(esc).sum())} of {len(esc)} never escape")
    paths.append(save_figure(fig, out / "escape_sigma_hist.png"))

    at, flip = transition_sigma(result)
    m = result.transitions(at).astype(float)
    m = m / np.maximum(m.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    im = ax.imshow(m, cmap="viridis", vmin=0, vmax=1)
    ax.set(xticks=range(len(label_names)), yticks=range(len(label_names)), xlabel="noisy prediction",
           ylabel="clean prediction", title=f"transitions at σ = {result.sigmas[at]:.3g} (flip rate {flip:.3g})")
    ax.set_xticklabels(label_names, rotation=90)
    ax.set_yticklabels(label_names)
    if len(label_names) <= 10:  # the shares themselves: the off-diagonal ones are the finding
        for i in range(len(label_names)):
            for j in range(len(label_names)):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="black" if m[i, j] > 0.6 else "white")
    fig.colorbar(im, ax=ax)
    shown = f"Shown at σ = {result.sigmas[at]:.3g}, flip rate {flip:.3g}"
    if flip < TRANSITION_FLIP_RATE - 1e-9:
        shown += f": no σ of the grid reaches {TRANSITION_FLIP_RATE:.0%}, this one flips the most"
    paths.append(save_figure(fig, out / "transitions.png", description=shown + "."))

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar(range(len(label_names)), result.class_shares(-1), color="tab:orange")
    ax.set(xticks=range(len(label_names)), ylabel="share of draws", title=f"class shares at σ = {result.sigmas[-1]:.3g}")
    ax.set_xticklabels(label_names, rotation=90)
    paths.append(save_figure(fig, out / "large_sigma_shares.png"))
    return paths
