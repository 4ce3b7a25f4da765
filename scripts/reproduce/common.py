"""Shared pieces of the reproduction scripts: arguments, APEX sweeps over many models, escape σ
interpolated on a grid (output files: apex_jax.io)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from apex_jax import ApexResult, Model, io, run_apex


def parser(name: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"apex-jax reproduce {name}", description=description)
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes on the digits data set (a smoke test, ~seconds); the numbers mean little")
    p.add_argument("--out", default=None, help=f"report folder (default reports/{name})")
    p.add_argument("--work", default="runs/reproduce",
                   help="where trained models and checkpoints go (reused by later runs)")
    p.add_argument("--quiet", action="store_true", help="less logging")
    return p


def out_dir(args, name: str) -> Path:
    out = Path(args.out or f"reports/{name}")
    out.mkdir(parents=True, exist_ok=True)
    return out


def logger(args):
    return (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))


class Timer:
    """Wall-clock seconds per named stage, and the process's CPU seconds (on a machine shared
    with other work the wall-clock time overstates what the run needs; CPU seconds do not)."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.cpu0 = time.process_time()
        self.stages: dict[str, float] = {}
        self._last = self.t0

    def mark(self, stage: str) -> None:
        now = time.perf_counter()
        self.stages[stage] = round(self.stages.get(stage, 0.0) + now - self._last, 1)
        self._last = now

    def summary(self) -> dict:
        return {"total_seconds": round(time.perf_counter() - self.t0, 1),
                "cpu_seconds": round(time.process_time() - self.cpu0, 1), "stages": self.stages}


def apex_sweeps(model: Model, params_list: Sequence[Any], pixel_values: np.ndarray, ids: Sequence[int],
                sigmas: Sequence[float], sites: Sequence[str], draws: int, seed: int = 0,
                relative: bool = True) -> list[ApexResult]:
    """`run_apex` for several models of one architecture on the same inputs (relative σ by
    default: each model's noise is scaled by its own site RMS; `relative=False`: σ is the noise
    std). The sweep kernels are compiled per architecture, so every model reuses them."""
    batch = {"pixel_values": np.asarray(pixel_values, np.float32)}
    return [run_apex(model, p, batch, ids, sigmas, sites=list(sites), draws=draws, seed=seed, relative=relative,
                     progress=False) for p in params_list]


# The id every summary.json holding an escape σ gives under "escape_sigma_estimator": escape σ
# has three estimators in this project (the first grid σ below the threshold,
# `ApexResult.escape_sigma`; the adaptive bracket's upper end; this interpolation), and a number
# must say which one it is.
ESCAPE_SIGMA_ESTIMATOR = "log_sigma_interpolation"


def escape_sigma_interpolated(consistency: np.ndarray, sigmas: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Escape σ per input; estimator: log-σ interpolation between the last grid σ at/above and
    the first below the threshold (`ESCAPE_SIGMA_ESTIMATOR`).

    The σ at which the share of draws keeping the clean prediction crosses `threshold`, linear
    in log σ between those two grid points. Finer than the first grid σ below the threshold
    (`ApexResult.escape_sigma`), which ties many inputs on a coarse grid.

    Args:
        consistency: [n, n_sigmas] share of draws keeping the clean prediction.
        sigmas: [n_sigmas] increasing grid.
        threshold: the share below which an input has escaped.

    Returns:
        [n] escape σ: the smallest grid σ if already below the threshold there (an upper
        bound), inf if never below (beyond the grid).
    """
    c = np.asarray(consistency, np.float64)
    s = np.log(np.asarray(sigmas, np.float64))
    below = c < threshold
    first = np.argmax(below, axis=1)
    out = np.full(len(c), np.inf)
    for i in np.flatnonzero(below.any(1)):
        g = first[i]
        if g == 0:
            out[i] = np.exp(s[0])
            continue
        hi_c, lo_c = c[i, g - 1], c[i, g]
        frac = (hi_c - threshold) / max(hi_c - lo_c, 1e-12)
        out[i] = np.exp(s[g - 1] + frac * (s[g] - s[g - 1]))
    return out


def sigma_grid(lo: float, hi: float, n: int) -> np.ndarray:
    return np.logspace(np.log10(lo), np.log10(hi), n).astype(np.float32)


def fmt_rho(d: dict) -> str:
    """`rho [lo, hi]` of a `stats.spearman` result, for log lines."""
    return "n/a" if d["rho"] is None else f"{d['rho']:.3f} [{d['lo']:.3f}, {d['hi']:.3f}]"


def plot_regularity(path: Path, escape: np.ndarray, cscore: np.ndarray, speed: np.ndarray, results: dict) -> None:
    """Claim 1's figure: escape σ against the C-score estimate and against learning speed
    (one point per example, the median escape σ per octile bin of the metric, ρ in the
    titles). escape, cscore, speed: [n]; `results` holds `escape_vs_cscore` and
    `escape_vs_learning_speed` (`stats.spearman` results)."""
    plt = io.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    shown = np.where(np.isfinite(escape), escape, np.nan)
    for ax, metric, label, key in ((axes[0], cscore, "C-score estimate (hold-out accuracy)", "escape_vs_cscore"),
                                   (axes[1], speed, "learning speed (mean training-time accuracy)",
                                    "escape_vs_learning_speed")):
        jitter = np.random.default_rng(0).uniform(-0.01, 0.01, len(metric))
        ax.scatter(metric + jitter, shown, s=5, alpha=0.35)
        # median escape σ per metric bin
        bins = np.unique(np.quantile(metric[np.isfinite(metric)], np.linspace(0, 1, 9)))
        if len(bins) > 1:
            idx = np.clip(np.digitize(metric, bins[1:-1]), 0, len(bins) - 2)
            med = [np.median(escape[idx == b]) if (idx == b).any() else np.nan for b in range(len(bins) - 1)]
            ax.plot((bins[:-1] + bins[1:]) / 2, med, color="black", lw=2, marker="o", label="median per bin")
            ax.legend(loc="lower right", fontsize=8)
        r = results[key]
        title = "ρ n/a" if r["rho"] is None else f"Spearman ρ = {r['rho']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}]"
        ax.set(yscale="log", xlabel=label, ylabel="escape σ (× site RMS)", title=title)
    io.save_figure(fig, path, dpi=120)


def clean_logits(model: Model, params: Any, batch: dict, chunk: int = 128) -> np.ndarray:
    """The model's clean logits on a batch (dict of arrays with a leading input axis), in chunks:
    [n, C]."""
    n = len(next(iter(batch.values())))
    out = [np.asarray(model.apply(params, {k: np.asarray(v)[s:s + chunk] for k, v in batch.items()}).logits)
           for s in range(0, n, chunk)]
    return np.concatenate(out).astype(np.float64)


def softmax_margin(logits: np.ndarray) -> np.ndarray:
    """The clean confidence baseline: softmax probability of the predicted class minus that of
    the runner-up, per input ([n, C] logits -> [n] in [0, 1])."""
    z = np.asarray(logits, np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    top2 = np.sort(p, axis=-1)[:, -2:]
    return top2[:, 1] - top2[:, 0]
