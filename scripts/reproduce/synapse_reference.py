"""Claim 5, reference-protocol arm: SYNAPSE as its reference code runs it, and the verdicts.

The reference code (kikaymusic/Neuron-Level-Interpretability-and-Robustness-in-LLMs, a NeuroX
fork) trains ONE probe on every layer's [CLS] vector concatenated (raw features; NeuroX's
`train_logistic_regression_probe`: λ1 Σ|W| + λ2 ‖W‖_F with λ1 = λ2 = 1e-3, Adam lr 1e-3, 10
epochs, batch 32), ranks the neurons of that concatenation globally by Σ_c |W[c, g]| (per class
by |W[c, g]|), maps each ranked neuron g back to (layer g // d, unit g mod d) and zeroes the
top-k% at [CLS] of every layer's output at once (one variant also zeroes the last layer's units
at the pooler output), for 18 k levels from 2.5% to 95%. This module does the same
(`apex_jax.synapse.ProbeConfig.neurox`, `concat_silencing_experiment`) on multi-class tasks and
decides the claim's sub-claims with three-valued verdicts (`verdicts.Verdict`) whose rules are
written below, before any number.

Per task, two sweeps (each one engine sweep, all layers at once):
- curve: every k level; the global top-k%, each class's top-k% and 2 random k% (a rough random
  curve; the per-class selections give the class-asymmetry matrix at `asymmetry_k`);
- control: `random_k` levels; the global top-k%, the bottom-k%, the activation × gradient
  top-k% (positive control), `n_random` uniform random k% of the concatenation and `n_random`
  layer-matched random selections (the top-k%'s count in every layer, drawn within each
  layer), zeroed at every layer; the same again mean-ablated (each neuron set to its mean over
  the probe's training inputs); and the top-k% with the uniform and layer-matched draws,
  zeroed, with the pooler output too (BERT only).

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
from apex_jax.synapse import (ALL_LAYERS, ALL_LAYERS_POOLER, CONCAT, CONTROLS_FORMAT, ProbeConfig, SilenceConfig,
                              attribution_rankings, concat_silencing_experiment, extract_cls, global_ranking,
                              layerwise_spearman, plot_silencing_curves, split_concat, top_k, train_probes)
from .reporting import num
from .verdicts import Verdict, combine

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

Z_MIN = 3.0  # a ranked drop "beats random" at z >= 3 …
MIN_FLIPS = 5  # … and by at least 5 inputs (one-sided sign test of 5 one-way flips: p = 0.031)
TASKS = {"vader-tweets": "binary sentiment (vader-tweets)",
         "vader-movies": "binary sentiment (vader-movies)",
         "vader-corpus": "which of the 4 VADER corpora a sentence comes from (vader-corpus: 700 sentences each, "
                         "MiniLM fine-tuned here)",
         "digits-vit": "the 10 digit classes (the zoo's first clean ViT)"}
PAPER_Z = "random-control z ≈ 17–30"
PAPER_RHO = "Spearman(probe, attribution) 0.46–0.70"
RHO_LOW = 0.46


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

    @classmethod
    def quick(cls) -> "RefSettings":
        return cls(k_levels=(10.0, 50.0), random_k=(50.0,), n_random=3, n_attribution=8)


def layer_sites(model) -> list[str]:
    """Every block's output: the reference's hidden_states[1:]."""
    return [f"blocks.{i}.hook_resid_post" for i in range(model.config.n_layers)]


def run_task(name: str, model, params: Any, train, test, evaluation, out: Path, rs: RefSettings,
             max_length: int = 64, progress: bool = False, **sweep_kw) -> dict:
    """The reference protocol on one task: concatenated NeuroX probe (train → test), global and
    per-class rankings, all-layer silencing on `evaluation`; writes CSVs/figure into `out`.
    `sweep_kw` goes to the engine's sweeps (e.g. pad_multiple)."""
    out.mkdir(parents=True, exist_ok=True)
    sites = layer_sites(model)
    C = model.config.n_classes
    batch = encode(model, [train, test], max_length)
    labels = np.concatenate([train.labels, test.labels])
    feats = extract_cls(model, params, batch, sites)
    tr, te = np.arange(len(train)), np.arange(len(train), len(labels))
    ps = train_probes(feats, labels, tr, te, ProbeConfig.neurox(rs.l1, rs.l2), C)
    W = ps[CONCAT].W
    d = model.config.d_model
    g = global_ranking(W)
    top10 = split_concat(top_k(g, 10), sites, d)
    layer_share = [float(top10[s].sum() / max(1, sum(m.sum() for m in top10.values()))) for s in sites]

    ev = encode(model, evaluation, max_length)
    y = np.asarray(evaluation.labels)
    ids = np.asarray(evaluation.ids)
    # activation × gradient over every layer's [CLS], concatenated like the probe's features: the
    # agreement (over the concatenation and per layer) and the control sweep's positive control
    rho, rho_layers, attribution = math.nan, [], None
    if rs.n_attribution > 0:  # 0 skips it
        att_batch = {k: v[: rs.n_attribution] for k, v in ev.items()}
        per_site = attribution_rankings(model, params, att_batch, sites)  # one pass for every layer
        attribution = {s: per_site[s].scores for s in sites}
        agree = layerwise_spearman(g, np.concatenate([attribution[s] for s in sites]), len(sites))
        rho, rho_layers = agree["concat"], agree["layers"]
    means = {s: feats[s][tr].mean(0) for s in sites}  # mean-ablation: the probe's training inputs

    curve_cfg = SilenceConfig(k_levels=rs.k_levels, n_random=2, bottom=False, per_class=C > 2,
                                asymmetry_k=rs.asymmetry_k if rs.asymmetry_k in rs.k_levels else rs.k_levels[0],
                                seed=rs.seed)
    curve = concat_silencing_experiment(model, params, ev, y, ids, W, sites, curve_cfg, pooler=False,
                                          progress=progress, **sweep_kw)
    ctrl_cfg = SilenceConfig(k_levels=rs.random_k, n_random=rs.n_random, bottom=True, per_class=False,
                             attribution=attribution is not None, mean_ablation=rs.mean_ablation, layer_matched=True,
                             seed=rs.seed + 1)
    pooler = "head.hook_cls" in model.sites and bool(getattr(model.config, "has_pooler", False))
    ctrl = concat_silencing_experiment(model, params, ev, y, ids, W, sites, ctrl_cfg, pooler=pooler, means=means,
                                       attribution=attribution, progress=progress, **sweep_kw)
    cells = control_cells(ctrl)
    controls = control_table(cells)
    clean = curve.clean.row(0)
    acc = curve.layers[0].metrics.accuracy
    kinds = curve.layers[0].selections
    ranked = [{"k_percent": k,
               "top_drop": clean["accuracy"] - float(np.mean([acc[i] for i, s in enumerate(kinds)
                                                               if s.kind == "top" and s.k == k])),
               "random_drop": clean["accuracy"] - float(np.mean([acc[i] for i, s in enumerate(kinds)
                                                                  if s.kind == "random" and s.k == k]))}
              for k in rs.k_levels]
    asym = curve.asymmetry(ALL_LAYERS) if C > 2 else None
    fileio.write_csv(out / "controls.csv", controls)
    fileio.write_csv(out / "control_cells.csv", cells)
    fileio.write_csv(out / "curve.csv", ranked)
    fileio.write_csv(out / "silencing.csv", curve.table() + ctrl.table())
    if asym is not None:
        fileio.write_csv(out / "asymmetry.csv", [{"silenced_class": i, **{f"f1_drop_class_{j}": asym[i, j] for j in range(C)}}
                                             for i in range(C)])
    plot_silencing_curves(out / "silencing_curves.png", curve, "accuracy")
    n = len(y)
    support = np.bincount(y, minlength=C)
    return {
        "task": name, "n_classes": C, "label_names": list(model.label_names), "sites": sites,
        "n_neurons": len(sites) * d,
        "n_probe_train": len(train), "n_probe_test": len(test), "n_eval": n,
        "probe_accuracy": ps[CONCAT].metrics.accuracy,
        "layer_probe_accuracy": [ps[s].metrics.accuracy for s in sites],
        "top10_layer_share": layer_share,
        "spearman_attribution": rho, "spearman_attribution_layers": rho_layers,
        "clean": clean, "chance": float(support.max() / n), "min_class_support": int(support.min()),
        "min_detectable_drop": MIN_FLIPS / n, "curve": ranked, "controls": controls, "control_cells": cells,
        "controls_format": CONTROLS_FORMAT, "n_random": rs.n_random, "pooler": pooler,
        "asymmetry": asym.tolist() if asym is not None else None,
        "perturbed_forwards": curve.perturbed_forwards + ctrl.perturbed_forwards,
        "sweep_seconds": round(curve.seconds + ctrl.seconds, 1),
    }


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


