"""The `apex-jax` command line: it parses arguments, calls the run layers (apex_jax.apex.run,
apex_jax.synapse.run, apex_jax.training.finetune_run) and prints their summaries.

    apex-jax fetch-assets [NAME ...]
    apex-jax sites MODEL
    apex-jax finetune MODEL --data DATA --out RUN [--mode full|head] ...
    apex-jax apex MODEL --data DATA --out RUN [--n N] [--sigmas SPEC] [--draws K] [--sites SPEC]
    apex-jax probe MODEL --data DATA --out RUN [--n-train N] [--n N] [--layers all]
    apex-jax silence MODEL --data DATA --probe RUN --out RUN2 [--n N] [--k SPEC] [--random R]
    apex-jax attack MODEL --data DATA --probe RUN --out RUN3 [--target C]
    apex-jax reproduce NAME [--quick] [ARGS]   (regularity, regularity-text, random-labels, transitions, backdoor-bias, synapse, report, all)
    apex-jax demo [--out runs/demo]
    apex-jax report RUN [RUN ...]     (re)build RUN/index.html, the page of a run (or of a folder of runs)

Run folders: every command writing --out keeps a manifest RUN/run.json (command, the settings
that determine the result incl. the model's params sha256 and the data's sha256, versions,
status "incomplete" while it runs and "complete" with the files written at the end). The same
command on the same folder resumes or recomputes; other settings are refused (exit 2, the
differing keys named) unless --overwrite, which removes the previous run's listed files and its
sweep checkpoints first. Each run folder gets a static page, RUN/index.html (summary numbers,
figures, tables, the command and versions, links to every file). Bad inputs exit with status 2
and a message; Ctrl-C exits 130 (rerun the same command to resume). Global flag
--no-compile-cache (or APEX_JAX_NO_COMPILE_CACHE=1) turns off JAX's persistent compilation cache
under $APEX_JAX_CACHE.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from apex_jax.errors import ApexJaxError, CheckpointError, InputError

DEMO_SIGMAS = "0.02,0.05,0.1,0.2,0.5,1,2,4"
DEMO_K = "5,10,20,50"
RUN_PAGES = ("finetune", "apex", "probe", "silence", "attack")  # the demo's runs, in its page's order
DEMO_EPOCHS, DEMO_N_TRAIN, DEMO_MAX_LENGTH = 1, None, 64  # fine-tuning budget of `apex-jax demo`


def _model_for(name: str, data, seed: int):
    """A pretrained model with a head for `data`, or a fresh ViT preset sized to the images."""
    import apex_jax
    from apex_jax.models.presets import VIT_PRESETS, vit_hf_config

    if name in VIT_PRESETS:
        if data.kind != "image":
            raise InputError(f"{name} is an image model; {data.name} is a text data set: give an image data set "
                             "(mnist5k, digits, an .npz file) or a text model")
        _, c, h, w = data.inputs.shape
        return apex_jax.create(vit_hf_config(name, c, h), num_labels=data.n_classes, label_names=data.label_names,
                               seed=seed)
    return apex_jax.load(name, num_labels=data.n_classes, label_names=data.label_names, seed=seed)


def _positive(**flags) -> None:
    """InputError unless every given integer flag is >= 1 (None = unset is fine)."""
    for name, v in flags.items():
        if v is not None and (isinstance(v, bool) or int(v) != v or v < 1):
            raise InputError(f"--{name.replace('_', '-')} must be a positive integer (>= 1); got {v}")


def _in_range(flag: str, v: float, lo: float, hi: float, lo_open: bool = True) -> None:
    ok = (lo < v if lo_open else lo <= v) and v <= hi
    if not ok:
        raise InputError(f"--{flag} must lie in {'(' if lo_open else '['}{lo:g}, {hi:g}]; got {v:g}")


def _progress(quiet: bool) -> bool:
    """Progress for `apex_jax.progress`: a bar on a terminal, a line every ~10% or 30 s when
    stderr is a log; nothing with --quiet."""
    return not quiet


def _load_checked(model: str, ds, purpose: str, dtype: str = "float32", labels: str | None = None,
                  prompt: str | None = None):
    """(model, label space) after the model/data checks every command runs before any work:
    the input kind (text vs image) and the label space (see `apex_jax.data.check_label_space`).
    With `labels` (comma-separated label words, one per class) a causal LM is read as a
    classifier through those tokens (`apex_jax.models.verbalizer`, `prompt` its template)."""
    import apex_jax
    from apex_jax import data as data_lib

    loaded = apex_jax.load(model, dtype=dtype)
    if labels is not None or prompt is not None:
        from apex_jax.models import verbalizer

        if labels is None:
            raise InputError("--prompt reads a causal LM through label tokens: give --labels too, "
                             "e.g. --labels ' negative, positive'")
        words = labels.split(",")  # leading spaces kept: BPE label tokens usually start with one
        if any(not w.strip() for w in words):
            raise InputError(f"--labels needs one non-empty word per class, comma-separated; got {labels!r}")
        loaded = verbalizer(loaded, words, prompt=prompt or "{text}")
    data_lib.check_input_kind(ds, "text" if loaded.config.is_text else "image", model)
    space = data_lib.check_label_space(loaded.config.n_classes, loaded.label_names, ds, purpose)
    for note in space.notes:
        print(f"note: {note}")
    return loaded, space


def _verbalizer(args) -> dict:
    """The --labels/--prompt keywords (a causal LM read through label tokens) when given."""
    return {k: getattr(args, k) for k in ("labels", "prompt") if getattr(args, k, None) is not None}


def _dtype(args) -> dict:
    """The `--dtype` keyword for the commands that have the flag (none for finetune and demo)."""
    return {"dtype": args.dtype} if getattr(args, "dtype", None) else {}


def _model_mesh(model_parallel: int):
    """The engine's mesh for `--model-parallel N` (InputError before any work when N is not a
    positive divisor of the device count)."""
    from apex_jax.engine.mesh import sweep_mesh

    _positive(model_parallel=model_parallel)
    return sweep_mesh(model_parallel)


def _split_params(loaded, mesh):
    """`loaded` with its parameters split over the mesh's "model" axis, so every forward of the
    run (calibration, clean predictions, sweeps) runs tensor-parallel; unchanged without one."""
    from apex_jax.engine.mesh import model_parallel_of, shard_params

    return loaded if model_parallel_of(mesh) == 1 else loaded.replace(shard_params(loaded.params, mesh))


def _mp_setting(model_parallel: int) -> dict:
    # recorded only when used, so the manifests of one-device-per-model runs stay as they were
    return {"model_parallel": model_parallel} if model_parallel > 1 else {}


def _space(space) -> dict:
    import dataclasses

    return dataclasses.asdict(space)


def _model_settings(model_name: str, loaded) -> dict:
    from apex_jax.engine.store import params_digest

    verbal = ({"label_token_ids": list(loaded.config.label_token_ids), "prompt": loaded.config.prompt}
              if getattr(loaded.config, "label_token_ids", None) else {})  # a verbalizer is another classifier
    return {"model": str(model_name), "model_params_sha256": params_digest(loaded.params), **verbal}


def _sigma(value) -> str:
    """σ for people: the float32 grid value's shortest form (0.1, not 0.10000000149011612)."""
    return f"{float(value):g}"


