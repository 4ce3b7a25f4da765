"""Shared pieces of the reproduction scripts: arguments, APEX sweeps over many models, escape σ
interpolated on a grid (output files: apex_jax.fileio)."""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from apex_jax import ApexResult, Model, fileio, run_apex
from apex_jax.models import skeleton


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
    plt = fileio.pyplot()
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
    fileio.save_figure(fig, path, dpi=120)


def clean_logits(model: Model, params: Any, batch: dict, chunk: int = 128) -> np.ndarray:
    """The model's clean logits on a batch (dict of arrays with a leading input axis), in chunks:
    [n, C]."""
    n = len(next(iter(batch.values())))
    out = [np.asarray(model.apply(params, {k: np.asarray(v)[s:s + chunk] for k, v in batch.items()}).logits)
           for s in range(0, n, chunk)]
    return np.concatenate(out).astype(np.float64)


def engine_kw(pad_multiple: int | None) -> dict:
    """Engine settings for a claim's sweeps: only what differs from the engine's defaults (None: the
    engine's own length buckets)."""
    return {} if pad_multiple is None else {"pad_multiple": pad_multiple}


def softmax_margin(logits: np.ndarray) -> np.ndarray:
    """The clean confidence baseline: softmax probability of the predicted class minus that of
    the runner-up, per input ([n, C] logits -> [n] in [0, 1])."""
    z = np.asarray(logits, np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    top2 = np.sort(p, axis=-1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


# ------------------------------------------------------------------ input-noise baseline (images)

# What "input noise" is for the ViTs: Gaussian noise on the normalized pixel values themselves,
# the model's actual input (not `hook_embed`, which also holds the [CLS] token and the position
# embeddings, neither of which is input).
PIXEL_NOISE = "Gaussian noise on the normalized pixel values, σ × their RMS"


def pixel_noise_consistency(model: Model, params: Any, pixel_values: np.ndarray, ids: Sequence[int],
                            sigmas: Sequence[float], draws: int, seed: int = 0,
                            chunk: int = 16) -> tuple[np.ndarray, np.ndarray, float]:
    """The input-noise baseline of APEX for image models: the share of draws keeping the clean
    prediction when Gaussian noise is added to the pixels only, on the same σ grid and draws.

    Noise std = σ × the RMS of the clean pixel values over the batch (relative, like APEX's site
    RMS; it depends on the inputs only, so every model of a zoo gets the same noise). Each input
    draws its `draws` noise images once from a key of (seed, its id) and every σ scales the same
    ones (common random numbers, as the APEX sweep does), so results do not depend on batching.

    Args:
        model: the architecture (its params are not used).
        params: the probed model's parameters.
        pixel_values: [n, C, H, W] normalized pixel values.
        ids: [n] integer ids of the inputs (noise keys).
        sigmas: [G] relative noise levels.
        draws: noise draws per input and σ.
        chunk: inputs per compiled call (chunk × draws images per forward; 16 × 32 ran 1.7× faster
            than 64 × 32 on the tiny mnist ViT on 2 loaded CPU cores).

    Returns:
        (consistency [n, G] share of draws keeping the clean prediction, clean predictions [n],
        the pixel RMS the σ are relative to).
    """
    pred, clean, rms = pixel_noise_predictions(model, params, pixel_values, ids, sigmas, draws, seed, chunk)
    return (pred == clean[:, None, None]).mean(-1), clean, rms


def pixel_noise_class_shares(model: Model, params: Any, pixel_values: np.ndarray, ids: Sequence[int],
                             sigmas: Sequence[float], draws: int, seed: int = 0, chunk: int = 16) -> np.ndarray:
    """The input-noise arm of a class-share sweep: the share of all draws over all inputs
    predicting each class, per σ, with the noise of `pixel_noise_consistency` (same keys, std and
    draws). Returns [G, n_classes] (each row sums to 1), like `ApexResult.class_shares` per σ."""
    pred, _, _ = pixel_noise_predictions(model, params, pixel_values, ids, sigmas, draws, seed, chunk)
    n_classes = model.config.n_classes
    return np.stack([np.bincount(pred[:, g].ravel(), minlength=n_classes) / pred[:, g].size
                     for g in range(pred.shape[1])])


def pixel_noise_predictions(model: Model, params: Any, pixel_values: np.ndarray, ids: Sequence[int],
                            sigmas: Sequence[float], draws: int, seed: int = 0,
                            chunk: int = 16) -> tuple[np.ndarray, np.ndarray, float]:
    """Every prediction of the pixel-noise sweep (see `pixel_noise_consistency` for the noise):
    (predictions [n, G, draws], clean predictions [n], the pixel RMS)."""
    x = np.asarray(pixel_values, np.float32)
    ids = np.asarray(ids)
    if x.ndim != 4 or len(ids) != len(x):
        raise ValueError(f"pixel_values must be [n, C, H, W] with one id per input; got shape {x.shape} and "
                         f"{len(ids)} ids.")
    if draws < 1:
        raise ValueError(f"draws must be >= 1; got {draws}.")
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    stds = jnp.asarray(np.asarray(sigmas, np.float32) * rms)
    chunk = min(chunk, len(x))
    preds, clean = [], []
    for s in range(0, len(x), chunk):
        xb, ib = x[s:s + chunk], ids[s:s + chunk]
        k = len(xb)
        if k < chunk:  # pad the last chunk: one compiled shape
            xb, ib = np.pad(xb, [(0, chunk - k)] + [(0, 0)] * 3), np.pad(ib, (0, chunk - k))
        pred, clean_pred = _pixel_noise_predictions(params, jnp.asarray(xb), jnp.asarray(ib, jnp.uint32), stds,
                                                    seed=int(seed), draws=int(draws), config=model.config)
        preds.append(np.asarray(pred)[:k])
        clean.append(np.asarray(clean_pred)[:k])
    return np.concatenate(preds), np.concatenate(clean), rms


@functools.partial(jax.jit, static_argnames=("seed", "draws", "config"))
def _pixel_noise_predictions(params: Any, x: jax.Array, ids: jax.Array, stds: jax.Array, *, seed: int, draws: int,
                             config: Any) -> tuple[jax.Array, jax.Array]:
    """x [b, C, H, W], ids [b], stds [G] -> (predictions [b, G, draws], clean predictions [b]).
    One forward of b × draws noisy images per σ (`lax.map` over σ)."""
    net = skeleton(config)
    b = x.shape[0]
    clean = net.apply(params, {"pixel_values": x}).logits.argmax(-1)  # [b]
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(ids)
    z = jax.vmap(lambda k: jax.random.normal(k, (draws,) + x.shape[1:], x.dtype))(keys)  # [b, draws, C, H, W]

    def one(std):
        noisy = (x[:, None] + std * z).reshape((b * draws,) + x.shape[1:])
        return net.apply(params, {"pixel_values": noisy}).logits.argmax(-1).reshape(b, draws)

    return jnp.moveaxis(jax.lax.map(one, stds), 0, 1), clean