# ------------------------------------------------------------------------------ verdict rules
def _f(x) -> float:
    """A JSON number back to float ("inf"/"-inf"/"nan" strings included)."""
    return float(x) if x is not None else math.nan


def _overall(outcomes: list[str]) -> str:
    """Over tasks: reproduced if every task reproduces, not reproduced if any task does not,
    else inconclusive."""
    if outcomes and all(o == "reproduced" for o in outcomes):
        return "reproduced"
    if any(o == "not reproduced" for o in outcomes):
        return "not reproduced"
    return "inconclusive"


def beats_random(tasks: dict, variant: str = ALL_LAYERS) -> Verdict:
    """Ranked vs random silencing, all layers at once, decided on the mean true-class margin
    against the layer-matched random draws (`_beats_random_margin`); a summary written before
    those existed (no "control_cells") is judged by the earlier accuracy rule
    (`_beats_random_accuracy`)."""
    if tasks and all("control_cells" in t for t in tasks.values()):
        return _beats_random_margin(tasks, variant)
    return _beats_random_accuracy(tasks, variant)


def _cells(t: dict, variant: str, selection: str, ablation: str, score: str) -> list[dict]:
    return [c for c in t["control_cells"] if c["site"] == variant and c["selection"] == selection
            and c["ablation"] == ablation and c["score"] == score]