# ----------------------------------------------------------------------------- commands
def cmd_fetch_assets(args) -> int:
    from apex_jax import assets

    assets.fetch_assets(args.names or None)
    return 0


def cmd_sites(args) -> int:
    import apex_jax

    model = apex_jax.load(args.model)
    print(model)
    for s in model.sites:
        print(s)
    return 0


def finetune(model: str, data: str, out: str, *, mode: str = "full", lr: float | None = None, batch_size: int = 32,
             epochs: int = 3, patience: int = 1, max_length: int = 64, seed: int = 0, split_seed: int = 0,
             n_train: int | None = None, quiet: bool = False, overwrite: bool = False) -> dict:
    """`apex-jax finetune`: trains a classifier and prints its held-out accuracy.

    The head is created with the data set's classes, so model and data share one label space.
    """
    from apex_jax import data as data_lib
    from apex_jax import runs, training
    from apex_jax.engine.store import params_digest
    from apex_jax.models.presets import VIT_PRESETS

    _positive(batch_size=batch_size, epochs=epochs, max_length=max_length, n_train=n_train)
    if patience < 0:
        raise InputError(f"--patience must be >= 0; got {patience}")
    if lr is not None and not lr > 0:
        raise InputError(f"--lr must be > 0; got {lr}")
    runs.check_out(out)
    full = data_lib.load_dataset(data)
    n_tr = len(data_lib.split_dataset(full, seed=split_seed)["train"])
    if n_train is not None and n_train > n_tr:
        raise InputError(f"--n-train {n_train}, but the train split of {full.name!r} has {n_tr} examples; "
                         f"choose 1 <= n <= {n_tr}, or leave it unset")
    config = training.TrainConfig(mode=mode, learning_rate=lr, batch_size=batch_size, max_epochs=epochs,
                                  patience=patience, max_length=max_length, seed=seed,
                                  from_scratch=model in VIT_PRESETS)
    initial = _model_for(model, full, seed)
    if model not in VIT_PRESETS:
        data_lib.check_input_kind(full, "text" if initial.config.is_text else "image", model)
    run = runs.open_run(out, "finetune", {
        "model": model, "model_params_sha256": params_digest(initial.params), "data": data,
        "data_sha256": runs.data_digest(full), "mode": mode, "lr": lr, "batch_size": batch_size, "epochs": epochs,
        "patience": patience, "max_length": max_length, "seed": seed, "split_seed": split_seed,
        "n_train": n_train}, overwrite=overwrite)
    metrics = training.finetune_run(initial, full, out, config, split_seed=split_seed,
                                    n_train=n_train, model_name=model, log=print, progress=_progress(quiet))
    run.complete()
    print(f"held-out test accuracy: {metrics['test_accuracy']:.4f} on {metrics['n_test']} examples "
          f"({metrics['seconds']} s); model saved to {Path(out) / 'model'}")
    return metrics


