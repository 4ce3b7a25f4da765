"""The three SYNAPSE runs behind the CLI: probe, silence, attack. Each reads a model and a data
set, writes CSV tables, summary.json (deterministic: settings and results, no timings) and
timing.json, and PNG plots into its run folder, and returns the summary.

    probe   RUN/probes/ (orbax), probes.csv, rankings.csv, ranking_agreement.csv, probe_accuracy.png
    silence RUN2/silencing.csv, controls.csv, curves.csv, asymmetry.csv, silencing_curves.png,
            class_asymmetry.png
    attack  RUN3/attacks.csv, attack_curves.png
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from apex_jax.methods import probes as probes_lib
from apex_jax.methods import rankings, synapse
from apex_jax.methods import synapse_outputs as out_lib
from apex_jax.methods.outputs import versions as _versions

HEAD_SITE = "head.hook_cls"


def _encode(model, data, max_length: int) -> dict:
    if data.kind == "text":
        return model.encode(list(data.inputs), max_length=max_length)
    return model.encode(data.inputs)


def layer_sites(model, spec: str = "all") -> list[str]:
    """`all` = hook_embed and every block's hook_resid_post; `blocks` = the blocks only; or a
    comma-separated list of layer numbers (e.g. `0,3,5`) or site names."""
    n = model.config.n_layers
    blocks = [f"blocks.{i}.hook_resid_post" for i in range(n)]
    if spec == "all":
        return ["hook_embed", *blocks]
    if spec == "blocks":
        return blocks
    out = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part.isdigit():
            if not 0 <= int(part) < n:
                raise ValueError(f"layer {part} is outside 0-{n - 1}.")
            out.append(blocks[int(part)])
        elif part in model.sites:
            out.append(part)
        else:
            raise ValueError(f"unknown layer or site {part!r}; use all, blocks, layer numbers 0-{n - 1} "
                             "or site names from `apex-jax sites MODEL`.")
    if not out:
        raise ValueError(f"no layers in {spec!r}.")
    return out


# ----------------------------------------------------------------------------- probe
def probe_run(model, train, test, out: Path, *, sites: Sequence[str], config=probes_lib.ProbeConfig(),
              max_length: int = 64, attribution_n: int = 128, settings: dict | None = None) -> dict:
    """[CLS] features of train + test, one probe per site (+ all layers concatenated) and one on
    the classifier input (head.hook_cls, for the attacks); rankings and their agreement with
    activation × gradient."""
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    sites = list(sites)
    all_sites = sites + ([HEAD_SITE] if HEAD_SITE not in sites else [])
    n_tr = len(train)
    if train.kind == "text":  # one encode call: one padded width for both parts
        batch = model.encode(list(train.inputs) + list(test.inputs), max_length=max_length)
    else:
        batch = model.encode(np.concatenate([train.inputs, test.inputs]))
    labels = np.concatenate([train.labels, test.labels])
    feats = probes_lib.extract_cls(model, model.params, batch, all_sites)
    t_feat = time.perf_counter() - t0
    tr_idx, te_idx = np.arange(n_tr), np.arange(n_tr, len(labels))
    C = model.config.n_classes
    layer_probes = probes_lib.train_probes({s: feats[s] for s in sites}, labels, tr_idx, te_idx, config, C)
    head_probe = probes_lib.train_probes({HEAD_SITE: feats[HEAD_SITE]}, labels, tr_idx, te_idx,
                                         dataclasses.replace(config, concat=False), C)
    layer_probes.save(out / "probes")
    head_probe.save(out / "head_probe")
    t_train = time.perf_counter() - t0 - t_feat

    table = []
    for name, p in [*layer_probes.probes.items(), *head_probe.probes.items()]:
        m = p.metrics
        table.append({"site": name, "test_accuracy": m.accuracy, "test_macro_f1": m.macro_f1,
                      "test_weighted_f1": m.weighted_f1, "train_accuracy": m.train_accuracy,
                      **{f"test_f1_class_{c}": v for c, v in enumerate(m.per_class_f1)},
                      "nonzero_weights": int((np.abs(p.W) > 1e-4).sum()), "width": int(p.W.shape[1])})
    out_lib.write_csv(out / "probes.csv", table)

    # rankings: global top neurons and their agreement with activation × gradient
    att_rows = np.arange(n_tr, min(len(labels), n_tr + attribution_n))
    att_batch = {k: v[att_rows] for k, v in batch.items()}
    rank_rows, agree_rows = [], []
    for s in sites + [HEAD_SITE]:
        W = (head_probe if s == HEAD_SITE else layer_probes)[s].W
        g = rankings.global_ranking(W)
        attr = rankings.attribution_ranking(model, model.params, att_batch, s)
        rnd = rankings.rank(np.random.default_rng(0).random(W.shape[1]))
        rank_rows.append({"site": s, "top_neurons": g.order[:20].tolist(),
                          **{f"top_neurons_class_{c}": rankings.class_ranking(W, c).order[:20].tolist() for c in range(C)},
                          "neurons_covering_50pct_mass": int(rankings.mass_cover(g, 50).sum()),
                          "neurons_covering_90pct_mass": int(rankings.mass_cover(g, 90).sum())})
        agree_rows.append({"site": s, "spearman_probe_vs_attribution": rankings.spearman(g, attr),
                           "spearman_probe_vs_random": rankings.spearman(g, rnd),
                           "top10pct_overlap_probe_attribution": float(
                               (rankings.top_k(g, 10) * rankings.top_k(attr, 10)).sum() / rankings.k_count(10, len(g.scores)))})
    out_lib.write_csv(out / "rankings.csv", rank_rows)
    out_lib.write_csv(out / "ranking_agreement.csv", agree_rows)
    out_lib.plot_probe_accuracy(out / "probe_accuracy.png", table)
    summary = {"kind": "probe", "settings": {**(settings or {}), "sites": sites, "n_train": n_tr,
                                              "n_test": len(test), "probe": dataclasses.asdict(config)},
               "versions": _versions(), "results": {"probes": table, "ranking_agreement": agree_rows,
                                                     "label_names": list(model.label_names)}}
    out_lib.write_json(out / "summary.json", summary)
    timing = {"seconds": round(time.perf_counter() - t0, 2), "feature_seconds": round(t_feat, 2),
              "train_seconds": round(t_train, 2)}
    (out / "timing.json").write_text(json.dumps(timing, indent=2))
    return {**summary, "timing": timing}


def load_probes(run: Path):
    """(layer ProbeSet, head ProbeSet) of a probe run folder, with a clear error if absent."""
    run = Path(run)
    if not (run / "probes").exists():
        raise FileNotFoundError(f"{run} has no probes/; run `apex-jax probe MODEL --data DATA --out {run}` first.")
    return probes_lib.ProbeSet.load(run / "probes"), probes_lib.ProbeSet.load(run / "head_probe")


# ----------------------------------------------------------------------------- silence
def silence_run(model, data, probe_run_dir: Path, out: Path, *, sites: Sequence[str] | None = None,
                config: synapse.SilenceConfig = synapse.SilenceConfig(), max_length: int = 64,
                settings: dict | None = None, **sweep_kw) -> dict:
    """Silencing curves with random controls at each probed layer, class asymmetry."""
    t0 = time.perf_counter()
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
    batch = _encode(model, data, max_length)
    means = None
    if config.mode == "mean":
        feats = probes_lib.extract_cls(model, model.params, batch, sites)
        means = {s: feats[s].mean(0) for s in sites}
    res = synapse.silencing_experiment(model, model.params, batch, data.labels, data.ids, scores, config,
                                       means=means, **sweep_kw)
    out_lib.write_csv(out / "silencing.csv", res.table())
    controls = res.controls("accuracy") + res.controls("weighted_f1")
    out_lib.write_csv(out / "controls.csv", controls)
    curves = res.curves("accuracy") + res.curves("weighted_f1")
    out_lib.write_csv(out / "curves.csv", curves)
    names = list(model.label_names)
    summary_layers = []
    for lr in res.layers:
        top = [c for c in controls if c["site"] == lr.site and c["selection"] == "top" and c["score"] == "accuracy"]
        summary_layers.append({"site": lr.site, "top_k": [{k: c[k] for k in ("k_percent", "drop", "z", "p", "random_mean")}
                                                          for c in top]})
    asym = {}
    if config.per_class:
        for lr in res.layers:
            m = res.asymmetry(lr.site)
            asym[lr.site] = m
        out_lib.write_csv(out / "asymmetry.csv", [
            {"site": s, "silenced_class": i, **{f"f1_drop_class_{j}": m[i, j] for j in range(len(m))}}
            for s, m in asym.items() for i in range(len(m))])
        last = res.layers[-1].site
        out_lib.plot_asymmetry(out / "class_asymmetry.png", asym[last], names,
                               f"{out_lib.short(last)}: top {config.asymmetry_k:g}% per class")
    out_lib.plot_silencing_curves(out / "silencing_curves.png", res, "accuracy")
    summary = {"kind": "silence", "settings": {**(settings or {}), "sites": sites, "n": len(data),
                                                "config": dataclasses.asdict(config)},
               "versions": _versions(),
               "results": {"clean": res.clean.row(0), "layers": summary_layers,
                           "curves": curves, "asymmetry": {s: m.tolist() for s, m in asym.items()},
                           "label_names": names}}
    out_lib.write_json(out / "summary.json", summary)
    timing = {"seconds": round(time.perf_counter() - t0, 2), "sweep_seconds": round(res.seconds, 2),
              "perturbed_forwards": res.perturbed_forwards,
              "forwards_per_second": round(res.perturbed_forwards / max(res.seconds, 1e-9), 1)}
    (out / "timing.json").write_text(json.dumps(timing, indent=2))
    return {**summary, "timing": timing, "result": res}


# ----------------------------------------------------------------------------- attack
def attack_run(model, data, probe_run_dir: Path, out: Path, *, config: synapse.AttackConfig = synapse.AttackConfig(),
               max_length: int = 64, settings: dict | None = None) -> dict:
    """Logit bias, column push and bit flips toward a target class on the classifier input."""
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    _, head_probe = load_probes(probe_run_dir)
    W = head_probe[HEAD_SITE].W
    class_scores = np.stack([rankings.class_ranking(W, c).scores for c in range(W.shape[0])])
    batch = _encode(model, data, max_length)
    h = probes_lib.extract_cls(model, model.params, batch, [HEAD_SITE])[HEAD_SITE]
    res = synapse.attack_experiment(model, model.params, h, data.labels, class_scores, config)
    out_lib.write_csv(out / "attacks.csv", res["rows"])
    out_lib.plot_attacks(out / "attack_curves.png", res["rows"])
    summary = {"kind": "attack", "settings": {**(settings or {}), "n": len(data), "config": dataclasses.asdict(config)},
               "versions": _versions(), "results": {**res, "label_names": list(model.label_names)}}
    out_lib.write_json(out / "summary.json", summary)
    (out / "timing.json").write_text(json.dumps({"seconds": round(time.perf_counter() - t0, 2)}, indent=2))
    return summary