def _beats_all(c: dict, prefix: str = "") -> bool:
    """The ranked drop is above every random draw (p at its floor 1/(R + 1)) and z >= Z_MIN (a
    null z with p at its floor is +inf: draws without spread, all below; JSON writes inf as null)."""
    draws, p, z = c.get(f"{prefix}draws"), c.get(f"{prefix}p"), c.get(f"{prefix}z")
    if draws is None or p is None:
        return False
    floor = _f(p) <= 1 / (1 + draws) + 1e-12
    return floor and (z is None or _f(z) >= Z_MIN)


def _zs(cells: list[dict], key: str) -> str:
    zs = [_f(c[key]) for c in cells if c.get(key) is not None]
    return f"{num(min(zs), 1)}…{num(max(zs), 1)}" if zs else "n/a"


def _beats_random_margin(tasks: dict, variant: str) -> Verdict:
    """Per task and control k: the zeroed global top-k% *beats random* when its drop in the mean
    true-class margin (label logit − largest other) exceeds every layer-matched random draw's
    (same count per layer, drawn within each layer: p = 1/(R + 1)) and z >= 3 against them.
    Power: the positive control, the activation × gradient top-k% zeroed (every layer at once),
    must beat the uniform random draws the same way at some k, else the test shows no power and
    the task is inconclusive (a summary without attribution is judged without it, and says so).
    Per task: reproduced when at least half the k levels beat random, else not reproduced; over
    tasks: `_overall`. Reported beside, not deciding: the uniform control, accuracy, KL,
    bottom-k% and the mean-ablated top-k% against the mean-ablated layer-matched draws."""
    outs, ev, power = [], [], []
    for name, t in tasks.items():
        cells = _cells(t, variant, "top", "zero", "margin")
        if not cells:
            continue
        wins = [c for c in cells if _beats_all(c, "layer_")]
        uniform = [c for c in cells if _beats_all(c)]
        pos = _cells(t, ALL_LAYERS, "attribution", "zero", "margin")
        pos_wins = [c for c in pos if _beats_all(c)]
        o = ("inconclusive" if pos and not pos_wins else
             "reproduced" if len(wins) >= len(cells) / 2 else "not reproduced")
        outs.append(o)
        acc = _cells(t, variant, "top", "zero", "accuracy")
        kl = _cells(t, variant, "top", "zero", "kl")
        bottom = {c["k_percent"]: c for c in _cells(t, variant, "bottom", "zero", "margin")}
        mean = _cells(t, variant, "top", "mean", "margin")
        n = len(cells)
        parts = [f"margin: {len(wins)}/{n} k levels beat the layer-matched draws (z {_zs(cells, 'layer_z')}), "
                 f"{len(uniform)}/{n} the uniform ones (z {_zs(cells, 'z')})",
                 f"ranked / layer-matched / uniform margin drop at k = {cells[-1]['k_percent']:g}%: "
                 f"{num(_f(cells[-1]['drop']), 2)} / {num(_f(cells[-1]['layer_random_mean']), 2)} / "
                 f"{num(_f(cells[-1]['random_mean']), 2)}"]
        if bottom:
            parts.append(f"top > bottom margin drop at {sum(_f(c['drop']) > _f(bottom[c['k_percent']]['drop']) for c in cells if c['k_percent'] in bottom)}/{n} k")
        if mean:
            parts.append(f"mean-ablated: {sum(_beats_all(c, 'layer_') for c in mean)}/{len(mean)} beat the "
                         "mean-ablated layer-matched draws")
        parts.append(f"KL z {_zs(kl, 'z')} (layer-matched {_zs(kl, 'layer_z')}); accuracy: "
                     f"{sum(_f(c['z']) >= Z_MIN and _f(c['drop']) - _f(c['random_mean']) >= t['min_detectable_drop'] - 1e-12 for c in acc)}/{len(acc)} "
                     "by the earlier accuracy rule")
        ev.append(f"{name}: " + "; ".join(parts) + f" ({o})")
        power.append(f"{name}: positive control (activation × gradient top-k%) beats uniform random at "
                     + (f"{len(pos_wins)}/{len(pos)} k" if pos else "— (not run)"))
    what = "the pooler output too" if variant == ALL_LAYERS_POOLER else "every layer at once"
    floor = ", ".join(sorted({f"1/{t['n_random'] + 1}" for t in tasks.values() if "n_random" in t})) or "1/(R+1)"
    return Verdict(
        claim=f"zeroing the probe's global top-k% [CLS] neurons ({what}) lowers the true-class margin more than "
              "random k% with the same count per layer",
        outcome=_overall(outs),
        rule=f"per task, a k level beats random when the ranked drop in the mean true-class margin exceeds every "
             f"layer-matched random draw's (p at its floor {floor}) with z ≥ {Z_MIN:g} against them; reproduced if at "
             "least half the k levels do in every task; inconclusive where the positive control (activation × "
             "gradient top-k%, zeroed) beats uniform random at no k",
        power="; ".join(power) or "no task",
        evidence="; ".join(ev) or "no task", source="reference code" if variant == ALL_LAYERS_POOLER else "paper",
        paper=PAPER_Z)


