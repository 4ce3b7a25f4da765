"""Figures of SYNAPSE runs: probe accuracy per layer, silencing curves, class asymmetry, attacks."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from apex_jax.fileio import FIGURE_DPI, pyplot, save_figure
from apex_jax.synapse.probes import CONCAT

PAGE_WIDTH_PX = 1200  # a figure of panels wraps into rows so that its PNG fits a page this wide
PANEL_WIDTH = 3.6  # inches per panel of a multi-panel figure


def _columns(n_panels: int) -> int:
    """Panels per row so that the figure is at most PAGE_WIDTH_PX wide at FIGURE_DPI."""
    return max(1, min(n_panels, int(PAGE_WIDTH_PX // (PANEL_WIDTH * FIGURE_DPI))))


def short(site: str) -> str:
    """A short site label for plots and logs: blocks.3.hook_resid_post -> L3, hook_embed -> emb."""
    if site == "hook_embed":
        return "emb"
    if site.startswith("blocks.") and site.endswith("hook_resid_post"):
        return "L" + site.split(".")[1]
    if site == CONCAT:
        return "all"
    return site.replace("head.hook_", "head.")


def plot_probe_accuracy(path: Path, rows: Sequence[dict]) -> Path:
    """Per-site probe test accuracy and macro-F1 (rows from the probe table)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(4.5, 0.55 * len(rows) + 1.5), 3.5))
    x = np.arange(len(rows))
    ax.plot(x, [r["test_accuracy"] for r in rows], "o-", label="accuracy")
    ax.plot(x, [r["test_macro_f1"] for r in rows], "s--", label="macro-F1")
    ax.set_xticks(x)
    ax.set_xticklabels([short(r["site"]) for r in rows], rotation=45)
    ax.set(ylabel="probe test score", ylim=(0, 1.02), title="[CLS] linear probes per layer")
    ax.legend()
    return save_figure(fig, path)


def plot_silencing_curves(path: Path, result, score: str = "accuracy") -> Path:
    """Score vs k per layer: top-k, bottom-k and the random band (min–max, mean). The panels share
    a y axis scaled to the plotted scores and the clean score (a 0–1 axis would flatten the few
    points of accuracy the silencing moves)."""
    plt = pyplot()
    L = len(result.layers)
    cols = _columns(L)
    rows_ = math.ceil(L / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(PANEL_WIDTH * cols, 3.0 * rows_), squeeze=False,
                             sharey=True)
    k = np.asarray(result.config.k_levels)
    clean = float(getattr(result.clean, score)[0])
    shown = [clean]
    for ax, lr in zip(axes.ravel(), result.layers):
        v = getattr(lr.metrics, score)
        base = result.config.mode  # the plotted selections; mean-ablated controls are in the CSVs
        for kind, style in (("top", "o-"), ("bottom", "s--"), ("attribution", "^-.")):
            ys = [v[g] for g, s in enumerate(lr.selections) if s.kind == kind and s.ablation == base]
            if ys:
                ax.plot(k, ys, style, label=f"{kind}-k", ms=3)
                shown += ys
        rand = np.array([[v[g] for g, s in enumerate(lr.selections)
                          if s.kind == "random" and s.k == kk and s.ablation == base] for kk in k])
        ax.fill_between(k, rand.min(1), rand.max(1), color="gray", alpha=0.3, label="random (min–max)")
        ax.plot(k, rand.mean(1), color="gray", lw=1)
        shown += rand.ravel().tolist()
        ax.axhline(clean, color="black", ls=":", lw=1, label="clean")
        ax.set(title=short(lr.site), xlabel="k (% neurons silenced)")
    lo, hi = float(np.nanmin(shown)), float(np.nanmax(shown))
    pad = max(0.08 * (hi - lo), 0.01)
    axes[0][0].set_ylim(lo - pad, hi + pad)  # shared: every panel on the same scale, the clean line in view
    for row in axes:
        row[0].set_ylabel(score)
    for ax in axes.ravel()[L:]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7)
    return save_figure(fig, path, description=f"The y axis spans {lo:.3g}–{hi:.3g} (not 0–1); dotted: the clean "
                                              f"{score.replace('_', ' ')} {clean:.3g}.")


