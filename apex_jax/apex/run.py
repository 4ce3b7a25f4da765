"""The APEX run layer: a model, a data set and settings in; a run folder out.

    RUN/samples.csv      one row per input: id, label (empty if unlabelled), the input text
                         (first 120 characters), clean prediction, escape σ (grid
                         estimator), top transition, share kept per σ, clean margin, mean
                         margin per σ, mean KL(clean ‖ noisy) per σ
    RUN/sigmas.csv       one row per σ: share kept, flip rate, share of inputs escaped, the
                         dominant class, its share, the entropy of the class shares, and the
                         means over inputs of the margin and of KL(clean ‖ noisy), with the
                         mean clean margin
    RUN/summary.json     settings, label space, versions and model-level results
                         (deterministic: rerunning the same command rewrites it byte for byte)
    RUN/timing.json      seconds, perturbed forwards, compiles, forwards per second
    RUN/*.png            consistency curves, escape-σ histogram, transitions, large-σ shares
    RUN/index.html       the run's page (`apex_jax.run_page`): summary, figures, tables, files

    summary = apex_run("runs/demo/finetune/model", "vader-movies", "runs/apex", n=32, draws=32)
    summary = apex_run(model, dataset, "runs/apex", ApexSettings(sigmas="logspace:0.01:4:16"))
    summary = apex_run(model, ["a fine film", "a dull film"], "runs/apex")   # unlabelled: no accuracy
    summary = apex_run(model, dataframe, "runs/apex", text_column="sentence", label_column=None)

Labels are optional: APEX compares each input's noisy predictions with its clean one. Clean
accuracy is reported only where the data's labels are the model's classes; otherwise
results["clean_accuracy"] is null and results["accuracy_note"] says why (no labels, labels of
another task).

The folder's manifest, summary, timing and page are written by `apex_jax.runs` (one writer for
every command); this module holds what is APEX's own: the tables and the results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from apex_jax import batching, inputs, runs
from apex_jax.apex.analysis import ApexResult, run_apex, samples_table, sigmas_table
from apex_jax.apex.plots import FIGURES, plot_all
from apex_jax.data import Dataset
from apex_jax.engine.mesh import model_parallel_of, shard_params, sweep_mesh
from apex_jax.errors import InputError
from apex_jax.models.model import Model
from apex_jax.progress import Progress
from apex_jax.settings import MAX_FORWARDS, ApexSettings
from apex_jax.sites import parse_sites


def results(result: ApexResult, labels: np.ndarray, label_names: Sequence[str], *,
            no_accuracy_reason: str | None = None) -> dict:
    """The model-level results of summary.json (deterministic; no timings).

    `escape_sigma` holds the grid estimator: how many inputs escape on the grid and the median
    of their escape σ (null if none escapes). `clean_accuracy` is null when
    `no_accuracy_reason` is given (unlabelled inputs, labels of another task); `accuracy_note`
    then holds the reason.
    """
    esc = result.escape_sigma()
    finite = esc[np.isfinite(esc)]
    transition_at = result.transition_index()
    return {
        "n_inputs": int(len(labels)),
        "clean_accuracy": None if no_accuracy_reason else float((result.clean == labels).mean()),
        **({"accuracy_note": f"no clean accuracy: {no_accuracy_reason}"} if no_accuracy_reason else {}),
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
    }


def scale_summary(scales: dict | None) -> dict | None:
    """{site: scale} for summary.json: the float of a per-site unit, or for "dim-rms" the
    per-dimension scale's min, median and max (the full vectors are `ApexResult.noise_scale`)."""
    if scales is None:
        return None
    out = {}
    for site, v in scales.items():
        a = np.asarray(v, np.float64)
        out[site] = float(a) if a.ndim == 0 else {"min": float(a.min()), "median": float(np.median(a)),
                                                  "max": float(a.max()), "shape": list(a.shape)}
    return out


def timing(result: ApexResult) -> dict:
    """timing.json of a run: seconds, perturbed forwards, compiles and forwards per second."""
    sweep = result.sweep
    return {"seconds": round(sweep.seconds, 2), "perturbed_forwards": sweep.perturbed_forwards,
            "compiles": sweep.settings.get("compiles"),
            "forwards_per_second": round(sweep.perturbed_forwards / max(sweep.seconds, 1e-9), 1)}