def _beats_random_accuracy(tasks: dict, variant: str = ALL_LAYERS) -> Verdict:
    """The earlier rule (summaries without "control_cells"): per task and control k level, a
    cell *beats random* when z >= 3 and the ranked accuracy drop exceeds the uniform random mean
    by >= 5 inputs' worth; a cell has *power* when the ranked or the mean random drop reaches 5
    inputs. Per task: inconclusive without a powered cell, reproduced when at least half the
    cells beat random, else not reproduced; over tasks: `_overall`."""
    outs, ev = [], []
    for name, t in tasks.items():
        cells = [c for c in t["controls"] if c["site"] == variant]
        if not cells:
            continue
        dmin = t["min_detectable_drop"]
        powered = [c for c in cells if max(_f(c["drop"]), _f(c["random_mean"])) >= dmin - 1e-12]
        wins = [c for c in cells if _f(c["z"]) >= Z_MIN and _f(c["drop"]) - _f(c["random_mean"]) >= dmin - 1e-12]
        o = "inconclusive" if not powered else "reproduced" if len(wins) >= len(cells) / 2 else "not reproduced"
        outs.append(o)
        zs = [_f(c["z"]) for c in cells]
        ev.append(f"{name}: {len(wins)}/{len(cells)} k levels beat random, z {num(min(zs), 1)}…{num(max(zs), 1)}, "
                  f"largest ranked / random drop {num(max(_f(c['drop']) for c in cells))} / "
                  f"{num(max(_f(c['random_mean']) for c in cells))} ({o})")
    what = "the pooler output too" if variant == ALL_LAYERS_POOLER else "every layer at once"
    return Verdict(
        claim=f"zeroing the probe's global top-k% [CLS] neurons ({what}) hurts more than random k%",
        outcome=_overall(outs),
        rule=f"per task, a k level beats random when z ≥ {Z_MIN:g} and ranked − random drop ≥ {MIN_FLIPS} inputs; "
             "reproduced if at least half the k levels do in every task, inconclusive where neither the ranked nor "
             "the random drop reaches 5 inputs at any k",
        power=("smallest detectable accuracy drop " + ", ".join(f"{n}: {num(t['min_detectable_drop'])} "
                                                               f"({MIN_FLIPS}/{t['n_eval']})" for n, t in tasks.items())),
        evidence="; ".join(ev) or "no task", source="reference code" if variant == ALL_LAYERS_POOLER else "paper",
        paper=PAPER_Z)


