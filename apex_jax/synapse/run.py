"""The SYNAPSE run layer: probe, silence, attack. Each reads a model and a data set, writes CSV
tables, summary.json (deterministic: settings and results, no timings), timing.json and PNG plots
into its run folder, and returns the summary.

    probe   RUN/probes/ (orbax), head_probe/, probes.csv, rankings.csv, ranking_agreement.csv,
            probe_accuracy.png
    silence RUN2/silencing.csv, controls.csv, curves.csv, asymmetry.csv, silencing_curves.png,
            class_asymmetry.png (scores: accuracy, weighted F1, mean label margin, mean KL)
    attack  RUN3/attacks.csv, attack_curves.png

Each takes a model and data by name or in memory with its command's settings object
(`apex_jax.settings`), checks them like the command line does, and writes through the one
run-folder writer (`apex_jax.runs`: run.json, summary.json, timing.json, index.html).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from apex_jax import batching, inputs, runs
from apex_jax import data as data_lib
from apex_jax.data import Dataset
from apex_jax.engine.mesh import model_parallel_of, shard_params, sweep_mesh
from apex_jax.engine.store import params_digest
from apex_jax.errors import InputError
from apex_jax.models.model import Model
from apex_jax.progress import Progress, tracker
from apex_jax.settings import AttackSettings, ProbeSettings, SilenceSettings
from apex_jax.sites import parse_sites
from apex_jax.sites import HEAD_INPUT_SITE as HEAD_SITE  # the attacks' probe reads the classifier input
from apex_jax.synapse import plots, rankings
from apex_jax.synapse.attacks import AttackConfig, attack_experiment
from apex_jax.synapse.features import extract_cls
from apex_jax.synapse.probes import ProbeConfig, ProbeSet, train_probes
from apex_jax.synapse.silencing import SilenceConfig, silencing_experiment


# ----------------------------------------------------------------------------- shared
Log = Callable[[str], None] | None


def _open(command: str, out: str | Path, record: dict, overwrite: bool, log: Log, inputs: tuple) -> runs.Run:
    return runs.open_run(out, command, record, overwrite=overwrite, log=log, inputs=inputs)


def _model(model: Model | str, settings: Any) -> Model:
    return inputs.model(model, dtype=settings.dtype, labels=settings.labels, prompt=settings.prompt)


def probe_run_identity(probe: str | Path) -> str | None:
    """sha256 of a probe run's manifest settings (None if it has none): a silence or attack run
    on re-fitted probes is another run."""
    try:
        m = runs.read_manifest(probe)
    except InputError:
        return None
    return None if m is None else hashlib.sha256(json.dumps(m["settings"], sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------- probe
def probe_run(model: Model | str, data: str | tuple[Dataset, Dataset], out: str | Path,
              settings: ProbeSettings | None = None, *, overwrite: bool = False, progress: Progress = True,
              log: Log = print, attribution_n: int = 128, **options: Any) -> dict:
    """[CLS] features of train + test, one probe per site (+ all layers concatenated) and one on
    the classifier input (head.hook_cls, for the attacks); rankings and their agreement with
    activation × gradient. The same run as `apex-jax probe`.

    The probes have the data's classes, which may be another task's than the model's (probing
    another task's features is legitimate; silence and attack then need probes of the model's
    own classes), but the training part needs at least two classes.

    Args:
        model: a model name or HF folder, or an `apex_jax.Model`.
        data: a data set name or file (its train split's first `n_train` and test split's first
            `n`), or a pair (train, test) of `apex_jax.data.Dataset` used as given.
        out: the run folder.
        settings: the run's `ProbeSettings`; `options` are its fields as keywords.
        overwrite, progress, log: as for `apex_jax.apex_run`.
        attribution_n: test inputs of the activation × gradient rankings.

    Returns:
        summary.json's content plus "timing".
    """
    s = ProbeSettings.of(settings, **options)
    out = runs.check_out(out)
    if isinstance(data, (tuple, list)):
        train, test = data
    else:
        train = data_lib.get_split(data, "train", n=s.n_train, seed=s.split_seed)
        test = data_lib.get_split(data, "test", n=s.n, seed=s.split_seed)
    loaded = _model(model, s)
    space = inputs.check(loaded, train, "probe", inputs.name_of(model, "the model"), log)
    sites = parse_sites(loaded, s.layers)
    config = ProbeConfig(l1=s.l1, l2=s.l2, steps=s.steps)
    run = _open(s.command, out, {**inputs.identity(model, loaded, data, train),
                                 **inputs.identity(model, loaded, None, test, prefix="test_"), **s.record(),
                                 "n_train": len(train), "n": len(test), "sites": list(sites),
                                 "classes": list(train.label_names)}, overwrite, log,
                (model, data))
    with run:
        model = loaded
        t0 = time.perf_counter()
        all_sites = sites + ([HEAD_SITE] if HEAD_SITE not in sites else [])
        n_tr = len(train)
        batch = batching.encode(model, [train, test], s.max_length)  # one padded width for both parts
        labels = np.concatenate([train.labels, test.labels])
        feats = extract_cls(model, model.params, batch, all_sites, progress=progress)
        t_feat = time.perf_counter() - t0
        tr_idx, te_idx = np.arange(n_tr), np.arange(n_tr, len(labels))
        C = train.n_classes  # the probes' task is the data's (it may be another task than the model's)
        layer_probes = train_probes({x: feats[x] for x in sites}, labels, tr_idx, te_idx, config, C, progress)
        head_probe = train_probes({HEAD_SITE: feats[HEAD_SITE]}, labels, tr_idx, te_idx,
                                  dataclasses.replace(config, concat=False), C, progress)
        layer_probes.save(run.path("probes"))
        head_probe.save(run.path("head_probe"))
        t_train = time.perf_counter() - t0 - t_feat

        table = layer_probes.rows() + head_probe.rows()
        run.write_csv("probes.csv", table)

        # rankings: global top neurons and their agreement with activation × gradient
        att_rows = np.arange(n_tr, min(len(labels), n_tr + attribution_n))
        att_batch = {k: v[att_rows] for k, v in batch.items()}
        rank_rows, agree_rows = [], []
        bar = tracker(len(sites) + 1, "rankings (act x grad)", "sites", progress)
        # every site's activation × gradient from one pass (one compiled kernel for all of them)
        attrs = rankings.attribution_rankings(model, model.params, att_batch, list(dict.fromkeys(sites + [HEAD_SITE])))
        for site in sites + [HEAD_SITE]:
            W = (head_probe if site == HEAD_SITE else layer_probes)[site].W
            g = rankings.global_ranking(W)
            attr = attrs[site]
            rnd = rankings.rank(np.random.default_rng(0).random(W.shape[1]))
            rank_rows.append({"site": site, "top_neurons": g.order[:20].tolist(),
                              **{f"top_neurons_class_{c}": rankings.class_ranking(W, c).order[:20].tolist() for c in range(C)},
                              "neurons_covering_50pct_mass": int(rankings.mass_cover(g, 50).sum()),
                              "neurons_covering_90pct_mass": int(rankings.mass_cover(g, 90).sum())})
            agree_rows.append({"site": site, "spearman_probe_vs_attribution": rankings.spearman(g, attr),
                               "spearman_probe_vs_random": rankings.spearman(g, rnd),
                               "top10pct_overlap_probe_attribution": float(
                                   (rankings.top_k(g, 10) * rankings.top_k(attr, 10)).sum() / rankings.k_count(10, len(g.scores)))})
            bar.update()
        bar.close()
        run.write_csv("rankings.csv", rank_rows)
        run.write_csv("ranking_agreement.csv", agree_rows)
        plots.plot_probe_accuracy(run.path("probe_accuracy.png"), table)
        summary = run.write_summary({"probes": table, "ranking_agreement": agree_rows,
                                     "label_names": list(model.label_names)},
                                    label_space=space, details={"n_test": len(test), "probe": dataclasses.asdict(config)})
        timing = run.write_timing({"seconds": round(time.perf_counter() - t0, 2), "feature_seconds": round(t_feat, 2),
                                   "train_seconds": round(t_train, 2)})
        run.complete(log)
        return {**summary, "timing": timing}


def _named(names: Sequence[str]) -> bool:
    """Whether class names carry meaning (not "0", "1", ... or LABEL_0, ...: index-only names)."""
    return not all(str(n).strip().lower() in (str(k), f"label_{k}") for k, n in enumerate(names))


def check_probe_run(probe: str | Path, model: Model) -> None:
    """InputError unless `probe` is a complete probe run of `model`: the same weights (its
    model_params_sha256) and the model's classes in the model's order, so the probe's class c is
    the model's class c (a silence or attack run reads the probe's rankings per class)."""
    m = runs.read_manifest(probe)
    if m is None:
        return  # probes saved without a run folder (Python): nothing recorded to compare
    if m.get("command") != "probe":
        raise InputError(f"--probe {probe} is a {m.get('command')} run, not a probe run; give a folder written "
                         "by `apex-jax probe`")
    if m.get("status") != "complete":
        raise InputError(f"--probe {probe} is an incomplete probe run (interrupted?); rerun its command "
                         f"({' '.join(map(str, m.get('command_line', [])))}) to finish it")
    s = m.get("settings", {})
    ours = params_digest(model.params)
    if s.get("model_params_sha256") not in (None, ours):
        raise InputError(f"--probe {probe} probed other weights (model_params_sha256 {s['model_params_sha256'][:12]}…, "
                         f"this model's is {ours[:12]}…): its neuron rankings are another model's; probe this "
                         "model first")
    classes, names = s.get("classes"), list(model.label_names or [])
    if classes is not None and names and _named(classes) and _named(names) and \
            [str(c).strip().lower() for c in classes] != [str(c).strip().lower() for c in names]:
        raise InputError(f"--probe {probe} was trained on classes {classes}, the model's are {names}: class c "
                         "of the probe must be the model's class c; probe the model on data labelled with its "
                         "own classes")


def load_probes(run: str | Path) -> tuple[ProbeSet, ProbeSet]:
    """(layer ProbeSet, head ProbeSet) of a probe run folder, with a clear error if absent."""
    run = Path(run)
    if not (run / "probes").exists():
        raise FileNotFoundError(f"{run} has no probes/; run `apex-jax probe MODEL --data DATA --out {run}` first.")
    return ProbeSet.load(run / "probes"), ProbeSet.load(run / "head_probe")


# ----------------------------------------------------------------------------- silence
def silence_run(model: Model | str, data: Dataset | str, probe: str | Path, out: str | Path,
                settings: SilenceSettings | None = None, *, overwrite: bool = False, progress: Progress = True,
                log: Log = print, **options: Any) -> dict:
    """Silencing curves with random controls at each probed layer, class asymmetry. The same
    run as `apex-jax silence`.

    Every selection is scored by accuracy, weighted F1, the mean label margin and the mean
    KL(clean ‖ silenced); controls.csv compares each ranked selection with the random ones on
    all four. The positive controls (`settings.controls`) add attribution masks (top-k% by
    activation × gradient, computed here on the evaluation inputs: the label's logit at the
    classifier token) and mean ablation (the means are the evaluation inputs' mean [CLS]).
    Accuracy and F1 compare predictions with the labels, so the labels must be the model's
    classes; macro-F1 averages over the classes present in the data only.

    Args:
        model: a model name or HF folder, or an `apex_jax.Model`.
        data: a data set name or file (its `settings.split`, first `settings.n`), or a `Dataset`.
        probe: a run folder written by `probe_run` / `apex-jax probe` on this model.
        out: the run folder.
        settings: the run's `SilenceSettings`; `options` are its fields as keywords.
        overwrite, progress, log: as for `apex_jax.apex_run`.

    Returns:
        summary.json's content plus "timing" and "result" (the `SilencingResult`).
    """
    s = SilenceSettings.of(settings, **options)
    out = runs.check_out(out)
    mesh = sweep_mesh(s.model_parallel)
    ds = inputs.dataset(data, s.split, s.n, s.split_seed)
    loaded = _model(model, s)
    space = inputs.check(loaded, ds, "evaluate", inputs.name_of(model, "the model"), log)
    if model_parallel_of(mesh) > 1:
        loaded = loaded.replace(shard_params(loaded.params, mesh))
    load_probes(probe)  # a missing or corrupt probe run is refused before `out` is touched
    check_probe_run(probe, loaded)
    config = SilenceConfig(k_levels=s.k, n_random=s.random, positions=s.positions, mode=s.mode, sigma=s.sigma,
                           draws=s.draws, seed=s.seed, joint=s.joint, per_class=s.per_class,
                           attribution="attribution" in s.control_set, mean_ablation="mean" in s.control_set,
                           asymmetry_k=s.asymmetry_level)
    config.check(loaded.config.n_classes)
    sites = parse_sites(loaded, s.layers) if s.layers else None
    run = _open(s.command, out, {**inputs.identity(model, loaded, data, ds), **s.record(), "n": len(ds),
                                 "layers": None if sites is None else list(sites), "asymmetry_k": config.asymmetry_k,
                                 "probe": str(probe), "probe_run_sha256": probe_run_identity(probe)},
                overwrite, log, (model, data, probe))
    with run:
        model, data, label_space = loaded, ds, dataclasses.asdict(space)
        sweep_kw = {"progress": progress, "run_dir": out, "mesh": mesh, "pad_multiple": s.pad_multiple}
        t0 = time.perf_counter()
        layer_probes, _ = load_probes(probe)
        sites = list(sites or layer_probes.sites)
        missing = [s for s in sites if s not in layer_probes.probes]
        if missing:
            raise ValueError(f"the probe run has no probes for {missing}; it has {list(layer_probes.sites)}.")
        scores = {}
        for site in sites:
            W = layer_probes[site].W
            scores[site] = (rankings.global_ranking(W).scores,
                            np.stack([rankings.class_ranking(W, c).scores for c in range(W.shape[0])]))
        batch = batching.encode(model, data, s.max_length)
        means = attribution = None
        if config.mode == "mean" or config.mean_ablation:
            feats = extract_cls(model, model.params, batch, sites, progress=sweep_kw.get("progress"))
            means = {site: feats[site].mean(0) for site in sites}
        if config.attribution:
            attribution = {site: r.scores for site, r in rankings.attribution_rankings(
                model, model.params, batch, sites, target=np.asarray(data.labels, np.int32)).items()}
        res = silencing_experiment(model, model.params, batch, data.labels, data.ids, scores, config,
                                   means=means, attribution=attribution, **sweep_kw)
        if label_space is not None:  # macro-F1 over the classes present in the data
            present = np.asarray(label_space["present"], int)
            for m in [res.clean, *(lr.metrics for lr in res.layers)]:
                m.macro_f1 = m.class_f1[:, present].mean(1)
        run.write_csv("silencing.csv", res.rows("grid"))
        controls = res.rows("controls")
        run.write_csv("controls.csv", controls)
        curves = res.rows("curves")
        run.write_csv("curves.csv", curves)
        names = list(model.label_names)
        summary_layers = []
        cells = ("k_percent", "drop", "z", "p", "random_mean")
        for lr in res.layers:
            mine = [c for c in controls if c["site"] == lr.site]
            top = [c for c in mine if c["selection"] == "top" and c["ablation"] == config.mode and c["score"] == "accuracy"]
            # every ranked selection (probe top, attribution, zeroed / mean-ablated) on every score
            ranked = {}
            for c in mine:
                if c["selection"] in ("top", "attribution"):
                    ranked.setdefault(f"{c['selection']}/{c['ablation']}", {}).setdefault(c["score"], []).append(
                        {k: c[k] for k in cells})
            summary_layers.append({"site": lr.site, "top_k": [{k: c[k] for k in cells} for c in top],
                                   "ranked": ranked})
        asym = {}
        if config.per_class:
            for lr in res.layers:
                asym[lr.site] = res.asymmetry(lr.site)
            run.write_csv("asymmetry.csv", res.rows("asymmetry"))
            plots.plot_class_asymmetry(run.path("class_asymmetry.png"), asym, names, config.asymmetry_k)
        plots.plot_silencing_curves(run.path("silencing_curves.png"), res, "accuracy")
        summary = run.write_summary({"clean": {**res.clean.row(0), "margin": res.clean_value("margin")},
                                     "layers": summary_layers, "curves": curves,
                                     "asymmetry": {site: m.tolist() for site, m in asym.items()}, "label_names": names},
                                    label_space=label_space, details={"sites": sites, "config": dataclasses.asdict(config)})
        timing = run.write_timing({"seconds": round(time.perf_counter() - t0, 2), "sweep_seconds": round(res.seconds, 2),
                                   "perturbed_forwards": res.perturbed_forwards,
                                   "forwards_per_second": round(res.perturbed_forwards / max(res.seconds, 1e-9), 1)})
        run.complete(log)
        return {**summary, "timing": timing, "result": res}


# ----------------------------------------------------------------------------- attack
def attack_run(model: Model | str, data: Dataset | str, probe: str | Path, out: str | Path,
               settings: AttackSettings | None = None, *, overwrite: bool = False, progress: Progress = True,
               log: Log = print, **options: Any) -> dict:
    """Logit bias, column push and bit flips toward a target class on the classifier input.
    The same run as `apex-jax attack`. The target is one of the model's classes and accuracy
    compares predictions with the labels, so the labels must be the model's classes.

    Args:
        model: a model name or HF folder, or an `apex_jax.Model`.
        data: a data set name or file (its `settings.split`, first `settings.n`), or a `Dataset`.
        probe: a run folder written by `probe_run` / `apex-jax probe` on this model (its
            classifier-input probe ranks the target's neurons).
        out: the run folder.
        settings: the run's `AttackSettings`; `options` are its fields as keywords.
        overwrite, progress, log: as for `apex_jax.apex_run`.

    Returns:
        summary.json's content plus "timing" and "result" (the attack results).
    """
    s = AttackSettings.of(settings, **options)
    out = runs.check_out(out)
    ds = inputs.dataset(data, s.split, s.n, s.split_seed)
    loaded = _model(model, s)
    space = inputs.check(loaded, ds, "evaluate", inputs.name_of(model, "the model"), log)
    C = loaded.config.n_classes
    if not 0 <= s.target < C:
        names = ", ".join(f"{c} ({loaded.label_names[c]})" for c in range(min(C, 12)))
        raise InputError(f"--target {s.target} is not one of the model's {C} classes; choose one of {names}")
    load_probes(probe)
    check_probe_run(probe, loaded)
    config = AttackConfig(target=s.target, k_percent=s.k)
    run = _open(s.command, out, {**inputs.identity(model, loaded, data, ds), **s.record(), "n": len(ds),
                                 "probe": str(probe), "probe_run_sha256": probe_run_identity(probe)}, overwrite, log,
                (model, data, probe))
    with run:
        model = loaded
        t0 = time.perf_counter()
        _, head_probe = load_probes(probe)
        W = head_probe[HEAD_SITE].W
        class_scores = np.stack([rankings.class_ranking(W, c).scores for c in range(W.shape[0])])
        batch = batching.encode(model, ds, s.max_length)
        h = extract_cls(model, model.params, batch, [HEAD_SITE], progress=progress)[HEAD_SITE]
        res = attack_experiment(model, model.params, h, ds.labels, class_scores, config)
        run.write_csv("attacks.csv", res["rows"])
        plots.plot_attacks(run.path("attack_curves.png"), res["rows"])
        summary = run.write_summary({**res, "label_names": list(model.label_names)}, label_space=space,
                                    details={"config": dataclasses.asdict(config)})
        timing = run.write_timing({"seconds": round(time.perf_counter() - t0, 2)})
        run.complete(log)
        return {**summary, "timing": timing, "result": res}
