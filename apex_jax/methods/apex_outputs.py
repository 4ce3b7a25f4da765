"""Files of an APEX run: samples.csv, summary.json and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from apex_jax.methods.apex import ApexResult
from apex_jax.methods.outputs import save_figure as _save, versions


def write_samples(path: Path, result: ApexResult, ids: Sequence[int], labels: Sequence[int]) -> None:
    """One row per input: id, label, clean prediction, escape σ, share kept per σ."""
    esc = result.escape_sigma()
    kept = result.consistency
    top = result.top_transition(transition_index(result))
    with open(path, "w") as f:
        f.write("id,label,clean_prediction,escape_sigma,top_transition,"
                + ",".join(f"kept_sigma_{s:.6g}" for s in result.sigmas) + "\n")
        for j in range(len(ids)):
            e = "inf" if np.isinf(esc[j]) else f"{esc[j]:.6g}"
            f.write(f"{ids[j]},{labels[j]},{result.clean[j]},{e},{top[j]},"
                    + ",".join(f"{k:.6g}" for k in kept[j]) + "\n")


def transition_index(result: ApexResult) -> int:
    """The grid index used for transitions: the smallest σ at which any draw leaves its clean
    prediction (small-σ transitions, as in APEX); the last σ if none does."""
    moved = (result.consistency < 1).any(0)
    return int(np.argmax(moved)) if moved.any() else len(result.sigmas) - 1


def summary(result: ApexResult, labels: np.ndarray, label_names: Sequence[str], settings: dict) -> dict:
    """Settings, versions, timings and the model-level results."""
    esc = result.escape_sigma()
    finite = esc[np.isfinite(esc)]
    transition_at = transition_index(result)
    sweep = result.sweep
    return {
        "settings": {**settings, "sigmas": result.sigmas.tolist(), "sites": result.sites,
                     "threshold": result.threshold, "site_rms": result.site_rms,
                     "engine": {k: v for k, v in sweep.settings.items() if k != "compiles"}},
        "versions": versions(),
        "results": {
            "n_inputs": int(len(labels)), "clean_accuracy": float((result.clean == labels).mean()),
            "mean_consistency": result.consistency.mean(0).tolist(),
            "escape_sigma": {"n_escaped": int(finite.size), "median": float(np.median(finite)) if finite.size else None},
            "transitions": {"sigma": float(result.sigmas[transition_at]),
                            "matrix": result.transitions(transition_at).tolist()},
            "large_sigma_bias": result.bias(-1),
            "label_names": list(label_names),
        },
    }


def plot_all(out: Path, result: ApexResult, label_names: Sequence[str], relative: bool) -> list[Path]:
    """Consistency curves, escape-σ histogram, transition heatmap, large-σ class shares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xlabel = "σ (× site RMS)" if relative else "σ"
    paths = []

    fig, ax = plt.subplots(figsize=(5, 3.5))
    s = np.maximum(result.sigmas, 1e-12)
    for row in result.consistency:
        ax.plot(s, row, color="tab:blue", alpha=0.12, lw=0.8)
    ax.plot(s, result.consistency.mean(0), color="black", lw=2, label="mean")
    ax.axhline(result.threshold, color="tab:red", ls="--", lw=1, label="threshold")
    ax.set(xscale="log", xlabel=xlabel, ylabel="share keeping clean prediction", ylim=(-0.02, 1.02))
    ax.legend()
    paths.append(_save(fig, out / "consistency_curves.png"))

    fig, ax = plt.subplots(figsize=(5, 3.5))
    esc = result.escape_sigma()
    finite = esc[np.isfinite(esc)]
    if finite.size:
        bins = np.logspace(np.log10(max(finite.min(), 1e-6)), np.log10(finite.max() * 1.01 + 1e-12), 20)
        ax.hist(finite, bins=bins, color="tab:blue")
        ax.set_xscale("log")
    ax.set(xlabel=f"escape {xlabel}", ylabel="inputs",
           title=f"{int(np.isinf(esc).sum())} of {len(esc)} never escape")
    paths.append(_save(fig, out / "escape_sigma_hist.png"))

    at = transition_index(result)
    m = result.transitions(at).astype(float)
    m = m / np.maximum(m.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    im = ax.imshow(m, cmap="viridis", vmin=0, vmax=1)
    ax.set(xticks=range(len(label_names)), yticks=range(len(label_names)), xlabel="noisy prediction",
           ylabel="clean prediction", title=f"transitions at σ = {result.sigmas[at]:.3g}")
    ax.set_xticklabels(label_names, rotation=90)
    ax.set_yticklabels(label_names)
    fig.colorbar(im, ax=ax)
    paths.append(_save(fig, out / "transitions.png"))

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar(range(len(label_names)), result.class_shares(-1), color="tab:orange")
    ax.set(xticks=range(len(label_names)), ylabel="share of draws", title=f"class shares at σ = {result.sigmas[-1]:.3g}")
    ax.set_xticklabels(label_names, rotation=90)
    paths.append(_save(fig, out / "large_sigma_shares.png"))
    return paths


def write_all(out: Path, result: ApexResult, ids, labels, label_names, settings, relative) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    write_samples(out / "samples.csv", result, ids, labels)
    s = summary(result, np.asarray(labels), label_names, settings)
    (out / "summary.json").write_text(json.dumps(s, indent=2))
    # Timings live apart so that rerunning the same command rewrites summary.json identically.
    sweep = result.sweep
    timing = {"seconds": round(sweep.seconds, 2), "perturbed_forwards": sweep.perturbed_forwards,
              "compiles": sweep.settings.get("compiles"),
              "forwards_per_second": round(sweep.perturbed_forwards / max(sweep.seconds, 1e-9), 1)}
    (out / "timing.json").write_text(json.dumps(timing, indent=2))
    s["timing"] = timing
    plot_all(out, result, label_names, relative)
    return s