def _mean_fisher(rhos: list) -> float:
    """tanh of the mean Fisher z of the finite correlations (NaN if none)."""
    zs = [math.atanh(max(min(_f(r), 0.999999), -0.999999)) for r in rhos if r is not None and not math.isnan(_f(r))]
    return math.tanh(sum(zs) / len(zs)) if zs else math.nan


def attribution_agreement(tasks: dict) -> Verdict:
    """Spearman ρ between the concatenated probe's global ranking and activation × gradient,
    decided per layer: over the concatenation the layers' differences of scale (raw features)
    dominate ρ, so the rule averages the per-layer ρ (each over one layer's d neurons) in Fisher
    z; 95% interval tanh(z̄ ± 1.96/√(L·(d − 3))) (treats neurons as independent, so the interval
    is too narrow). Per task: reproduced if the interval reaches 0.46 (the paper's lower figure),
    not reproduced if it lies below, inconclusive if no per-layer ρ is defined; over tasks:
    `_overall`. The concatenated ρ is reported beside."""
    outs, ev = [], []
    for name, t in tasks.items():
        layers = [r for r in t.get("spearman_attribution_layers") or [] if r is not None and not math.isnan(_f(r))]
        rho = _mean_fisher(layers)
        if math.isnan(rho):
            outs.append("inconclusive")
            ev.append(f"{name}: undefined (no per-layer ρ)")
            continue
        d = t["n_neurons"] // max(1, len(t.get("sites") or t["spearman_attribution_layers"]))
        width = 1.96 / math.sqrt(len(layers) * max(1, d - 3))
        fz = math.atanh(max(min(rho, 0.999999), -0.999999))
        lo, hi = math.tanh(fz - width), math.tanh(fz + width)
        o = "reproduced" if hi >= RHO_LOW else "not reproduced"
        outs.append(o)
        per_layer = ", ".join(num(_f(r), 2) for r in t["spearman_attribution_layers"])
        ev.append(f"{name}: per-layer ρ {per_layer}, mean (Fisher z) {num(rho)} [{num(lo)}, {num(hi)}]; "
                  f"over the concatenation ρ = {num(_f(t['spearman_attribution']))} ({o})")
    return Verdict(
        claim="the probe's neuron ranking agrees with an attribution ranking (activation × gradient) within each layer",
        outcome=_overall(outs),
        rule="per task, reproduced if the 95% interval of the per-layer ρ averaged in Fisher z reaches 0.46, not "
             "reproduced if it lies below; the ρ over all layers concatenated is reported, not decided on (layer "
             "scales dominate it)",
        power="interval half-width ≈ 1.96/√(L·(d − 3)) (optimistic: neurons are not independent)",
        evidence="; ".join(ev), source="paper", paper=PAPER_RHO)


