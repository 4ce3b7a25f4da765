"""Claim 5, reference-protocol arm: SYNAPSE as its reference code runs it, and the verdicts.

The reference code (kikaymusic/Neuron-Level-Interpretability-and-Robustness-in-LLMs, a NeuroX
fork) trains ONE probe on every layer's [CLS] vector concatenated (raw features; NeuroX's
`train_logistic_regression_probe`: λ1 Σ|W| + λ2 ‖W‖_F with λ1 = λ2 = 1e-3, Adam lr 1e-3, 10
epochs, batch 32), ranks the neurons of that concatenation globally by Σ_c |W[c, g]| (per class
by |W[c, g]|), maps each ranked neuron g back to (layer g // d, unit g mod d) and zeroes the
top-k% at [CLS] of every layer's output at once (one variant also zeroes the last layer's units
at the pooler output), for 18 k levels from 2.5% to 95%. This module does the same
(`apex_jax.synapse.ProbeConfig.neurox`, `concat_silencing_experiment`) on multi-class tasks and
decides the claim's sub-claims with three-valued verdicts (`verdicts.Verdict`) whose rules live in
`reproduce.rules.synapse`.

Per task, two sweeps (each one engine sweep, all layers at once):
- curve: every k level; the global top-k%, each class's top-k% and 2 random k% (a rough random
  curve; the per-class selections give the class-asymmetry matrix at `asymmetry_k`);
- control: `random_k` levels; the global top-k%, the bottom-k%, the activation × gradient
  top-k% (positive control), `n_random` uniform random k% of the concatenation and `n_random`
  layer-matched random selections (the top-k%'s count in every layer, drawn within each
  layer), zeroed at every layer; the same again mean-ablated (each neuron set to its mean over
  the probe's training inputs); and the top-k% with the uniform and layer-matched draws,
  zeroed, with the pooler output too (BERT only).

Seeds: each task runs several times (per text task every fine-tune seed × every probe
initialisation seed, per image task every clean zoo member × every probe seed; `RefSettings`). The
first run (seed 0 of both) is the full protocol above and writes the task's tables; every other
run sweeps only what the verdicts decide on (`run_task(full=False)`): the curve's top-k% at every
k level with 2 random draws (the plateau and the collapse), the class selections at `asymmetry_k`
(tasks with ≥ 3 classes), and the control sweep at the k levels past the plateau with the top-k%,
the activation × gradient top-k% and the uniform and layer-matched draws, zeroed (and the pooler
variant). Every run also tests the last-block inversion (`inversion_cells`): the probe's ranking
restricted to the last block, top-k% / bottom-k% / activation × gradient top-k% / within-block
random k%, zeroed and mean-ablated, at the last block alone.

Every control cell is scored by accuracy, weighted F1, the mean true-class margin (the label's
logit minus the largest other) and the mean KL(clean ‖ silenced), each with its z and empirical
p against the uniform and (for the top-k%) the layer-matched draws. The "beats random"
verdicts decide on the margin against the layer-matched draws: a binary model's accuracy moves
only where a prediction flips, and the raw-feature ranking sits almost entirely in the last
layer, which a uniform draw over all layers mostly misses.

Reproduce: `python scripts/synapse.py` (this arm is part of claim 5; `--quick` for the smoke
sizes); outputs in `reports/synapse/reference/<task>/` and `reports/synapse/summary.json`.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from apex_jax import K_LEVELS, fileio
from apex_jax.data import encode
from apex_jax.synapse import (ALL_LAYERS, CONCAT, CONTROLS_FORMAT, ProbeConfig, SilenceConfig,
                              attribution_rankings, concat_silencing_experiment, extract_cls, global_ranking,
                              layer_counts, layerwise_spearman, plot_silencing_curves, silencing_experiment,
                              split_concat, top_k, train_probes)
from .rules.synapse import (MIN_FLIPS, Z_MIN, _f, all_verdicts, attack_verdicts, attribution_agreement,  # noqa: F401
                            beats_random, beats_random_levels, class_asymmetry, overall, plateau_collapse,
                            plateau_levels, seeded_verdicts)  # the claim's rules

# Where the reference code says what this arm does (paths in the repository named above).
CITATIONS = {
    "probe": "neurox/interpretation/linear_probe.py: l1_penalty Σ|W| (l. 30–46), l2_penalty √ΣW² (l. 48–70), "
             "_train_probe: Adam lr 1e-3, 10 epochs, batch 32, loss CE + λ1·l1 + λ2·l2 per batch (l. 74–196); "
             "utils.batch_generator: batches in data order (neurox/interpretation/utils.py l. 51–86)",
    "features": "neurox/data/extraction/transformers_extractor.py l. 267–283: [CLS] of hidden_states[1:] "
                "(every block's output, not the embeddings), raw",
    "probe_call": "Framework-…-LLMs.ipynb cell 18: train_logistic_regression_probe(X, y, lambda_l1=0.001, "
                  "lambda_l2=0.001) on all layers concatenated",
    "ranking": "notebook cell 27 get_top_k_neurons_exact: Σ_c |W[c, g]|, top round(N·p) of N = L·d; "
               "cell 39 get_top_k_neurons_for_class_exact: |W[c, g]|",
    "silencing": "notebook cells 29–31: for each layer i, units g − i·d of the global top set zeroed at "
                 "[CLS] of encoder.layer[i].output, all layers hooked at once",
    "k_levels": "notebook cells 33 and 67: percentages 0.025 … 0.95 (18 levels)",
    "pooler": "notebook cells 116–124 (GoEmotions): the last layer's units also zeroed at "
              "bert.pooler.dense's output (tanh(0) = 0: the pooler output)",
    "attacks": "notebook cell 54 test_logit_bias_majority (bias 8), cell 74 test_weight_attack_targeted_v2 "
               "(+Δ on the target's columns; its balanced line `delta[mask_other][:, cols] -= neg` writes a "
               "copy, so it has no effect), called in cells 75–76 with the target's class-specific top 25% / 20%, "
               "Δ = 0.3 / 0.2, at most 120 columns in ascending unit order (`sorted(...)[:max_cols]`), unsigned; "
               "no bit-flip code",
}

TASKS = {"vader-tweets": "binary sentiment (vader-tweets)",
         "vader-movies": "binary sentiment (vader-movies)",
         "vader-corpus": "which of the 4 VADER corpora a sentence comes from (vader-corpus: 700 sentences each, "
                         "MiniLM fine-tuned here)",
         "digits-vit": "the 10 digit classes (the zoo's first clean ViT)",
         "banking77-smollm2": "10 BANKING77 intents (the first 10 label ids; SmolLM2-135M, a 30-block Llama, "
                              "fine-tuned here; its classifier token is the last real token)"}


@dataclasses.dataclass(frozen=True)
class RefSettings:
    k_levels: tuple[float, ...] = K_LEVELS  # the reference's 18 levels (the curve sweep)
    random_k: tuple[float, ...] = (2.5, 5.0, 10.0, 20.0, 50.0, 95.0)  # the control sweep's levels
    n_random: int = 10  # random selections per control k
    asymmetry_k: float = 10.0
    n_attribution: int = 128  # eval inputs for the activation × gradient ranking (0: skip it and its control)
    mean_ablation: bool = True  # the control sweep's selections also mean-ablated (training-input means)
    l1: float = 1e-3
    l2: float = 1e-3
    seed: int = 0
    # the runs of a task: fine-tune seeds (text, `minilm.FineTuneConfig.seed`) or clean zoo members
    # (image) × probe initialisation seeds (`ProbeConfig.init_seed`); the first of each is the full run
    fine_tune_seeds: tuple[int, ...] = (0, 1, 2)
    vit_members: tuple[int, ...] = (0, 1, 2)
    probe_seeds: tuple[int, ...] = (0, 1, 2)
    # the last-block inversion test: k levels and within-block random draws (p can reach 1/21 < 0.05)
    inversion_k: tuple[float, ...] = (10.0, 20.0, 50.0)
    n_inversion_random: int = 20

    @classmethod
    def quick(cls) -> "RefSettings":
        # no mean-ablation in the control sweep (unit-tested apart; the inversion sweep still runs it):
        # the full and the lighter runs then share one compiled control kernel
        return cls(k_levels=(10.0, 50.0), random_k=(50.0,), n_random=3, n_attribution=8, mean_ablation=False,
                   fine_tune_seeds=(0,), vit_members=(0,), probe_seeds=(0, 1), inversion_k=(50.0,),
                   n_inversion_random=3)


def layer_sites(model) -> list[str]:
    """Every block's output: the reference's hidden_states[1:]."""
    return [f"blocks.{i}.hook_resid_post" for i in range(model.config.n_layers)]


def run_task(name: str, model, params: Any, train, test, evaluation, out: Path | None, rs: RefSettings,
             max_length: int = 64, progress: bool = False, probe_seed: int = 0, full: bool = True,
             cache: dict | None = None, **sweep_kw) -> dict:
    """The reference protocol on one task: concatenated NeuroX probe (train → test, initialised
    with `probe_seed`), global and per-class rankings, all-layer silencing on `evaluation`, the
    last-block inversion test; writes CSVs/figure into `out` (None: nothing written).

    Args:
        full: the full protocol (every selection at every control k, mean-ablation, the per-class
            curve); False: only what the verdicts decide on (module docstring).
        cache: a dict kept across runs on the same model and inputs: the [CLS] features, the
            encoded evaluation inputs, the activation × gradient scores and every silencing grid
            point (`apex_jax.synapse.reuse`: the seeded random draws recur across probe seeds)
            are computed once.
        sweep_kw: goes to the engine's sweeps (e.g. pad_multiple).
    """
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    cache = {} if cache is None else cache
    sites = layer_sites(model)
    C = model.config.n_classes
    labels = np.concatenate([train.labels, test.labels])
    if "features" not in cache:  # the model's [CLS] vectors: the same for every probe seed
        cache["features"] = extract_cls(model, params, encode(model, [train, test], max_length), sites)
    feats = cache["features"]
    tr, te = np.arange(len(train)), np.arange(len(train), len(labels))
    probe_cfg = dataclasses.replace(ProbeConfig.neurox(rs.l1, rs.l2), init_seed=probe_seed)
    ps = train_probes(feats, labels, tr, te, probe_cfg, C)
    W = ps[CONCAT].W
    d = model.config.d_model
    g = global_ranking(W)
    top10 = split_concat(top_k(g, 10), sites, d)
    layer_share = [float(top10[s].sum() / max(1, sum(m.sum() for m in top10.values()))) for s in sites]
    # the ranked top-k%'s neurons per layer at each control k: how much of it a layer-matched draw
    # shares by chance (a set that fills its layers leaves the layer-matched control nothing to vary)
    ctrl_levels = rs.random_k if full else (beats_random_levels(rs.random_k) or rs.random_k)
    profile = {f"{k:g}": layer_counts(top_k(g, k), len(sites)).tolist() for k in ctrl_levels}

    if "evaluation" not in cache:
        cache["evaluation"] = encode(model, evaluation, max_length)
    ev = cache["evaluation"]
    y = np.asarray(evaluation.labels)
    ids = np.asarray(evaluation.ids)
    # activation × gradient over every layer's [CLS], concatenated like the probe's features: the
    # agreement (over the concatenation and per layer) and the control sweep's positive control
    rho, rho_layers, attribution = math.nan, [], None
    if rs.n_attribution > 0:  # 0 skips it
        if "attribution" not in cache:  # depends on the model, not on the probe
            att_batch = {k: v[: rs.n_attribution] for k, v in ev.items()}
            per_site = attribution_rankings(model, params, att_batch, sites)  # one pass for every layer
            cache["attribution"] = {s: per_site[s].scores for s in sites}
        attribution = cache["attribution"]
        agree = layerwise_spearman(g, np.concatenate([attribution[s] for s in sites]), len(sites))
        rho, rho_layers = agree["concat"], agree["layers"]
    means = {s: feats[s][tr].mean(0) for s in sites}  # mean-ablation: the probe's training inputs

    asym_k = rs.asymmetry_k if rs.asymmetry_k in rs.k_levels else rs.k_levels[0]
    # the per-class curve in the full run; elsewhere the class selections at asym_k alone (below)
    curve_cfg = SilenceConfig(k_levels=rs.k_levels, n_random=2, bottom=False, per_class=C > 2 and full,
                              asymmetry_k=asym_k, seed=rs.seed)
    # grid points this model already ran for another probe seed (the seeded random draws, the
    # attribution top-k%) are reused, not rerun: the same masks on the same model and inputs
    reuse = cache.setdefault("grid_points", {})
    curve = concat_silencing_experiment(model, params, ev, y, ids, W, sites, curve_cfg, pooler=False,
                                        progress=progress, reuse=reuse, **sweep_kw)
    ctrl_cfg = SilenceConfig(k_levels=ctrl_levels, n_random=rs.n_random, bottom=full, per_class=False,
                             attribution=attribution is not None, mean_ablation=rs.mean_ablation and full,
                             layer_matched=True, seed=rs.seed + 1)
    pooler = "head.hook_cls" in model.sites and bool(getattr(model.config, "has_pooler", False))
    ctrl = concat_silencing_experiment(model, params, ev, y, ids, W, sites, ctrl_cfg, pooler=pooler, means=means,
                                       attribution=attribution, progress=progress, reuse=reuse, **sweep_kw)
    cells = control_cells(ctrl)
    if not full:  # the plateau's margin cells (top-k%, zeroed, k ≤ 10%) from the curve sweep
        cells = [c for c in control_cells(curve) if c["selection"] == "top"
                 and float(c["k_percent"]) in plateau_levels([c["k_percent"]])] + cells
    controls = control_table(cells)
    inversion = inversion_cells(model, params, ev, y, ids, W, sites, rs, means, attribution, **sweep_kw)
    forwards, seconds = curve.perturbed_forwards + ctrl.perturbed_forwards, curve.seconds + ctrl.seconds
    clean = curve.clean.row(0)
    acc = curve.layers[0].metrics.accuracy
    kinds = curve.layers[0].selections
    ranked = [{"k_percent": k,
               "top_drop": clean["accuracy"] - float(np.mean([acc[i] for i, s in enumerate(kinds)
                                                               if s.kind == "top" and s.k == k])),
               "random_drop": clean["accuracy"] - float(np.mean([acc[i] for i, s in enumerate(kinds)
                                                                  if s.kind == "random" and s.k == k]))}
              for k in rs.k_levels]
    asym = None
    if C > 2 and full:
        asym = curve.asymmetry(ALL_LAYERS)
    elif C > 2:  # the class selections at asym_k alone: the asymmetry matrix without the per-class curve
        asym_cfg = SilenceConfig(k_levels=(asym_k,), n_random=2, bottom=False, per_class=True, asymmetry_k=asym_k,
                                 seed=rs.seed)
        ares = concat_silencing_experiment(model, params, ev, y, ids, W, sites, asym_cfg, pooler=False,
                                           progress=progress, reuse=reuse, **sweep_kw)
        asym = ares.asymmetry(ALL_LAYERS)
        forwards, seconds = forwards + ares.perturbed_forwards, seconds + ares.seconds
    forwards, seconds = forwards + inversion["perturbed_forwards"], seconds + inversion["seconds"]
    if out is not None:
        fileio.write_csv(out / "controls.csv", controls)
        fileio.write_csv(out / "control_cells.csv", cells)
        fileio.write_csv(out / "inversion_cells.csv", inversion["cells"])
        fileio.write_csv(out / "curve.csv", ranked)
        fileio.write_csv(out / "silencing.csv", curve.table() + ctrl.table())
        if asym is not None:
            fileio.write_csv(out / "asymmetry.csv", [{"silenced_class": i, **{f"f1_drop_class_{j}": asym[i, j]
                                                                            for j in range(C)}} for i in range(C)])
        plot_silencing_curves(out / "silencing_curves.png", curve, "accuracy")
    n = len(y)
    support = np.bincount(y, minlength=C)
    return {
        "task": name, "n_classes": C, "label_names": list(model.label_names), "sites": sites,
        "n_neurons": len(sites) * d,
        "n_probe_train": len(train), "n_probe_test": len(test), "n_eval": n,
        "probe_accuracy": ps[CONCAT].metrics.accuracy,
        "layer_probe_accuracy": [ps[s].metrics.accuracy for s in sites],
        "top10_layer_share": layer_share, "top_layer_counts": profile, "layer_width": d,
        "spearman_attribution": rho, "spearman_attribution_layers": rho_layers,
        "clean": clean, "chance": float(support.max() / n), "min_class_support": int(support.min()),
        "min_detectable_drop": MIN_FLIPS / n, "curve": ranked, "controls": controls, "control_cells": cells,
        "controls_format": CONTROLS_FORMAT, "n_random": rs.n_random, "pooler": pooler,
        "asymmetry": asym.tolist() if asym is not None else None,
        "probe_seed": probe_seed, "full": full, "inversion": inversion["cells"],
        "inversion_forwards": inversion["perturbed_forwards"], "inversion_seconds": round(inversion["seconds"], 1),
        "perturbed_forwards": forwards, "sweep_seconds": round(seconds, 1),
    }


INVERSION_KEYS = ("site", "selection", "ablation", "k_percent", "score", "clean", "value", "drop", "random_mean",
                  "random_std", "z", "p", "draws")


def inversion_cells(model, params: Any, batch: dict, labels: np.ndarray, ids: np.ndarray, W: np.ndarray,
                    sites: list[str], rs: RefSettings, means: dict, attribution: dict | None, **sweep_kw) -> dict:
    """The last-block inversion test (`rules.synapse.last_block_inversion`): the concatenated
    probe's global ranking restricted to the last block's units (Σ_c |W[c, g]| over its slice),
    its top-k% and bottom-k%, the block's activation × gradient top-k% and `n_inversion_random`
    random k% of the block (layer-matched by construction), zeroed and mean-ablated at the last
    block's [CLS] alone (the blocks before it run once: prefix caching), at `rs.inversion_k`.

    Returns:
        {"cells": per (selection, ablation, k, score ∈ margin / KL) the drop against the random
        draws of its ablation (`SilencingResult.controls`), "perturbed_forwards", "seconds"}.
    """
    last = sites[-1]
    d = model.config.d_model
    scores = {last: (global_ranking(W).scores[-d:], None)}
    cfg = SilenceConfig(k_levels=rs.inversion_k, n_random=rs.n_inversion_random, bottom=True, per_class=False,
                        attribution=attribution is not None, mean_ablation=True, seed=rs.seed + 2)
    res = silencing_experiment(model, params, batch, labels, ids, scores, cfg, means={last: means[last]},
                               attribution=None if attribution is None else {last: attribution[last]}, **sweep_kw)
    return {"cells": [{k: r[k] for k in INVERSION_KEYS} for score in ("margin", "kl") for r in res.controls(score)],
            "perturbed_forwards": res.perturbed_forwards, "seconds": res.seconds}


CELL_KEYS = ("site", "selection", "ablation", "k_percent", "score", "clean", "value", "drop", "random_mean",
             "random_std", "z", "p", "draws", "layer_random_mean", "layer_random_std", "layer_z", "layer_p",
             "layer_draws")
SCORES = ("accuracy", "weighted_f1", "margin", "kl")


def control_cells(res) -> list[dict]:
    """Every ranked selection of the control sweep (top, bottom, attribution; zeroed and
    mean-ablated; each variant) on every score against the uniform and layer-matched draws:
    control_cells.csv's rows."""
    return [{k: r[k] for k in CELL_KEYS} for score in SCORES for r in res.controls(score)]


def control_table(cells: list[dict]) -> list[dict]:
    """controls.csv: one row per (variant, k) of the zeroed global top-k% — the accuracy columns
    it always had, then the layer-matched accuracy comparison and the margin and KL comparisons
    (`margin_*`, `kl_*`), so that earlier readers keep their columns."""
    top = {(c["site"], c["k_percent"], c["score"]): c for c in cells
           if c["selection"] == "top" and c["ablation"] == "zero"}
    rows = []
    for (site, k, score), c in top.items():
        if score != "accuracy":
            continue
        row = {x: c[x] for x in ("site", "k_percent", "clean", "drop", "random_mean", "random_std", "z", "p")}
        row.update({x: c[x] for x in ("layer_random_mean", "layer_z", "layer_p")})
        for sc in ("margin", "kl"):
            m = top[(site, k, sc)]
            row.update({f"{sc}_{x}": m[x] for x in ("clean", "drop", "random_mean", "z", "p", "layer_random_mean",
                                                    "layer_z", "layer_p")})
        rows.append(row)
    return rows
