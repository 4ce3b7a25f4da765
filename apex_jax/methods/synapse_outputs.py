"""Files of SYNAPSE runs: CSV tables, summary.json and PNG plots (probe, silence, attack)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from apex_jax.methods.outputs import save_figure as _save


def write_csv(path: Path, rows: Sequence[dict]) -> Path:
    """Rows of dicts (one header: the union of keys, in first-seen order); floats to 6 digits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(v) for k, v in r.items()})
    return path


def _fmt(v):
    if isinstance(v, (float, np.floating)):
        return "inf" if math.isinf(v) else ("nan" if math.isnan(v) else f"{float(v):.6g}")
    if isinstance(v, (list, tuple, np.ndarray)):
        return json.dumps([_fmt(x) if isinstance(x, float) else x for x in np.asarray(v).tolist()])
    return v


def write_json(path: Path, obj: dict) -> Path:
    path.write_text(json.dumps(_clean(obj), indent=2, sort_keys=False))
    return path


def _clean(o):
    """JSON-safe: numpy scalars/arrays to Python, inf/nan to strings."""
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, np.ndarray):
        return _clean(o.tolist())
    if isinstance(o, (np.floating, float)):
        f = float(o)
        return f if math.isfinite(f) else str(f)
    if isinstance(o, np.integer):
        return int(o)
    return o


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def short(site: str) -> str:
    """A short label: blocks.3.hook_resid_post -> L3, hook_embed -> emb."""
    if site == "hook_embed":
        return "emb"
    if site.startswith("blocks.") and site.endswith("hook_resid_post"):
        return "L" + site.split(".")[1]
    if site == "concat":
        return "all"
    return site.replace("head.hook_", "head.")


def plot_probe_accuracy(path: Path, rows: Sequence[dict]) -> Path:
    """Per-site probe test accuracy and macro-F1 (rows from the probe table)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4.5, 0.55 * len(rows) + 1.5), 3.5))
    x = np.arange(len(rows))
    ax.plot(x, [r["test_accuracy"] for r in rows], "o-", label="accuracy")
    ax.plot(x, [r["test_macro_f1"] for r in rows], "s--", label="macro-F1")
    ax.set_xticks(x)
    ax.set_xticklabels([short(r["site"]) for r in rows], rotation=45)
    ax.set(ylabel="probe test score", ylim=(0, 1.02), title="[CLS] linear probes per layer")
    ax.legend()
    return _save(fig, path)


def plot_silencing_curves(path: Path, result, score: str = "accuracy") -> Path:
    """Score vs k per layer: top-k, bottom-k and the random band (min–max, mean)."""
    plt = _plt()
    L = len(result.layers)
    cols = min(3, L)
    rows_ = math.ceil(L / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(4 * cols, 3.2 * rows_), squeeze=False)
    k = np.asarray(result.config.k_levels)
    clean = float(getattr(result.clean, score)[0])
    for ax, lr in zip(axes.ravel(), result.layers):
        v = getattr(lr.metrics, score)
        for kind, style in (("top", "o-"), ("bottom", "s--")):
            ys = [v[g] for g, s in enumerate(lr.selections) if s.kind == kind]
            if ys:
                ax.plot(k, ys, style, label=f"{kind}-k", ms=3)
        rand = np.array([[v[g] for g, s in enumerate(lr.selections) if s.kind == "random" and s.k == kk] for kk in k])
        ax.fill_between(k, rand.min(1), rand.max(1), color="gray", alpha=0.3, label="random (min–max)")
        ax.plot(k, rand.mean(1), color="gray", lw=1)
        ax.axhline(clean, color="black", ls=":", lw=1, label="clean")
        ax.set(title=short(lr.site), xlabel="k (% neurons silenced)", ylabel=score, ylim=(-0.02, 1.02))
    for ax in axes.ravel()[L:]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7)
    return _save(fig, path)


def plot_asymmetry(path: Path, matrix: np.ndarray, label_names: Sequence[str], title: str) -> Path:
    plt = _plt()
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
    return _save(fig, path)


def plot_attacks(path: Path, rows: Sequence[dict]) -> Path:
    """Flip-to-target rate and accuracy vs magnitude, one panel per attack."""
    plt = _plt()
    kinds = list(dict.fromkeys(r["attack"] for r in rows))
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.6 * len(kinds), 3.2), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        rs = [r for r in rows if r["attack"] == kind]
        m = [r["magnitude"] for r in rs]
        ax.plot(m, [r["flip_to_target"] for r in rs], "o-", label="flip to target")
        ax.plot(m, [r["accuracy"] for r in rs], "s--", label="accuracy")
        ax.set(title=kind, xlabel="flipped weights" if kind.startswith("bit") else "magnitude", ylim=(-0.02, 1.02))
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)