def plateau_collapse(tasks: dict) -> Verdict:
    """The ranked silencing curve over the 18 k levels. Room R = clean accuracy − chance
    (majority share). Per task: inconclusive if R < 5 inputs' worth; reproduced if the drop at
    the smallest k is ≤ max(0.1·R, 5 inputs) (plateau) and some k reaches a drop ≥ 0.5·R
    (collapse); otherwise not reproduced. Over tasks: `_overall`."""
    outs, ev = [], []
    for name, t in tasks.items():
        room = t["clean"]["accuracy"] - t["chance"]
        dmin = t["min_detectable_drop"]
        drops = [c["top_drop"] for c in t["curve"]]
        ks = [c["k_percent"] for c in t["curve"]]
        if room < dmin:
            outs.append("inconclusive")
            ev.append(f"{name}: clean accuracy {num(t['clean']['accuracy'])} ≈ chance {num(t['chance'])}")
            continue
        plateau = drops[0] <= max(0.1 * room, dmin)
        k_half = next((k for k, x in zip(ks, drops) if x >= 0.5 * room), None)
        o = "reproduced" if plateau and k_half is not None else "not reproduced"
        outs.append(o)
        ev.append(f"{name}: drop at {ks[0]:g}% {num(drops[0])}, half the room ({num(0.5 * room)}) lost at "
                  f"{'k = ' + format(k_half, 'g') + '%' if k_half is not None else 'no k'} ({o})")
    return Verdict(
        claim="the accuracy under ranked silencing stays flat for small k, then collapses",
        outcome=_overall(outs),
        rule="plateau: drop at the smallest k ≤ max(10% of clean − chance, 5 inputs); collapse: some k ≤ 95% "
             "loses half of clean − chance; reproduced if both in every task",
        power="accuracy resolution 1/n: " + ", ".join(f"{n} {num(1 / t['n_eval'], 4)}" for n, t in tasks.items()),
        evidence="; ".join(ev), source="paper", paper="plateau then collapse (figure)")


def class_asymmetry(tasks: dict) -> Verdict:
    """At k = asymmetry_k, silencing class c's own top-k% (|W[c, ·]| of the concatenated probe)
    should drop c's F1 more than the other classes' (mean). Only tasks with >= 3 classes (with 2
    the per-class rankings of a softmax probe nearly coincide). Per task: inconclusive if no F1
    drop reaches 5 inputs of the smallest class; reproduced if own > other for at least 3/4 of
    the classes; else not reproduced. Over tasks: `_overall`."""
    outs, ev = [], []
    for name, t in tasks.items():
        if t["asymmetry"] is None:
            continue
        m = np.array(t["asymmetry"], float)
        own = np.diag(m)
        other = (np.nansum(m, 1) - own) / (len(m) - 1)
        dmin = MIN_FLIPS / t["min_class_support"]
        if np.nanmax(np.abs(m)) < dmin:
            o = "inconclusive"
        else:
            o = "reproduced" if (own > other).sum() >= 0.75 * len(m) else "not reproduced"
        outs.append(o)
        ev.append(f"{name}: own > other for {(own > other).sum()}/{len(m)} classes, own F1 drops "
                  + ", ".join(num(x, 2) for x in own) + f" vs other {', '.join(num(x, 2) for x in other)} ({o})")
    return Verdict(
        claim="silencing a class's own top neurons hurts that class most (class asymmetry)",
        outcome=_overall(outs) if outs else "inconclusive",
        rule="per task with ≥ 3 classes, at k = 10%: own-class F1 drop > mean other-class F1 drop for ≥ 3/4 of "
             "the classes; inconclusive if no F1 drop reaches 5 inputs of the smallest class",
        power="smallest detectable F1 drop ≈ 5/(smallest class support): " + ", ".join(
            f"{n} {num(MIN_FLIPS / t['min_class_support'])}" for n, t in tasks.items() if t["asymmetry"] is not None),
        evidence="; ".join(ev) or "no task with ≥ 3 classes", source="reference code")


def _rate(a: dict, kind: str, magnitude: float) -> float | None:
    """One target's flip-to-target rate of one manipulation at one magnitude (None: not run, or
    undefined because every input already predicted the target)."""
    x = next((r["flip_to_target"] for r in a["rows"] if r["attack"] == kind and r["magnitude"] == magnitude), None)
    return None if x is None or math.isnan(_f(x)) else x


REFERENCE_PUSH_DELTA = 0.3  # notebook cell 75: the target's top 25%, Δ = 0.3
SIGNED_PUSH_DELTA = 5.0