def cmd_finetune(args) -> int:
    finetune(args.model, args.data, args.out, mode=args.mode, lr=args.lr, batch_size=args.batch_size,
             epochs=args.epochs, patience=args.patience, max_length=args.max_length, seed=args.seed,
             split_seed=args.split_seed, n_train=args.n_train, quiet=args.quiet, overwrite=args.overwrite,
             **_dtype(args))
    return 0


def apex(model: str, data: str, out: str, *, split: str = "test", split_seed: int = 0, n: int | None = None,
         sigmas: str = "logspace:0.01:4:16", draws: int = 64, sites: str = "resid_post", absolute: bool = False,
         threshold: float = 0.5, seed: int = 0, chunk_size: int | None = None, max_length: int = 64,
         quiet: bool = False, overwrite: bool = False, dtype: str = "float32", model_parallel: int = 1,
         labels: str | None = None, prompt: str | None = None) -> dict:
    """`apex-jax apex`: the APEX run layer on a data split, then its summary printed.

    Predictions are compared with the data's labels (clean accuracy), so the labels must be the
    model's classes (check_label_space "evaluate"): labels outside the model's classes or class
    names that disagree are refused; metrics cover the classes present.
    """
    import apex_jax
    from apex_jax import data as data_lib
    from apex_jax import runs
    from apex_jax.apex.run import apex_run

    _positive(n=n, draws=draws, chunk_size=chunk_size, max_length=max_length)
    _in_range("threshold", threshold, 0, 1)
    mesh = _model_mesh(model_parallel)
    grid = apex_jax.parse_sigmas(sigmas)
    runs.check_out(out)
    ds = data_lib.get_split(data, split, n=n, seed=split_seed)
    loaded, space = _load_checked(model, ds, "evaluate", dtype, labels, prompt)
    loaded = _split_params(loaded, mesh)
    site_list = apex_jax.parse_sites(loaded, sites)
    run = runs.open_run(out, "apex", {
        **_model_settings(model, loaded), "data": data, "data_sha256": runs.data_digest(ds), "split": split,
        "split_seed": split_seed, "n": len(ds), "sigmas": [float(x) for x in grid], "draws": draws,
        "sites": list(site_list), "absolute": absolute, "threshold": threshold, "seed": seed,
        "max_length": max_length, "dtype": dtype, **_mp_setting(model_parallel)}, overwrite=overwrite)
    s = apex_run(loaded, ds, out, sigmas=grid, sites=site_list, draws=draws, seed=seed, relative=not absolute,
                 threshold=threshold, max_length=max_length, units_per_call=chunk_size, progress=_progress(quiet),
                 mesh=mesh,
                 settings={"model": model, "data": ds.name, "split": split, "n": len(ds), "split_seed": split_seed},
                 label_space=_space(space))
    run.complete()
    r, t = s["results"], s["timing"]
    print(f"APEX: {len(ds)} inputs x {len(grid)} sigmas x {draws} draws on {len(site_list)} site(s): "
          f"{t['perturbed_forwards']} perturbed forwards in {t['seconds']} s ({t['forwards_per_second']}/s)")
    esc = r["escape_sigma"]
    escape = ("no input escaped" if esc["median"] is None else
              f"escape sigma median {_sigma(esc['median'])} ({esc['n_escaped']} of {len(ds)} escape)")
    print(f"clean accuracy {r['clean_accuracy']:.3f}; {escape}")
    print("  sigma      share kept   flip rate")
    for sg, k in zip(grid, r["mean_consistency"]):
        print(f"  {sg:<9.4g}  {k:.3f}        {1 - k:.3f}")
    b = r["large_sigma_bias"]
    print(f"large-sigma bias at {b['sigma']:.3g}: dominant class {b['dominant_class']} "
          f"with share {b['dominant_share']:.3f} (entropy {b['entropy']:.3f} nats)")
    print(f"wrote {out}/samples.csv, summary.json and plots")
    return s


def cmd_apex(args) -> int:
    """APEX noise sweep on a data split: samples.csv, summary.json, timing.json, plots."""
    apex(args.model, args.data, args.out, split=args.split, split_seed=args.split_seed, n=args.n,
         sigmas=args.sigmas, draws=args.draws, sites=args.sites, absolute=args.absolute, threshold=args.threshold,
         seed=args.seed, chunk_size=args.chunk_size, max_length=args.max_length, quiet=args.quiet,
         overwrite=args.overwrite, model_parallel=args.model_parallel, **_dtype(args), **_verbalizer(args))
    return 0