def apex_run(model: Model | str, data: Dataset | str, out: str | Path, settings: ApexSettings | None = None, *,
             overwrite: bool = False, progress: Progress = True, log: Callable[[str], None] | None = print,
             **options: Any) -> dict:
    """APEX noise sweep of a model on a data set, written as a run folder.

    The same run as `apex-jax apex`, with the same guarantees: the model and data are checked
    against each other (input kind; labels are optional, and clean accuracy is reported only
    where they are the model's classes: string labels are matched to the model's class names,
    in its order), a causal LM needs `labels` (label words) or `vocab_classes`, inputs cut by
    `max_length` (default: the model's own limit) are counted, and a folder holding another run
    is refused unless `overwrite`.

    Args:
        model: a model name or HF folder (loaded in `settings.dtype`), or an `apex_jax.Model`.
        data: a data set name or file (its `settings.split`: by default test of a built-in data
            set, all of a file; first `settings.n`), data in memory (a pandas DataFrame, a dict
            of lists, a Hugging Face `datasets.Dataset`, a list of strings, an image array;
            columns `settings.text_column` / `label_column`), or an `apex_jax.data.Dataset`
            (used as given).
        out: the run folder (the engine's checkpoints go to `out/sweep-checkpoints`).
        settings: the run's `ApexSettings`; `options` are its fields as keywords (e.g.
            ``sigmas=[0.05, 1], draws=16``), applied on top.
        overwrite: replace another run in `out` (its listed files and sweep checkpoints).
        progress: progress reports (`apex_jax.progress`): True, False or a callable.
        log: where notes and the overwrite report go (None: nowhere).

    Returns:
        summary.json's content plus "timing" (timing.json's content) and "result" (the
        `ApexResult`).

    Raises:
        InputError: a bad setting, model, data set or folder; RunExistsError: `out` holds
        another run and `overwrite` is False.

    Example:
        >>> s = apex_run("runs/demo/finetune/model", "vader-movies", "runs/apex",
        ...              n=32, sigmas="0.05,0.2,1,4", draws=32)  # doctest: +SKIP
        >>> s["results"]["escape_sigma"]  # doctest: +SKIP
    """
    s = ApexSettings.of(settings, **options)
    out = runs.check_out(out)
    mesh = sweep_mesh(s.model_parallel)
    ds = inputs.dataset(data, s.split, s.n, s.split_seed, text_column=s.text_column, label_column=s.label_column)
    loaded = inputs.model(model, dtype=s.dtype, labels=s.labels, prompt=s.prompt)
    ds = inputs.align(loaded, ds)
    space = inputs.check(loaded, ds, "apex", inputs.name_of(model, "the model"), log, vocab_classes=s.vocab_classes)
    split = inputs.split_of(data, s.split)
    if log:
        log(f"data: {inputs.name_of(data, '<in-memory data>')}, "
            f"{f'split {split}' if split else 'as given'}: {len(ds)} inputs"
            f"{'' if ds.labelled else ', unlabelled'}")
        if not space.accuracy:
            log(f"note: no clean accuracy: {space.no_accuracy_reason} (APEX needs no labels)")
    cut = inputs.truncation(loaded, ds, s.max_length, log)
    if model_parallel_of(mesh) > 1:  # every forward of the run (calibration, clean, sweep) tensor-parallel
        loaded = loaded.replace(shard_params(loaded.params, mesh))
    sites = parse_sites(loaded, s.sites)
    forwards = len(ds) * len(s.sigmas) * s.draws
    if forwards > MAX_FORWARDS and not s.yes:
        raise InputError(f"this sweep is {forwards:,} perturbed forwards ({len(ds)} inputs x {len(s.sigmas)} sigmas x "
                         f"{s.draws} draws), more than {MAX_FORWARDS:.0e}; check --draws and --sigmas, or pass --yes "
                         "(yes=True) to run it")
    run = runs.open_run(out, s.command, {**inputs.identity(model, loaded, data, ds), **s.record(), "n": len(ds),
                                         "split_used": split, "sites": list(sites)},
                        overwrite=overwrite, log=log, inputs=(model, data))
    with run:
        batch = batching.encode(loaded, ds, s.max_length)  # None: the model's own limit
        result = run_apex(loaded, loaded.params, batch, ds.ids, s.sigmas, sites=sites, draws=s.draws, seed=s.seed,
                          relative=not s.absolute, threshold=s.threshold, noise_unit=s.noise_unit, run_dir=out, units_per_call=s.chunk_size,
                          pad_multiple=s.pad_multiple, progress=progress, mesh=mesh, desc="APEX sweep")
        names = loaded.label_names or (ds.label_names if space.accuracy else ()) or \
            tuple(str(k) for k in range(loaded.config.n_classes))
        labels = ds.labels if ds.labelled else [""] * len(ds)
        texts = ds.inputs if ds.kind == "text" else None
        header, rows = samples_table(result, ds.ids, labels, texts)
        run.write_rows("samples.csv", header, rows)
        run.write_rows("sigmas.csv", *sigmas_table(result))
        res = {**results(result, np.asarray(ds.labels), names, no_accuracy_reason=space.no_accuracy_reason),
               "split": split, **({"truncation": cut} if cut else {})}
        summary = run.write_summary(res, label_space=space,
                                    details={"site_rms": result.site_rms,
                                             "noise_scale": scale_summary(result.noise_scale),
                                             "engine": {k: v for k, v in result.sweep.settings.items() if k != "compiles"}})
        t = run.write_timing(timing(result))
        run.claim(*FIGURES)
        plot_all(out, result, names, not s.absolute)
        run.complete(log)
        return {**summary, "timing": t, "result": result}
