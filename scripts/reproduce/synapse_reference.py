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
- control: `random_k` levels; the global top-k% and `n_random` random k% selections of the
  concatenation, zeroed at every layer, and again with the pooler output (BERT only).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from apex_jax import K_LEVELS, fileio
from apex_jax.data import encode
from apex_jax.synapse import (ALL_LAYERS, ALL_LAYERS_POOLER, CONCAT, ProbeConfig, SilenceConfig, attribution_rankings,
                              concat_silencing_experiment, extract_cls, global_ranking, plot_silencing_curves, spearman,
                              split_concat, top_k, train_probes)
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
               "(±Δ on the target's columns; its balanced line `delta[mask_other][:, cols] -= neg` writes a "
               "copy, so it has no effect); no bit-flip code",
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
    n_attribution: int = 128  # eval inputs for the activation × gradient ranking (0: skip it)
    l1: float = 1e-3
    l2: float = 1e-3
    seed: int = 0

    @classmethod
    def quick(cls) -> "RefSettings":
        return cls(k_levels=(10.0, 50.0), random_k=(50.0,), n_random=3, n_attribution=0)


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
    # activation × gradient over every layer's [CLS], concatenated like the probe's features
    rho, rho_layers = math.nan, []
    if rs.n_attribution > 0:  # 0 (the smoke test) skips it
        att_batch = {k: v[: rs.n_attribution] for k, v in ev.items()}
        per_site = attribution_rankings(model, params, att_batch, sites)  # one pass for every layer
        attr = np.concatenate([per_site[s].scores for s in sites])
        rho = spearman(g, attr)
        rho_layers = [spearman(g.scores[i * d:(i + 1) * d], attr[i * d:(i + 1) * d])
                      for i in range(len(sites))]

    curve_cfg = SilenceConfig(k_levels=rs.k_levels, n_random=2, bottom=False, per_class=C > 2,
                                asymmetry_k=rs.asymmetry_k if rs.asymmetry_k in rs.k_levels else rs.k_levels[0],
                                seed=rs.seed)
    curve = concat_silencing_experiment(model, params, ev, y, ids, W, sites, curve_cfg, pooler=False,
                                          progress=progress, **sweep_kw)
    ctrl_cfg = SilenceConfig(k_levels=rs.random_k, n_random=rs.n_random, bottom=False, per_class=False,
                               seed=rs.seed + 1)
    pooler = "head.hook_cls" in model.sites and bool(getattr(model.config, "has_pooler", False))
    ctrl = concat_silencing_experiment(model, params, ev, y, ids, W, sites, ctrl_cfg, pooler=pooler,
                                         progress=progress, **sweep_kw)
    controls = [{k: r[k] for k in ("site", "k_percent", "clean", "drop", "random_mean", "random_std", "z", "p")}
                for r in ctrl.controls("accuracy") if r["selection"] == "top"]
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
        "min_detectable_drop": MIN_FLIPS / n, "curve": ranked, "controls": controls, "pooler": pooler,
        "asymmetry": asym.tolist() if asym is not None else None,
        "perturbed_forwards": curve.perturbed_forwards + ctrl.perturbed_forwards,
        "sweep_seconds": round(curve.seconds + ctrl.seconds, 1),
    }


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
    """Ranked vs random silencing, all layers at once. Per task and control k, a cell *beats
    random* when z >= 3 and the ranked drop exceeds the random mean by >= 5 inputs' worth; a
    cell has *power* when the ranked or the mean random drop reaches 5 inputs. Per task:
    inconclusive without a powered cell, reproduced when at least half the cells beat random,
    else not reproduced; over tasks: `_overall`."""
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


def attribution_agreement(tasks: dict) -> Verdict:
    """Spearman ρ between the concatenated probe's global ranking and activation × gradient over
    the same neurons; 95% interval by Fisher's z with n = number of neurons (treats neurons as
    independent, so the interval is too narrow). Per task: reproduced if the interval reaches
    0.46 (the paper's lower figure), not reproduced if it lies below, inconclusive if ρ is
    undefined; over tasks: `_overall`."""
    outs, ev = [], []
    for name, t in tasks.items():
        rho = _f(t["spearman_attribution"])
        width = 1.96 / math.sqrt(max(4, t["n_neurons"]) - 3)
        if math.isnan(rho):
            outs.append("inconclusive")
            ev.append(f"{name}: undefined")
            continue
        fz = math.atanh(max(min(rho, 0.999999), -0.999999))
        lo, hi = math.tanh(fz - width), math.tanh(fz + width)
        o = "reproduced" if hi >= RHO_LOW else "not reproduced"
        outs.append(o)
        per_layer = ", ".join(num(_f(r), 2) for r in t["spearman_attribution_layers"])
        ev.append(f"{name}: ρ = {num(rho)} [{num(lo)}, {num(hi)}] (per layer {per_layer})")
    return Verdict(
        claim="the probe's neuron ranking agrees with an attribution ranking (activation × gradient)",
        outcome=_overall(outs),
        rule="per task, reproduced if the 95% interval of ρ (Fisher z over the ranked neurons) reaches 0.46, "
             "not reproduced if it lies below",
        power="interval half-width ≈ 1.96/√(L·d − 3) (optimistic: neurons are not independent)",
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


def attack_verdicts(domains: dict) -> list[Verdict]:
    """Manipulations of the classifier toward each class, on the layer-wise arm's domains; the
    weaker target decides. Logit bias: reproduced if a bias of 8 (the reference's value)
    redirects ≥ 0.8 of the other inputs (the reference's `min_frac`) in every domain, else not
    reproduced. Sign-aware column push: the same at Δ = 5. Bit flips: an extension (the
    reference has no bit-flip code): reproduced if flipping the exponent bit of the most top
    weights tried redirects ≥ 0.5."""
    def weakest(d, kind, mag):
        r = [row["flip_to_target"] for a in d["attacks"].values() for row in a["rows"]
             if row["attack"] == kind and row["magnitude"] == mag and row["flip_to_target"] is not None]
        return min(r) if r else None

    def margins(d):
        return ", ".join(num(a.get("median_clean_margin"), 2) for a in d["attacks"].values())

    out = []
    n_test = ", ".join(str(d["n_probe_test"]) for d in domains.values())
    for kind, mag, thr, claim, src in (
            ("logit_bias", 8.0, 0.8, "a bias of 8 on one logit redirects the other inputs to that class",
             "reference code"),
            ("column_push_signed", 5.0, 0.8, "+Δ = 5 on the target's columns at its top neurons (sign-aware, "
             "balanced) redirects the other inputs", "reference code"),
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