def probe(model: str, data: str, out: str, *, n_train: int = 2000, n: int = 500, layers: str = "all",
          l1: float = 1e-3, l2: float = 1e-3, steps: int = 400, split_seed: int = 0, max_length: int = 64,
          quiet: bool = False, overwrite: bool = False,
          dtype: str = "float32", labels: str | None = None,
          prompt: str | None = None) -> dict:
    """`apex-jax probe`: the SYNAPSE probe run layer, then the probe table printed.

    The labels define the probes' task, which may be another task than the model's (probing
    another task's features is legitimate): the model's classes are not compared
    (check_label_space "probe"), but the training set needs at least two classes.
    """
    import apex_jax
    from apex_jax import data as data_lib
    from apex_jax import runs
    from apex_jax.synapse.run import probe_run

    _positive(n_train=n_train, n=n, steps=steps, max_length=max_length)
    if l1 < 0 or l2 < 0:
        raise InputError(f"--l1 and --l2 must be >= 0; got {l1:g}, {l2:g}")
    runs.check_out(out)
    train = data_lib.get_split(data, "train", n=n_train, seed=split_seed)
    test = data_lib.get_split(data, "test", n=n, seed=split_seed)
    loaded, space = _load_checked(model, train, "probe", dtype, labels, prompt)
    cfg = apex_jax.ProbeConfig(l1=l1, l2=l2, steps=steps)
    site_list = apex_jax.parse_sites(loaded, layers)
    run = runs.open_run(out, "probe", {
        **_model_settings(model, loaded), "data": data, "data_sha256": runs.data_digest(train),
        "test_data_sha256": runs.data_digest(test), "n_train": len(train), "n": len(test), "sites": list(site_list),
        "l1": l1, "l2": l2, "steps": steps, "split_seed": split_seed, "max_length": max_length, "dtype": dtype},
        overwrite=overwrite)
    s = probe_run(loaded, train, test, Path(out), sites=site_list, config=cfg,
                  max_length=max_length, settings={"model": model, "data": data, "split_seed": split_seed},
                  label_space=_space(space), progress=_progress(quiet))
    run.complete()
    print(f"probes on {len(train)} train / {len(test)} test inputs ({s['timing']['seconds']} s):")
    print("  site                          test acc  macro-F1  spearman(probe, act×grad)")
    agree = {r["site"]: r["spearman_probe_vs_attribution"] for r in s["results"]["ranking_agreement"]}
    for r in s["results"]["probes"]:
        a = agree.get(r["site"])
        print(f"  {r['site']:<30}{r['test_accuracy']:.3f}     {r['test_macro_f1']:.3f}     "
              f"{'' if a is None else f'{a:.3f}'}")
    print(f"wrote {out}/probes.csv, rankings.csv, ranking_agreement.csv, summary.json, probe_accuracy.png")
    return s


def cmd_probe(args) -> int:
    """[CLS] probes per layer (+ concatenated, + classifier input), rankings, agreement."""
    probe(args.model, args.data, args.out, n_train=args.n_train, n=args.n, layers=args.layers, l1=args.l1,
          l2=args.l2, steps=args.steps, split_seed=args.split_seed, max_length=args.max_length,
          quiet=args.quiet, overwrite=args.overwrite, **_dtype(args), **_verbalizer(args))
    return 0


def _probe_identity(probe_dir: str) -> str | None:
    """sha256 of a probe run's manifest settings (None if it has none): a silence/attack run on
    re-fitted probes is another run."""
    import hashlib

    from apex_jax import runs

    try:
        m = runs.read_manifest(probe_dir)
    except InputError:
        return None
    return None if m is None else hashlib.sha256(json.dumps(m["settings"], sort_keys=True).encode()).hexdigest()


