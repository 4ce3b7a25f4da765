"""The APEX run layer: a model, a data set and settings in; a run folder out.

    RUN/samples.csv      one row per input: id, label, clean prediction, escape σ (grid
                         estimator), top transition, share kept per σ, clean margin, mean
                         margin per σ, mean KL(clean ‖ noisy) per σ
    RUN/sigmas.csv       one row per σ: share kept, flip rate, share of inputs escaped, the
                         dominant class, its share, the entropy of the class shares, and the
                         means over inputs of the margin and of KL(clean ‖ noisy), with the
                         mean clean margin
    RUN/summary.json     settings, versions and model-level results (deterministic: rerunning
                         the same command rewrites it byte for byte)
    RUN/timing.json      seconds, perturbed forwards, compiles, forwards per second
    RUN/*.png            consistency curves, escape-σ histogram, transitions, large-σ shares
    RUN/index.html       the run's page (`apex_jax.run_page`): summary, figures, tables, files

    summary = apex_run(model, dataset, Path("runs/apex"), sigmas=parse_sigmas("logspace:0.01:4:16"))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from apex_jax import batching, fileio, run_page
from apex_jax.apex.analysis import ApexResult, run_apex, samples_table, sigmas_table
from apex_jax.apex.plots import plot_all
from apex_jax.data import Dataset
from apex_jax.models.model import Model


def summary(result: ApexResult, labels: np.ndarray, label_names: Sequence[str], settings: dict) -> dict:
    """Settings, versions and the model-level results of summary.json (no timings).

    `results.escape_sigma` holds the grid estimator: how many inputs escape on the grid and the
    median of their escape σ (null if none escapes).
    """
    esc = result.escape_sigma()
    finite = esc[np.isfinite(esc)]
    transition_at = result.transition_index()
    sweep = result.sweep
    return {
        "settings": {**settings, "sigmas": result.sigmas.tolist(), "sites": result.sites,
                     "threshold": result.threshold, "site_rms": result.site_rms,
                     "engine": {k: v for k, v in sweep.settings.items() if k != "compiles"}},
        "versions": fileio.versions(),
        "results": {
            "n_inputs": int(len(labels)), "clean_accuracy": float((result.clean == labels).mean()),
            "mean_consistency": result.consistency.mean(0).tolist(),
            # continuous scores (means over inputs; margin of the clean prediction, KL in nats)
            "clean_margin": float(result.clean_margin.mean()),
            "mean_margin": result.mean_margin.mean(0).tolist(),
            "mean_kl": result.mean_kl.mean(0).tolist(),
            "escape_sigma": {"n_escaped": int(finite.size), "median": float(np.median(finite)) if finite.size else None},
            "transitions": {"sigma": float(result.sigmas[transition_at]),
                            "matrix": result.transitions(transition_at).tolist()},
            "large_sigma_bias": result.bias(-1),
            "label_names": list(label_names),
        },
    }


def timing(result: ApexResult) -> dict:
    """timing.json of a run: seconds, perturbed forwards, compiles and forwards per second."""
    sweep = result.sweep
    return {"seconds": round(sweep.seconds, 2), "perturbed_forwards": sweep.perturbed_forwards,
            "compiles": sweep.settings.get("compiles"),
            "forwards_per_second": round(sweep.perturbed_forwards / max(sweep.seconds, 1e-9), 1)}


def write_run(out: Path, result: ApexResult, ids: Sequence[int], labels: Sequence[int],
              label_names: Sequence[str], settings: dict, relative: bool, label_space: dict | None = None) -> dict:
    """Writes samples.csv, sigmas.csv, summary.json, timing.json and the plots of `result` into
    `out`; returns the summary with its timing under "timing"."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    header, rows = samples_table(result, ids, labels)
    fileio.write_rows(out / "samples.csv", header, rows)
    fileio.write_rows(out / "sigmas.csv", *sigmas_table(result))
    s = summary(result, np.asarray(labels), label_names, settings)
    if label_space is not None:
        s["label_space"] = label_space
    fileio.write_json(out / "summary.json", s)
    t = timing(result)
    fileio.write_timing(out, t)
    plot_all(out, result, label_names, relative)
    run_page.write_page(out)
    return {**s, "timing": t}


def apex_run(
    model: Model,
    data: Dataset,
    out: str | Path,
    *,
    sigmas: Sequence[float],
    sites: Sequence[str] | None = None,
    draws: int = 64,
    seed: int = 0,
    relative: bool = True,
    threshold: float = 0.5,
    max_length: int = 64,
    settings: dict | None = None,
    label_space: dict | None = None,
    **sweep_kw: Any,
) -> dict:
    """APEX noise sweep of `model` on a data set, written as a run folder.

    Args:
        model: an `apex_jax.Model` with a classification head.
        data: an `apex_jax.data.Dataset` (text or images).
        out: the run folder (created; the engine's checkpoints go to `out/sweep-checkpoints`).
        sigmas: the σ grid (e.g. `apex_jax.specs.parse_sigmas(...)`).
        sites: site names; default every block's hook_resid_post.
        draws, seed, relative, threshold: as for `run_apex`.
        max_length: text inputs are truncated to this many tokens.
        settings: what the caller records first in summary.json's settings (model, data, split,
            n, split_seed); draws, seed, relative_sigma, max_length and the sweep's settings follow.
        label_space: recorded as summary.json's "label_space" (e.g. `dataclasses.asdict` of
            `apex_jax.data.check_label_space(..., "evaluate")`).
        sweep_kw: passed to the engine (units_per_call, progress, mesh, ...).

    Returns:
        summary.json's content plus "timing" (timing.json's content) and "result" (the
        `ApexResult`).
    """
    out = Path(out)
    batch = batching.encode(model, data, max_length)
    result = run_apex(model, model.params, batch, data.ids, sigmas, sites=sites, draws=draws, seed=seed,
                      relative=relative, threshold=threshold, run_dir=out, **{"desc": "APEX sweep", **sweep_kw})
    settings = {**(settings or {}), "draws": draws, "seed": seed, "relative_sigma": relative,
                "max_length": max_length}
    s = write_run(out, result, data.ids, data.labels, model.label_names or data.label_names, settings, relative,
                  label_space)
    return {**s, "result": result}
