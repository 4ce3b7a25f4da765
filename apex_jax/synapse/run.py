"""The SYNAPSE run layer: probe, silence, attack. Each reads a model and a data set, writes CSV
tables, summary.json (deterministic: settings and results, no timings), timing.json and PNG plots
into its run folder, and returns the summary.

    probe   RUN/probes/ (orbax), head_probe/, probes.csv, rankings.csv, ranking_agreement.csv,
            probe_accuracy.png
    silence RUN2/silencing.csv, controls.csv, curves.csv, asymmetry.csv, silencing_curves.png,
            class_asymmetry.png (scores: accuracy, weighted F1, mean label margin, mean KL)
    attack  RUN3/attacks.csv, attack_curves.png

Each also writes its page, RUN/index.html (`apex_jax.run_page`); the CLI rewrites it with the
final run.json when the run completes.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from apex_jax import batching, fileio, run_page
from apex_jax.data import Dataset
from apex_jax.models.model import Model
from apex_jax.progress import Progress, tracker
from apex_jax.sites import HEAD_INPUT_SITE as HEAD_SITE  # the attacks' probe reads the classifier input
from apex_jax.synapse import plots, rankings
from apex_jax.synapse.attacks import AttackConfig, attack_experiment
from apex_jax.synapse.features import extract_cls
from apex_jax.synapse.probes import ProbeConfig, ProbeSet, train_probes
from apex_jax.synapse.silencing import SilenceConfig, silencing_experiment


# ----------------------------------------------------------------------------- probe
def probe_run(model: Model, train: Dataset, test: Dataset, out: str | Path, *, sites: Sequence[str], config: ProbeConfig = ProbeConfig(),
              max_length: int = 64, attribution_n: int = 128, settings: dict | None = None,
              label_space: dict | None = None, progress: Progress = None) -> dict:
    """[CLS] features of train + test, one probe per site (+ all layers concatenated) and one on
    the classifier input (head.hook_cls, for the attacks); rankings and their agreement with
    activation × gradient. The probes have the data's classes (`train.n_classes`), which may be
    another task's than the model's (probing another task's features is legitimate; silence and
    attack then need probes of the model's own classes). `progress` reports feature extraction,
    probe training and the rankings (`apex_jax.progress`).

    Returns:
        summary.json's content plus "timing".
    """
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sites = list(sites)
    all_sites = sites + ([HEAD_SITE] if HEAD_SITE not in sites else [])
    n_tr = len(train)
    batch = batching.encode(model, [train, test], max_length)  # one padded width for both parts
    labels = np.concatenate([train.labels, test.labels])
    feats = extract_cls(model, model.params, batch, all_sites, progress=progress)
    t_feat = time.perf_counter() - t0
    tr_idx, te_idx = np.arange(n_tr), np.arange(n_tr, len(labels))
    C = train.n_classes  # the probes' task is the data's (it may be another task than the model's)
    layer_probes = train_probes({s: feats[s] for s in sites}, labels, tr_idx, te_idx, config, C, progress)
    head_probe = train_probes({HEAD_SITE: feats[HEAD_SITE]}, labels, tr_idx, te_idx,
                              dataclasses.replace(config, concat=False), C, progress)
    layer_probes.save(out / "probes")
    head_probe.save(out / "head_probe")
    t_train = time.perf_counter() - t0 - t_feat

    table = layer_probes.rows() + head_probe.rows()
    fileio.write_csv(out / "probes.csv", table)

    # rankings: global top neurons and their agreement with activation × gradient
    att_rows = np.arange(n_tr, min(len(labels), n_tr + attribution_n))
    att_batch = {k: v[att_rows] for k, v in batch.items()}
    rank_rows, agree_rows = [], []
    bar = tracker(len(sites) + 1, "rankings (act x grad)", "sites", progress)
    # every site's activation × gradient from one pass (one compiled kernel for all of them)
    attrs = rankings.attribution_rankings(model, model.params, att_batch, list(dict.fromkeys(sites + [HEAD_SITE])))
    for s in sites + [HEAD_SITE]:
        W = (head_probe if s == HEAD_SITE else layer_probes)[s].W
        g = rankings.global_ranking(W)
        attr = attrs[s]
        rnd = rankings.rank(np.random.default_rng(0).random(W.shape[1]))
        rank_rows.append({"site": s, "top_neurons": g.order[:20].tolist(),
                          **{f"top_neurons_class_{c}": rankings.class_ranking(W, c).order[:20].tolist() for c in range(C)},
                          "neurons_covering_50pct_mass": int(rankings.mass_cover(g, 50).sum()),
                          "neurons_covering_90pct_mass": int(rankings.mass_cover(g, 90).sum())})
        agree_rows.append({"site": s, "spearman_probe_vs_attribution": rankings.spearman(g, attr),
                           "spearman_probe_vs_random": rankings.spearman(g, rnd),
                           "top10pct_overlap_probe_attribution": float(
                               (rankings.top_k(g, 10) * rankings.top_k(attr, 10)).sum() / rankings.k_count(10, len(g.scores)))})
        bar.update()
    bar.close()
    fileio.write_csv(out / "rankings.csv", rank_rows)
    fileio.write_csv(out / "ranking_agreement.csv", agree_rows)
    plots.plot_probe_accuracy(out / "probe_accuracy.png", table)
    summary = {"kind": "probe", "settings": {**(settings or {}), "sites": sites, "n_train": n_tr,
                                              "n_test": len(test), "max_length": max_length,
                                              "probe": dataclasses.asdict(config)},
               **({"label_space": label_space} if label_space is not None else {}),
               "versions": fileio.versions(), "results": {"probes": table, "ranking_agreement": agree_rows,
                                                        "label_names": list(model.label_names)}}
    fileio.write_json(out / "summary.json", summary)
    timing = {"seconds": round(time.perf_counter() - t0, 2), "feature_seconds": round(t_feat, 2),
              "train_seconds": round(t_train, 2)}
    fileio.write_timing(out, timing)
    run_page.write_page(out)
    return {**summary, "timing": timing}


def load_probes(run: str | Path) -> tuple[ProbeSet, ProbeSet]:
    """(layer ProbeSet, head ProbeSet) of a probe run folder, with a clear error if absent."""
    run = Path(run)
    if not (run / "probes").exists():
        raise FileNotFoundError(f"{run} has no probes/; run `apex-jax probe MODEL --data DATA --out {run}` first.")
    return ProbeSet.load(run / "probes"), ProbeSet.load(run / "head_probe")


# ----------------------------------------------------------------------------- silence
def silence_run(model: Model, data: Dataset, probe_run_dir: str | Path, out: str | Path, *, sites: Sequence[str] | None = None,
                config: SilenceConfig = SilenceConfig(), max_length: int = 64,
                settings: dict | None = None, label_space: dict | None = None, **sweep_kw: Any) -> dict:
    """Silencing curves with random controls at each probed layer, class asymmetry.

    Every selection is scored by accuracy, weighted F1, the mean label margin and the mean
    KL(clean ‖ silenced); controls.csv compares each ranked selection with the random ones on
    all four. `config.attribution` / `config.mean_ablation` add the positive controls (see
    `synapse.silence`): attribution scores are computed here on the evaluation inputs (the
    label's logit, at the classifier token), the means are the evaluation inputs' mean [CLS].

    `label_space` (`dataclasses.asdict` of `check_label_space(..., "evaluate")`) is recorded in
    summary.json; with it, macro-F1 averages over the classes present in the data only
    (scikit-learn's `labels=present`), not over every class of the model.

    Returns:
        summary.json's content plus "timing" and "result" (the `SilencingResult`).
    """
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    layer_probes, _ = load_probes(probe_run_dir)
    sites = list(sites or layer_probes.sites)
    missing = [s for s in sites if s not in layer_probes.probes]
    if missing:
        raise ValueError(f"the probe run has no probes for {missing}; it has {list(layer_probes.sites)}.")
    scores = {}
    for s in sites:
        W = layer_probes[s].W
        scores[s] = (rankings.global_ranking(W).scores,
                     np.stack([rankings.class_ranking(W, c).scores for c in range(W.shape[0])]))
    batch = batching.encode(model, data, max_length)
    means = attribution = None
    if config.mode == "mean" or config.mean_ablation:
        feats = extract_cls(model, model.params, batch, sites, progress=sweep_kw.get("progress"))
        means = {s: feats[s].mean(0) for s in sites}
    if config.attribution:
        attribution = {s: r.scores for s, r in rankings.attribution_rankings(
            model, model.params, batch, sites, target=np.asarray(data.labels, np.int32)).items()}
    res = silencing_experiment(model, model.params, batch, data.labels, data.ids, scores, config,
                               means=means, attribution=attribution, **sweep_kw)
    if label_space is not None:
        present = np.asarray(label_space["present"], int)
        for m in [res.clean, *(lr.metrics for lr in res.layers)]:
            m.macro_f1 = m.class_f1[:, present].mean(1)
    fileio.write_csv(out / "silencing.csv", res.rows("grid"))
    controls = res.rows("controls")
    fileio.write_csv(out / "controls.csv", controls)
    curves = res.rows("curves")
    fileio.write_csv(out / "curves.csv", curves)
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
        fileio.write_csv(out / "asymmetry.csv", res.rows("asymmetry"))
        last = res.layers[-1].site
        plots.plot_asymmetry(out / "class_asymmetry.png", asym[last], names,
                             f"{plots.short(last)}: top {config.asymmetry_k:g}% per class")
    plots.plot_silencing_curves(out / "silencing_curves.png", res, "accuracy")
    summary = {"kind": "silence", "settings": {**(settings or {}), "sites": sites, "n": len(data),
                                                "max_length": max_length, "config": dataclasses.asdict(config)},
               **({"label_space": label_space} if label_space is not None else {}),
               "versions": fileio.versions(),
               "results": {"clean": {**res.clean.row(0), "margin": res.clean_value("margin")},
                           "layers": summary_layers,
                           "curves": curves, "asymmetry": {s: m.tolist() for s, m in asym.items()},
                           "label_names": names}}
    fileio.write_json(out / "summary.json", summary)
    timing = {"seconds": round(time.perf_counter() - t0, 2), "sweep_seconds": round(res.seconds, 2),
              "perturbed_forwards": res.perturbed_forwards,
              "forwards_per_second": round(res.perturbed_forwards / max(res.seconds, 1e-9), 1)}
    fileio.write_timing(out, timing)
    run_page.write_page(out)
    return {**summary, "timing": timing, "result": res}


# ----------------------------------------------------------------------------- attack
def attack_run(model: Model, data: Dataset, probe_run_dir: str | Path, out: str | Path, *, config: AttackConfig = AttackConfig(),
               max_length: int = 64, settings: dict | None = None, label_space: dict | None = None,
               progress: Progress = None) -> dict:
    """Logit bias, column push and bit flips toward a target class on the classifier input.
    `progress` reports the [CLS] feature extraction (`apex_jax.progress`).

    Returns:
        summary.json's content plus "timing" and "result" (the `AttackResult`).
    """
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _, head_probe = load_probes(probe_run_dir)
    W = head_probe[HEAD_SITE].W
    class_scores = np.stack([rankings.class_ranking(W, c).scores for c in range(W.shape[0])])
    batch = batching.encode(model, data, max_length)
    h = extract_cls(model, model.params, batch, [HEAD_SITE], progress=progress)[HEAD_SITE]
    res = attack_experiment(model, model.params, h, data.labels, class_scores, config)
    fileio.write_csv(out / "attacks.csv", res["rows"])
    plots.plot_attacks(out / "attack_curves.png", res["rows"])
    summary = {"kind": "attack", "settings": {**(settings or {}), "n": len(data), "max_length": max_length,
                                               "config": dataclasses.asdict(config)},
               **({"label_space": label_space} if label_space is not None else {}),
               "versions": fileio.versions(), "results": {**res, "label_names": list(model.label_names)}}
    fileio.write_json(out / "summary.json", summary)
    timing = {"seconds": round(time.perf_counter() - t0, 2)}
    fileio.write_timing(out, timing)
    run_page.write_page(out)
    return {**summary, "timing": timing, "result": res}