def silence(model: str, data: str, probe_dir: str, out: str, *, split: str = "test", n: int = 200,
            k: str = "synapse", random: int = 20, layers: str | None = None, positions: str = "cls",
            mode: str = "zero", sigma: float = 1.0, draws: int = 16, asymmetry_k: float = 10.0, joint: bool = False,
            controls: str = "attribution", seed: int = 0, split_seed: int = 0, max_length: int = 64,
            quiet: bool = False, overwrite: bool = False, dtype: str = "float32", model_parallel: int = 1,
            labels: str | None = None, prompt: str | None = None) -> dict:
    """`apex-jax silence`: the SYNAPSE silencing run layer, then the top-k drops printed.

    Accuracy and F1 compare predictions with the labels, so the labels must be the model's
    classes (check_label_space "evaluate"); macro-F1 averages over the classes present.
    `controls`: the positive controls, a comma list of "attribution" (top-k% by activation ×
    gradient: one more mask per k and one gradient pass per site; the default) and "mean"
    (the ranked and random masks also mean-ablated: about doubles the sweep; mode zero only),
    or "none".
    """
    import apex_jax
    from apex_jax import data as data_lib
    from apex_jax import runs
    from apex_jax.synapse.run import load_probes, silence_run

    _positive(n=n, draws=draws, max_length=max_length)
    mesh = _model_mesh(model_parallel)
    if random < 2:
        raise InputError(f"--random must be >= 2 (random masks per k, the control needs at least 2); got {random}")
    if not sigma > 0:
        raise InputError(f"--sigma must be > 0; got {sigma:g}")
    levels = apex_jax.parse_k(k)
    chosen = _parse_controls(controls)
    runs.check_out(out)
    ds = data_lib.get_split(data, split, n=n, seed=split_seed)
    loaded, space = _load_checked(model, ds, "evaluate", dtype, labels, prompt)
    loaded = _split_params(loaded, mesh)
    load_probes(probe_dir)  # a missing or corrupt probe run is refused before --out is touched
    cfg = apex_jax.SilenceConfig(k_levels=levels, n_random=random, positions=positions, mode=mode, sigma=sigma,
                                 draws=draws, seed=seed, joint=joint, attribution="attribution" in chosen,
                                 mean_ablation="mean" in chosen,
                                 asymmetry_k=asymmetry_k if asymmetry_k in levels else levels[len(levels) // 2])
    cfg.check(loaded.config.n_classes)
    sites = apex_jax.parse_sites(loaded, layers) if layers else None
    run = runs.open_run(out, "silence", {
        **_model_settings(model, loaded), "data": data, "data_sha256": runs.data_digest(ds), "split": split,
        "split_seed": split_seed, "n": len(ds), "probe": str(probe_dir), "probe_run_sha256": _probe_identity(probe_dir),
        "k": [float(x) for x in levels], "random": random, "layers": None if sites is None else list(sites),
        "positions": positions, "mode": mode, "sigma": sigma, "draws": draws, "asymmetry_k": cfg.asymmetry_k,
        "joint": joint, "controls": sorted(chosen), "seed": seed, "max_length": max_length, "dtype": dtype,
        **_mp_setting(model_parallel)},
        overwrite=overwrite)
    s = silence_run(loaded, ds, Path(probe_dir), Path(out), sites=sites, config=cfg, max_length=max_length,
                    progress=_progress(quiet), run_dir=Path(out), label_space=_space(space), mesh=mesh,
                    settings={"model": model, "data": data, "split": split, "split_seed": split_seed,
                              "probe": probe_dir})
    run.complete()
    t = s["timing"]
    print(f"silencing: {len(ds)} inputs, {len(levels)} k levels x (ranked + {random} random) at "
          f"{len(s['result'].layers)} site(s): {t['perturbed_forwards']} forwards in {t['sweep_seconds']} s "
          f"({t['forwards_per_second']}/s)")
    print(f"clean accuracy {s['results']['clean']['accuracy']:.3f}")
    for layer in s["results"]["layers"]:
        cells = "  ".join(f"{c['k_percent']:g}%: {c['drop']:+.3f} (z {c['z']:.1f}, p {c['p']:.2f})"
                          for c in layer["top_k"][:: max(1, len(layer["top_k"]) // 4)])
        print(f"  {layer['site']:<26} top-k accuracy drop  {cells}")
    print(f"wrote {out}/silencing.csv, controls.csv, curves.csv, asymmetry.csv, summary.json and plots")
    return s


def _parse_controls(spec: str) -> set[str]:
    """`--controls`: a comma list of attribution, mean, or none -> the set chosen."""
    items = {c.strip() for c in str(spec).split(",") if c.strip()}
    valid = {"attribution", "mean", "none"}
    if not items or items - valid or ("none" in items and len(items) > 1):
        raise InputError(f"--controls must be a comma list of attribution, mean (or 'none' alone); got {spec!r}")
    return items - {"none"}


def cmd_silence(args) -> int:
    """Silencing curves with random controls (z, p) and the class-asymmetry matrix."""
    silence(args.model, args.data, args.probe, args.out, split=args.split, n=args.n, k=args.k, random=args.random,
            layers=args.layers, positions=args.positions, mode=args.mode, sigma=args.sigma, draws=args.draws,
            asymmetry_k=args.asymmetry_k, joint=args.joint, controls=args.controls, seed=args.seed,
            split_seed=args.split_seed, max_length=args.max_length, quiet=args.quiet, overwrite=args.overwrite,
            model_parallel=args.model_parallel, **_dtype(args), **_verbalizer(args))
    return 0


def attack(model: str, data: str, probe_dir: str, out: str, *, split: str = "test", n: int = 200, target: int = 0,
           k: float = 10.0, split_seed: int = 0, max_length: int = 64, quiet: bool = False, overwrite: bool = False,
           dtype: str = "float32", labels: str | None = None,
          prompt: str | None = None) -> dict:
    """`apex-jax attack`: the SYNAPSE attack run layer, then the redirect rates printed.

    The target is one of the model's classes, and accuracy compares predictions with the
    labels, so the labels must be the model's classes (check_label_space "evaluate").
    """
    import apex_jax
    from apex_jax import data as data_lib
    from apex_jax import runs
    from apex_jax.synapse.run import attack_run, load_probes

    _positive(n=n, max_length=max_length)
    _in_range("k", k, 0, 100)
    runs.check_out(out)
    ds = data_lib.get_split(data, split, n=n, seed=split_seed)
    loaded, space = _load_checked(model, ds, "evaluate", dtype, labels, prompt)
    C = loaded.config.n_classes
    if not 0 <= target < C:
        names = ", ".join(f"{c} ({loaded.label_names[c]})" for c in range(min(C, 12)))
        raise InputError(f"--target {target} is not one of the model's {C} classes; choose one of {names}")
    load_probes(probe_dir)
    cfg = apex_jax.AttackConfig(target=target, k_percent=k)
    run = runs.open_run(out, "attack", {
        **_model_settings(model, loaded), "data": data, "data_sha256": runs.data_digest(ds), "split": split,
        "split_seed": split_seed, "n": len(ds), "probe": str(probe_dir), "probe_run_sha256": _probe_identity(probe_dir),
        "target": target, "k": k, "max_length": max_length, "dtype": dtype}, overwrite=overwrite)
    s = attack_run(loaded, ds, Path(probe_dir), Path(out), config=cfg, max_length=max_length,
                   label_space=_space(space), progress=_progress(quiet),
                   settings={"model": model, "data": data, "split": split, "split_seed": split_seed,
                             "probe": probe_dir})
    run.complete()
    r = s["results"]
    print(f"attacks toward class {r['target']} ({loaded.label_names[r['target']]}) on {len(ds)} inputs; "
          f"clean accuracy {r['clean_accuracy']:.3f}, target share {r['clean_target_share']:.3f}")
    print("  smallest logit bias sending a share of inputs to the target: "
          + ", ".join(f"{k}: {v:.3g}" for k, v in r["bias_to_redirect"].items()))
    for kind in dict.fromkeys(x["attack"] for x in r["rows"]):
        rows = [x for x in r["rows"] if x["attack"] == kind]
        print(f"  {kind:<24}" + "  ".join(f"{x['magnitude']:g}: {x['flip_to_target']:.2f}" for x in rows))
    print(f"wrote {out}/attacks.csv, summary.json, attack_curves.png")
    return s


def cmd_attack(args) -> int:
    """Logit bias, ±Δ column push and exponent bit flips toward a target class."""
    attack(args.model, args.data, args.probe, args.out, split=args.split, n=args.n, target=args.target, k=args.k,
           split_seed=args.split_seed, max_length=args.max_length, quiet=args.quiet, overwrite=args.overwrite,
           **_dtype(args), **_verbalizer(args))
    return 0


def cmd_reproduce(args) -> int:
    """A research-reproduction script (scripts/, reports/): its own arguments follow NAME.

    The study is not part of the installed package: it lives in the repository's
    `scripts/reproduce/` (the package `reproduce`, what `scripts/<claim>.py` import), found
    next to the package's source tree (a source checkout or an editable install). Installed from
    a wheel, there is none: exit 2 saying where it lives."""
    import importlib

    scripts = Path(__file__).resolve().parent.parent / "scripts"
    if not (scripts / "reproduce" / "__init__.py").is_file():
        print(f"apex-jax reproduce: error: the reproduction study is not installed with the package; it lives in "
              f"the repository's scripts/ folder (scripts/reproduce/). From a source checkout (`pip install -e .`) "
              f"run `apex-jax reproduce {args.name}` or `python scripts/reproduce_all.py`.", file=sys.stderr)
        return 2
    if sys.path[:1] != [str(scripts)]:
        sys.path.insert(0, str(scripts))
    reproduce = importlib.import_module("reproduce")
    if Path(reproduce.__file__).resolve().parent != scripts / "reproduce":
        print(f"apex-jax reproduce: error: `import reproduce` found {reproduce.__file__}, not {scripts / 'reproduce'}.",
              file=sys.stderr)
        return 2
    out = reproduce.run(args.name, args.args)
    return out if isinstance(out, int) else 0


def cmd_demo(args) -> int:
    """Fine-tune MiniLM on vader-movies, then run APEX and SYNAPSE on it; prints each step's wall
    time and the total at the end."""
    from apex_jax import assets

    t0 = time.perf_counter()
    walls: dict[str, float] = {}

    def step(name: str, fn, *a, **kw):
        t = time.perf_counter()
        out = fn(*a, **kw)
        walls[name] = time.perf_counter() - t
        print(f"[demo] {name}: {walls[name]:.0f} s")
        return out

    step("assets", assets.fetch_assets, ["minilm", "vader"])
    out = Path(args.out)
    model_dir = str(out / "finetune" / "model")
    q = {"quiet": args.quiet, "overwrite": args.overwrite, **_dtype(args)}
    if not (out / "finetune" / "model" / "config.json").is_file():
        step("fine-tuning", finetune, "minilm", "vader-movies", str(out / "finetune"), epochs=args.epochs,
             n_train=args.n_train, max_length=args.max_length, **q)
    else:
        print(f"using the fine-tuned model in {out / 'finetune' / 'model'}")
    step("APEX", apex, model_dir, "vader-movies", str(out / "apex"), n=args.n, sigmas=DEMO_SIGMAS, draws=args.draws,
         max_length=args.max_length, **q)
    print("\nSYNAPSE: [CLS] probes per layer")
    step("probes", probe, model_dir, "vader-movies", str(out / "probe"), n_train=args.probe_train, n=args.probe_test,
         max_length=args.max_length, **q)
    print("\nSYNAPSE: silencing top-k vs random-k [CLS] neurons")
    step("silencing", silence, model_dir, "vader-movies", str(out / "probe"), str(out / "silence"), n=args.n,
         k=DEMO_K, max_length=args.max_length, **q)
    print("\nSYNAPSE: head attacks toward class 1")
    step("attacks", attack, model_dir, "vader-movies", str(out / "probe"), str(out / "attack"), n=args.n, target=1,
         max_length=args.max_length, **q)
    metrics = json.loads((out / "finetune" / "metrics.json").read_text())
    from apex_jax import run_page

    page = run_page.write_index(out, RUN_PAGES, "apex-jax demo: MiniLM on VADER movie reviews")
    total = time.perf_counter() - t0
    print(f"\ndemo done in {total:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in walls.items())
          + f"): test accuracy {metrics['test_accuracy']:.4f}; tables and plots in {out}/")
    print(f"open the demo's page: {page.resolve()}")
    return 0


def cmd_report(args) -> int:
    """(Re)builds the page (index.html) of run folders, or of a folder of runs such as the demo's."""
    from apex_jax import run_page

    for folder in args.runs:  # check every folder before writing any page
        run_page.check_reportable(folder)
    for folder in args.runs:
        print(run_page.report(folder))
    return 0


def _defaults(fn) -> dict:
    """The keyword defaults of a command's function: the parser's defaults come from them, so a
    command and `demo` (which calls the functions) cannot disagree."""
    return {k: v.default for k, v in inspect.signature(fn).parameters.items()
            if v.kind is v.KEYWORD_ONLY and v.default is not v.empty}


def _verbalizer_flags(s: argparse.ArgumentParser) -> None:
    s.add_argument("--labels", help="a causal LM read as a classifier through label tokens: one word per class, "
                                    "comma-separated, each one token (BPE words keep their leading space: "
                                    "' negative, positive')")
    s.add_argument("--prompt", help="with --labels: the template, {text} = the input, ending right before the "
                                    "label word (default '{text}')")


def _quiet(s: argparse.ArgumentParser) -> None:
    s.add_argument("--quiet", action="store_true",
                   help="no progress reports (else a bar with rate and ETA on a terminal, a line every ~10%% "
                        "or 30 s when stderr is not one)")


def _overwrite(s: argparse.ArgumentParser) -> None:
    s.add_argument("--overwrite", action="store_true",
                   help="replace a previous run with other settings in --out (its listed files and sweep "
                        "checkpoints are removed first); without it such a folder is refused")


def build_parser() -> argparse.ArgumentParser:
    from apex_jax.models.presets import VIT_PRESETS

    p = argparse.ArgumentParser(prog="apex-jax", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--no-compile-cache", action="store_true",
                   help="do not use JAX's persistent compilation cache (also: APEX_JAX_NO_COMPILE_CACHE=1)")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, **kw) -> argparse.ArgumentParser:
        return sub.add_parser(name, formatter_class=argparse.ArgumentDefaultsHelpFormatter, **kw)

    s = command("fetch-assets", help="download the offline assets into the cache")
    s.add_argument("names", nargs="*", help="minilm, vader, mnist5k (default: all)")
    s.set_defaults(fn=cmd_fetch_assets)

    s = command("sites", help="list a model's activation sites")
    s.add_argument("model")
    s.set_defaults(fn=cmd_sites)

    s = command("finetune", help="fine-tune (or train from scratch) a classifier")
    s.add_argument("model", help=f"minilm, an HF folder, a hub id, or {', '.join(VIT_PRESETS)}")
    s.add_argument("--data", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--mode", choices=("full", "head"))
    s.add_argument("--lr", type=float)
    s.add_argument("--batch-size", type=int)
    s.add_argument("--epochs", type=int)
    s.add_argument("--patience", type=int)
    s.add_argument("--max-length", type=int)
    s.add_argument("--seed", type=int)
    s.add_argument("--split-seed", type=int)
    s.add_argument("--n-train", type=int, help="use only the first N training examples")
    _quiet(s)
    _overwrite(s)
    s.set_defaults(fn=cmd_finetune, **_defaults(finetune))

    s = command("apex", help="APEX: consistency under activation noise, escape sigma, transitions, bias")
    s.add_argument("model")
    s.add_argument("--data", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--split")
    s.add_argument("--split-seed", type=int)
    s.add_argument("--n", type=int)
    s.add_argument("--sigmas", help="logspace:LO:HI:N or a list 0.1,0.5,1")
    s.add_argument("--draws", type=int)
    s.add_argument("--sites",
                   help="a site spec: presets resid_post (default), embed, mlp_post, all; layer numbers 0,3; "
                        "a range like 2-4:hook_resid_post; or site names (comma-separated)")
    s.add_argument("--absolute", action="store_true", help="sigma as absolute std (default: x site RMS)")
    s.add_argument("--threshold", type=float, help="escape when the share kept falls below")
    s.add_argument("--seed", type=int)
    s.add_argument("--chunk-size", type=int, help="sweep units per compiled call")
    s.add_argument("--max-length", type=int)
    _quiet(s)
    _verbalizer_flags(s)
    s.add_argument("--dtype", choices=("float32", "bfloat16"),
                   help="precision: bfloat16 parameters and activations (softmax, norm statistics and logits in "
                        "float32) for accelerators; float32 (default) on CPU, where bf16 GEMMs are slower")
    s.add_argument("--model-parallel", type=int,
                   help="split the model's big matrices over N devices (tensor parallel, for models bigger "
                        "than one device); the sweep is spread over device count / N replicas")
    _overwrite(s)
    s.set_defaults(fn=cmd_apex, **_defaults(apex))

    def common_synapse(s, split=True):
        s.add_argument("model")
        s.add_argument("--data", required=True)
        s.add_argument("--out", required=True)
        s.add_argument("--split-seed", type=int)
        s.add_argument("--max-length", type=int, help="text inputs are truncated to this many tokens (>= 1)")
        s.add_argument("--dtype", choices=("float32", "bfloat16"),
                       help="precision: bfloat16 parameters and activations (softmax, norm statistics and logits in "
                            "float32) for accelerators; float32 (default) on CPU, where bf16 GEMMs are slower")
        _quiet(s)
        _verbalizer_flags(s)
        _overwrite(s)
        if split:
            s.add_argument("--split")
            s.add_argument("--n", type=int, help="inputs evaluated")
            s.add_argument("--probe", required=True, help="a run folder written by `apex-jax probe`")

    s = command("probe", help="SYNAPSE: per-layer [CLS] probes (Optax), neuron rankings")
    common_synapse(s, split=False)
    s.add_argument("--n-train", type=int, help="training-split inputs the probes fit")
    s.add_argument("--n", type=int, help="test-split inputs the probes are scored on")
    s.add_argument("--layers", help="a site spec: all (embed + every block), blocks, layer numbers 0,3,5, ranges, site names")
    s.add_argument("--l1", type=float)
    s.add_argument("--l2", type=float)
    s.add_argument("--steps", type=int)
    s.set_defaults(fn=cmd_probe, **_defaults(probe))

    s = command("silence", help="SYNAPSE: silence top/bottom/random k%% [CLS] neurons per layer")
    common_synapse(s)
    s.add_argument("--k", help="'synapse' (18 reference levels) or a list like 5,10,20")
    s.add_argument("--random", type=int, help="random masks per k (the control)")
    s.add_argument("--layers", help="default: every probed site; or a site spec (0,3,5 / blocks / site names)")
    s.add_argument("--positions", choices=("cls", "all"))
    s.add_argument("--mode", choices=("zero", "mean", "noise"))
    s.add_argument("--sigma", type=float, help="noise mode: std x the token's RMS")
    s.add_argument("--draws", type=int, help="noise mode: draws per input and mask")
    s.add_argument("--asymmetry-k", type=float)
    s.add_argument("--joint", action="store_true", help="silence all the layers at once (each its own ranking)")
    s.add_argument("--controls", help="positive controls: attribution (top-k%% by activation x gradient; default), "
                                      "mean (masks also mean-ablated, ~2x the sweep; mode zero), both as "
                                      "attribution,mean, or none")
    s.add_argument("--seed", type=int)
    s.add_argument("--model-parallel", type=int,
                   help="split the model's big matrices over N devices (tensor parallel, for models bigger "
                        "than one device); the sweep is spread over device count / N replicas")
    s.set_defaults(fn=cmd_silence, **_defaults(silence))

    s = command("attack", help="SYNAPSE: logit bias, weight push and bit flips toward a class")
    common_synapse(s)
    s.add_argument("--target", type=int)
    s.add_argument("--k", type=float, help="percent of the target's top neurons attacked")
    s.set_defaults(fn=cmd_attack, **_defaults(attack))

    s = command("reproduce", help="re-test a paper claim (writes reports/NAME/); `all` then the report")
    s.add_argument("name", help="regularity, regularity-text, random-labels, transitions, backdoor-bias, synapse, report or all")
    s.add_argument("args", nargs=argparse.REMAINDER, help="the script's own arguments, e.g. --quick")
    s.set_defaults(fn=cmd_reproduce)

    s = command("demo", help="fine-tune MiniLM on vader-movies, then run APEX and SYNAPSE on it")
    s.add_argument("--out", default="runs/demo")
    # The fine-tuning budget keeps `make demo` under 15 min on 2 cores (README "Quick start").
    s.add_argument("--epochs", type=int, default=DEMO_EPOCHS)
    s.add_argument("--n-train", type=int, default=DEMO_N_TRAIN)
    s.add_argument("--max-length", type=int, default=DEMO_MAX_LENGTH)
    s.add_argument("--n", type=int, default=32)
    s.add_argument("--draws", type=int, default=32)
    s.add_argument("--probe-train", type=int, default=1000)
    s.add_argument("--probe-test", type=int, default=300)
    _quiet(s)
    _overwrite(s)
    s.set_defaults(fn=cmd_demo)

    s = command("report", help="(re)build the page RUN/index.html of run folders (or of a folder of runs)")
    s.add_argument("runs", nargs="+", metavar="RUN", help="a run folder, or a folder of runs such as runs/demo")
    s.set_defaults(fn=cmd_report)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command. Bad inputs (ApexJaxError, ValueError, FileNotFoundError, a corrupt
    checkpoint) print "apex-jax CMD: error: ..." and return 2; Ctrl-C returns 130."""
    args = build_parser().parse_args(argv)
    try:
        if not args.no_compile_cache and os.environ.get("APEX_JAX_NO_COMPILE_CACHE", "") in ("", "0"):
            from apex_jax.engine.compile_cache import enable_compile_cache

            enable_compile_cache()
        from apex_jax import runs

        with runs.command_line(["apex-jax", *(sys.argv[1:] if argv is None else argv)]):
            return args.fn(args)
    except KeyboardInterrupt:
        print(f"apex-jax {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except (ApexJaxError, CheckpointError, ValueError, OSError) as e:  # OSError: e.g. disk full, permissions
        print(f"apex-jax {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
