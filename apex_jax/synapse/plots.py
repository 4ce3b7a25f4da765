"""Figures of SYNAPSE runs: probe accuracy per layer, silencing curves, class asymmetry, attacks."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from apex_jax.fileio import pyplot, save_figure
from apex_jax.synapse.probes import CONCAT


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
    """Score vs k per layer: top-k, bottom-k and the random band (min–max, mean)."""
    plt = pyplot()
    L = len(result.layers)
    cols = min(3, L)
    rows_ = math.ceil(L / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(4 * cols, 3.2 * rows_), squeeze=False)
    k = np.asarray(result.config.k_levels)
    clean = float(getattr(result.clean, score)[0])
    for ax, lr in zip(axes.ravel(), result.layers):
        v = getattr(lr.metrics, score)
        base = result.config.mode  # the plotted selections; mean-ablated controls are in the CSVs
        for kind, style in (("top", "o-"), ("bottom", "s--"), ("attribution", "^-.")):
            ys = [v[g] for g, s in enumerate(lr.selections) if s.kind == kind and s.ablation == base]
            if ys:
                ax.plot(k, ys, style, label=f"{kind}-k", ms=3)
        rand = np.array([[v[g] for g, s in enumerate(lr.selections)
                          if s.kind == "random" and s.k == kk and s.ablation == base] for kk in k])
        ax.fill_between(k, rand.min(1), rand.max(1), color="gray", alpha=0.3, label="random (min–max)")
        ax.plot(k, rand.mean(1), color="gray", lw=1)
        ax.axhline(clean, color="black", ls=":", lw=1, label="clean")
        ax.set(title=short(lr.site), xlabel="k (% neurons silenced)", ylabel=score, ylim=(-0.02, 1.02))
    for ax in axes.ravel()[L:]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7)
    return save_figure(fig, path)


def plot_asymmetry(path: Path, matrix: np.ndarray, label_names: Sequence[str], title: str) -> Path:
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
    return save_figure(fig, path)


def plot_attacks(path: Path, rows: Sequence[dict]) -> Path:
    """Flip-to-target rate and accuracy vs magnitude, one panel per attack."""
    plt = pyplot()
    kinds = list(dict.fromkeys(r["attack"] for r in rows))
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.6 * len(kinds), 3.2), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        rs = [r for r in rows if r["attack"] == kind]
        m = [r["magnitude"] for r in rs]
        ax.plot(m, [r["flip_to_target"] for r in rs], "o-", label="flip to target")
        ax.plot(m, [r["accuracy"] for r in rs], "s--", label="accuracy")
        ax.set(title=kind, xlabel="flipped weights" if kind.startswith("bit") else "magnitude", ylim=(-0.02, 1.02))
    axes[0][0].legend(fontsize=7)
    return save_figure(fig, path)