def plot_asymmetry(path: Path, matrix: np.ndarray, label_names: Sequence[str], title: str,
                   description: str | None = None) -> Path:
    """One class-asymmetry matrix: row = the class whose top neurons are silenced, column = the
    class whose F1 drops (`description`: the PNG's text for the page's caption)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    im = ax.imshow(matrix, cmap="magma")
    n = len(label_names)
    ax.set(xticks=range(n), yticks=range(n), xlabel="class whose F1 drops",
           ylabel="class whose top neurons are silenced", title=title)
    ax.set_xticklabels(label_names, rotation=90)
    ax.set_yticklabels(label_names)
    for i in range(n):
        for j in range(n):
            if np.isfinite(matrix[i, j]):
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", color="cyan", fontsize=8)
    fig.colorbar(im, ax=ax)
    return save_figure(fig, path, description=description)


def largest_effect_site(asymmetry: dict[str, np.ndarray]) -> str:
    """The site whose class-asymmetry matrix holds the largest F1 drop (the last site if no
    matrix has a positive finite cell)."""
    sites = list(asymmetry)
    if not sites:
        raise ValueError("no asymmetry matrix to choose from")
    best = [np.nanmax(np.where(np.isfinite(m), m, np.nan), initial=-np.inf) if np.size(m) else -np.inf
            for m in (np.asarray(asymmetry[s], np.float64) for s in sites)]
    i = int(np.argmax(best))
    return sites[i] if best[i] > 0 else sites[-1]


def plot_class_asymmetry(path: Path, asymmetry: dict[str, np.ndarray], label_names: Sequence[str],
                         k_percent: float) -> Path:
    """The class-asymmetry matrix of the layer with the largest F1 drop (`largest_effect_site`);
    its title and the PNG's description name the layer (asymmetry.csv holds every layer)."""
    site = largest_effect_site(asymmetry)
    m = np.asarray(asymmetry[site], np.float64)
    peak = float(np.nanmax(np.where(np.isfinite(m), m, np.nan), initial=0.0)) if m.size else 0.0
    choice = (f"its largest F1 drop, {peak:.2g}, is the largest of the {len(asymmetry)} layers" if peak > 0
              else f"no layer of {len(asymmetry)} has a positive drop; the last one")
    return plot_asymmetry(path, m, label_names, f"{short(site)}: top {k_percent:g}% per class",
                          description=f"Layer {short(site)} ({site}): {choice} (all of them: asymmetry.csv).")


def plot_attacks(path: Path, rows: Sequence[dict]) -> Path:
    """Flip-to-target rate and accuracy vs magnitude, one panel per attack (rows of panels at most
    PAGE_WIDTH_PX wide)."""
    plt = pyplot()
    kinds = list(dict.fromkeys(r["attack"] for r in rows))
    cols = _columns(len(kinds))
    n_rows = math.ceil(len(kinds) / cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(PANEL_WIDTH * cols, 3.0 * n_rows), squeeze=False)
    for ax, kind in zip(axes.ravel(), kinds):
        rs = [r for r in rows if r["attack"] == kind]
        m = [r["magnitude"] for r in rs]
        ax.plot(m, [r["flip_to_target"] for r in rs], "o-", label="flip to target")
        ax.plot(m, [r["accuracy"] for r in rs], "s--", label="accuracy")
        ax.set(title=kind, xlabel="flipped weights" if kind.startswith("bit") else "magnitude", ylim=(-0.02, 1.02))
    for ax in axes.ravel()[len(kinds):]:
        ax.axis("off")
    axes[0][0].legend(fontsize=7)
    return save_figure(fig, path)