def attack_verdicts(domains: dict) -> list[Verdict]:
    """Manipulations of the classifier toward each class, on the layer-wise arm's domains; the
    weaker target decides. Logit bias: reproduced if a bias of 8 (the reference's value)
    redirects ≥ 0.8 of the other inputs (the reference's `min_frac`) in every domain, else not
    reproduced. The reference code's push (`column_push_reference`: the target's top 25%, +Δ on
    its column only, unsigned, unbalanced): the same at Δ = 0.3. Extensions: the sign-aware,
    balanced push (each neuron's sign over the inputs it must move) at Δ = 5, and exponent bit
    flips (the reference has no bit-flip code): reproduced if flipping the exponent bit of the
    most top weights tried redirects ≥ 0.5. A summary without the reference push (written
    before it) is judged as it was then: the signed push as the reference's."""
    def weakest(d, kind, mag):  # a target with nothing to redirect (null in JSON, NaN in memory) is left out
        r = [x for x in (_rate(a, kind, mag) for a in d["attacks"].values()) if x is not None]
        return min(r) if r else None

    def margins(d):
        return ", ".join(num(a.get("median_clean_margin"), 2) for a in d["attacks"].values())

    has_reference = all(any(r["attack"] == "column_push_reference" for a in d["attacks"].values() for r in a["rows"])
                        for d in domains.values())
    pushes = ([("column_push_reference", REFERENCE_PUSH_DELTA, 0.8,
                f"+Δ = {REFERENCE_PUSH_DELTA:g} on the target's column at its top 25% neurons (the reference code's "
                "push: unsigned, unbalanced) redirects the other inputs", "reference code"),
               ("column_push_signed", SIGNED_PUSH_DELTA, 0.8,
                f"+Δ = {SIGNED_PUSH_DELTA:g} on the target's columns at its top neurons (sign-aware: each neuron's sign "
                "over the inputs to move; balanced) redirects the other inputs", "extension")]
              if has_reference else
              [("column_push_signed", SIGNED_PUSH_DELTA, 0.8, "+Δ = 5 on the target's columns at its top neurons "
                "(sign-aware, balanced) redirects the other inputs", "reference code")])
    out = []
    n_test = ", ".join(str(d["n_probe_test"]) for d in domains.values())
    for kind, mag, thr, claim, src in (
            ("logit_bias", 8.0, 0.8, "a bias of 8 on one logit redirects the other inputs to that class",
             "reference code"), *pushes,
            (None, None, 0.5, "flipping an exponent bit of the target's top weights redirects the other inputs",
             "extension")):
        vals = []
        for n, d in domains.items():
            if kind is None:
                first = next(iter(d["attacks"].values()))
                bits = [r for r in first["rows"] if r["attack"].startswith("bit_flip")]
                k2 = bits[0]["attack"] if bits else "bit_flip_30"
                m2 = max((r["magnitude"] for r in bits), default=0.0)
                vals.append((n, weakest(d, k2, m2)))
            else:
                vals.append((n, weakest(d, kind, mag)))
        if not vals or any(v is None for _, v in vals):
            o = "inconclusive"
        else:
            o = "reproduced" if all(v >= thr for _, v in vals) else "not reproduced"
        extra = "; median clean margins per target: " + "; ".join(f"{n} {margins(d)}" for n, d in domains.items()) \
            if kind == "logit_bias" else ""
        if kind and kind.startswith("column_push"):  # per target, not only the weaker one
            extra = "; per target: " + "; ".join(
                f"{n} " + ", ".join(f"{t} {num(_rate(a, kind, mag))}" for t, a in d["attacks"].items())
                for n, d in domains.items())
        out.append(Verdict(claim=claim, outcome=o,
                           rule=f"the weaker target's flip-to-target rate ≥ {thr:g} in every domain",
                           power=f"one input of {n_test} probe-test sentences",
                           evidence=", ".join(f"{n} {num(v)}" for n, v in vals) + extra, source=src))
    return out


def all_verdicts(tasks: dict, domains: dict) -> list[Verdict]:
    """Every SYNAPSE sub-claim's verdict (rules above)."""
    vs = [beats_random(tasks), attribution_agreement(tasks), plateau_collapse(tasks), class_asymmetry(tasks)]
    if any(t["pooler"] for t in tasks.values()):
        vs.append(beats_random({n: t for n, t in tasks.items() if t["pooler"]}, ALL_LAYERS_POOLER))
    return vs + attack_verdicts(domains)


def overall(vs: list[Verdict]) -> str:
    return combine(vs)
