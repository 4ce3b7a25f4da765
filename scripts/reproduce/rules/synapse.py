"""Claim 5's decision rules (SYNAPSE), kept apart from the code that computes the numbers.

Everything that decides SYNAPSE's verdicts lives here and only here: thresholds, what is compared,
the three-valued outcome, the power statement and the rule text the report quotes. The claim
scripts (`reproduce.synapse`, `reproduce.synapse_reference`) compute the numbers and import these
functions. A summary records the last commit that changed this file (`rules_commit`); the report
marks the claim stale when this file has changed since (`reproduce.provenance`).

The sub-claims are consistent with each other by construction: the k levels are split, before any
number, at `PLATEAU_MAX_K`. 5.3 (plateau then collapse) says the ranked silencing costs little at
k ≤ 10% (`plateau_levels`); 5.1 (the ranked top-k% beats random) is decided only at the control k
levels above it (`beats_random_levels`), so a plateau at small k cannot count against 5.1 and a
win at small k cannot count for it. 5.3's plateau is decided on the true-class margin (accuracy
moves only where a prediction flips, so a flat accuracy can hide a falling margin), its collapse on
accuracy (the paper's curve). 5.4 (class asymmetry) counts a class only where its own-vs-other F1
difference exceeds the detectable size (5 inputs of the smallest class). 5.2 (probe vs
attribution) is decided on the per-layer ρ against our smallest agreement, ρ = 0.1: the paper
figures below are unsourced (not found in the paper's text) and decide nothing.

These rules were changed after the claim's first results existed: they are not pre-registered.

Seeds and verdict stability (pre-registered: written before any full-size run over seeds). The
reference arm runs each task several times: per text task every fine-tune seed × every probe
initialisation seed, per image task every clean zoo member × every probe seed. Each run is judged
by the per-task rules above on that run alone; `stability` turns a task's run outcomes into the
task's outcome (reproduced if at least 2/3 of the runs reproduce and none gives "not reproduced";
not reproduced if at least 2/3 give "not reproduced"; else inconclusive) and `_overall` combines
the tasks as before (`seeded_verdicts`).

5.1's decidable levels (revised after the full-size run at code 244325a, before the next one; not
pre-registered: leaving levels out can move a verdict either way, so the report says so). That run
showed the layer-matched control blind where 5.1 was decided: the raw-feature ranking puts 98–100%
of its top-k% in the last block, so from k ≈ 17% the top-k% fills that block and a layer-matched
draw takes the same neurons (at k = 95% ranked and layer-matched margin drops were equal: 3.64 /
3.60, 2.89 / 2.89, 4.73 / 4.73, 6.87 / 6.87). A k level past the plateau now decides 5.1 only when
the control can differ from the ranked set (`decidable_level`): a layer-matched draw misses at
least `MIN_CONTRAST` as large a share of the ranked neurons as a uniform draw would (`contrast`:
a uniform k% draw misses 1 − k of them in expectation), and the layer-matched draws leave at least
`MIN_MARGIN_ROOM` of the clean mean margin (else both sit at the floor). A task with no decidable
level is inconclusive ("not decidable").

The last-block inversion (pre-registered: written before any full-size run tests it; an extension,
not deciding claim 5). An earlier run suggested that at the last block the probe's ranking is
inverted on the margin (the top-k% hurt less than every random draw, the bottom-k% more).
`last_block_inversion` tests it per run at the last block alone (`inversion_k_state`,
`inversion_run`) and over runs with the same `stability` rule.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from apex_jax.synapse import ALL_LAYERS, ALL_LAYERS_POOLER

from ..reporting import num
from ..verdicts import Verdict, combine
from . import PaperFigure

Z_MIN = 3.0  # a ranked drop "beats random" at z >= 3 …
MIN_FLIPS = 5  # … and by at least 5 inputs (one-sided sign test of 5 one-way flips: p = 0.031)

# The k levels split (before the runs are redone, after the first ones): 5.3's plateau and 5.1's levels.
PLATEAU_MAX_K = 10.0  # k ≤ 10%: where 5.3 claims the ranked silencing costs little
PLATEAU_TOLERANCE = 0.1  # "little": ≤ 10% of the room (accuracy) or of the clean mean margin
COLLAPSE_SHARE = 0.5  # "collapse": some k loses half of clean − chance accuracy
ASYMMETRY_SHARE = 0.75  # 5.4: own > other for at least 3/4 of the classes
SMALLEST_RHO = 0.1  # 5.2: the least per-layer rank agreement that counts (as in claims 1 and 3)
MIN_CONTRAST = 0.5  # 5.1: a layer-matched draw must miss ≥ half the ranked share a uniform draw misses …
MIN_MARGIN_ROOM = 0.1  # … and must leave ≥ 10% of the clean mean margin, or the level decides nothing

PAPER_Z = PaperFigure("random-control z ≈ 17–30", "5.1 top-k% beats random")
PAPER_RHO = PaperFigure("Spearman(probe, attribution) 0.46–0.70", "5.2 probe vs attribution ranking")
PAPER_CURVE = PaperFigure("plateau then collapse (a figure, no number)", "5.3 plateau then collapse")
PAPER_FIGURES = (PAPER_Z, PAPER_RHO, PAPER_CURVE)


def plateau_levels(k_levels) -> tuple[float, ...]:
    """The k levels 5.3 tests as the plateau: k ≤ `PLATEAU_MAX_K`."""
    return tuple(float(k) for k in k_levels if float(k) <= PLATEAU_MAX_K)


def beats_random_levels(k_levels) -> tuple[float, ...]:
    """The k levels 5.1 is decided on: those past the plateau (k > `PLATEAU_MAX_K`); disjoint from
    `plateau_levels` by construction."""
    return tuple(float(k) for k in k_levels if float(k) > PLATEAU_MAX_K)


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


def layer_overlap(counts, width: int) -> float:
    """The expected share of a ranked set that a layer-matched random draw also selects.

    Layer l holds `counts[l]` ranked neurons of its `width`; the draw takes `counts[l]` of the
    `width` uniformly, so it hits `counts[l]² / width` of them in expectation:
    Σ_l c_l² / width ÷ Σ_l c_l. 1 when the set fills whole layers; k (the selected share) when it
    spreads evenly, as for a uniform draw, and never below k.

    >>> layer_overlap([0, 0, 384], 384), layer_overlap([10, 10, 10], 100)
    (1.0, 0.1)
    """
    c = np.asarray(counts, np.float64)
    return float((c ** 2).sum() / width / c.sum()) if c.sum() > 0 else math.nan


def contrast(counts, width: int) -> float:
    """How far a layer-matched draw can differ from the ranked set, against a uniform draw: the
    share of the ranked neurons it misses (1 − `layer_overlap`) over the share a uniform draw of
    the same size misses (1 − k). 1 for an evenly spread set, 0 for one that fills its layers.

    >>> contrast([10, 10, 10], 100), contrast([0, 0, 384], 384)
    (1.0, 0.0)
    """
    c = np.asarray(counts, np.float64)
    k = c.sum() / (width * c.size)
    return float((1 - layer_overlap(counts, width)) / (1 - k)) if 0 < k < 1 else math.nan


def decidable_level(t: dict, c: dict) -> tuple[bool, str]:
    """Whether a margin cell (top-k%, zeroed) of task summary `t` can decide 5.1, and why not: the
    layer-matched draws must exist, reach a `contrast` ≥ `MIN_CONTRAST` (of `t["top_layer_counts"]`)
    and leave ≥ `MIN_MARGIN_ROOM` of the clean mean
    margin. A summary without the layer profile (written before it was recorded) is judged on the
    draws' room alone."""
    k = float(c["k_percent"])
    if not c.get("layer_draws"):
        return False, f"k = {k:g}%: no layer-matched draws"
    profile = (t.get("top_layer_counts") or {}).get(f"{k:g}")
    if profile is not None:
        ct = contrast(profile, t["layer_width"])
        if not ct >= MIN_CONTRAST:
            return False, (f"k = {k:g}%: a layer-matched draw shares {num(layer_overlap(profile, t['layer_width']), 2)} "
                           f"of the ranked set (contrast {num(ct, 2)} < {MIN_CONTRAST:g})")
    clean, matched = _f(c["clean"]), _f(c["layer_random_mean"])
    if not clean > 0:
        return False, f"k = {k:g}%: the clean mean margin {num(clean, 2)} is not positive (no margin to lose)"
    if not clean - matched >= MIN_MARGIN_ROOM * clean:
        return False, (f"k = {k:g}%: the layer-matched draws leave {num(clean - matched, 2)} of the clean margin "
                       f"{num(clean, 2)}")
    return True, ""


def _beats_random_margin(tasks: dict, variant: str) -> Verdict:
    """Per task, at the control k levels past the plateau (`beats_random_levels`) that can tell the
    ranked set from its control (`decidable_level`): the zeroed
    global top-k% *beats random* when its drop in the mean true-class margin (label logit −
    largest other) exceeds every layer-matched random draw's (same count per layer, drawn within
    each layer: p = 1/(R + 1)) and z >= 3 against them. Power: the positive control, the
    activation × gradient top-k% zeroed (every layer at once), must beat the uniform random draws
    the same way at some of those k, else the test shows no power and the task is inconclusive (a
    summary without attribution is judged without it, and says so). Per task: inconclusive without
    a decidable k past the plateau; reproduced when at least half of those k beat random, else not
    reproduced; over tasks: `_overall`. Reported beside, not deciding: the uniform control,
    accuracy, KL, bottom-k% and the mean-ablated top-k% against the mean-ablated layer-matched
    draws."""
    outs, ev, power = [], [], []
    for name, t in tasks.items():
        all_cells = _cells(t, variant, "top", "zero", "margin")
        if not all_cells:
            continue
        past = set(beats_random_levels(c["k_percent"] for c in all_cells))
        checks = {float(c["k_percent"]): decidable_level(t, c) for c in all_cells if float(c["k_percent"]) in past}
        deciding = {k for k, (ok, _) in checks.items() if ok}
        cells = [c for c in all_cells if float(c["k_percent"]) in deciding]
        if not cells:
            outs.append("inconclusive")
            why = "; ".join(r for _, r in checks.values())
            ev.append(f"{name}: " + (f"not decidable ({why})" if checks else
                                     f"no control k level above {PLATEAU_MAX_K:g}%") + " (inconclusive)")
            power.append(f"{name}: no decidable k level, so no power either way")
            continue
        wins = [c for c in cells if _beats_all(c, "layer_")]
        uniform = [c for c in cells if _beats_all(c)]
        pos = [c for c in _cells(t, ALL_LAYERS, "attribution", "zero", "margin") if float(c["k_percent"]) in deciding]
        pos_wins = [c for c in pos if _beats_all(c)]
        o = ("inconclusive" if pos and not pos_wins else
             "reproduced" if len(wins) >= len(cells) / 2 else "not reproduced")
        outs.append(o)
        small = [c for c in all_cells if float(c["k_percent"]) not in past and c.get("layer_draws")]
        skipped = [r for k, (ok, r) in checks.items() if not ok]
        acc = [c for c in _cells(t, variant, "top", "zero", "accuracy") if float(c["k_percent"]) in deciding]
        kl = [c for c in _cells(t, variant, "top", "zero", "kl") if float(c["k_percent"]) in deciding]
        bottom = {c["k_percent"]: c for c in _cells(t, variant, "bottom", "zero", "margin")}
        mean = [c for c in _cells(t, variant, "top", "mean", "margin") if float(c["k_percent"]) in deciding]
        n = len(cells)
        ks = ", ".join(f"{c['k_percent']:g}" for c in cells)
        parts = [f"margin at k = {ks}%: {len(wins)}/{n} k levels beat the layer-matched draws "
                 f"(z {_zs(cells, 'layer_z')}), {len(uniform)}/{n} the uniform ones (z {_zs(cells, 'z')})",
                 f"ranked / layer-matched / uniform margin drop at k = {cells[-1]['k_percent']:g}%: "
                 f"{num(_f(cells[-1]['drop']), 2)} / {num(_f(cells[-1]['layer_random_mean']), 2)} / "
                 f"{num(_f(cells[-1]['random_mean']), 2)}"]
        if skipped:
            parts.append("not decidable: " + "; ".join(skipped))
        if small:
            parts.append(f"not deciding, on the plateau (k ≤ {PLATEAU_MAX_K:g}%): "
                         f"{sum(_beats_all(c, 'layer_') for c in small)}/{len(small)} beat the layer-matched draws")
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
                     + (f"{len(pos_wins)}/{len(pos)} deciding k" if pos else "— (not run)"))
    what = "the pooler output too" if variant == ALL_LAYERS_POOLER else "every layer at once"
    floor = ", ".join(sorted({f"1/{t['n_random'] + 1}" for t in tasks.values() if "n_random" in t})) or "1/(R+1)"
    return Verdict(
        claim=f"zeroing the probe's global top-k% [CLS] neurons ({what}) lowers the true-class margin more than "
              "random k% with the same count per layer",
        outcome=_overall(outs),
        rule=f"decided only at the control k levels above {PLATEAU_MAX_K:g}% (past the plateau of the plateau-then-"
             f"collapse sub-claim) where a layer-matched draw misses ≥ {MIN_CONTRAST:g}× the share of the ranked set a "
             f"uniform draw misses (1 − k) and the layer-matched draws leave ≥ {MIN_MARGIN_ROOM:.0%} of the clean mean margin (a "
             "task with no such level is inconclusive: not decidable); per task, a k level beats random when the ranked drop in the mean true-class "
             f"margin exceeds every layer-matched random draw's (p at its floor {floor}) with z ≥ {Z_MIN:g} against "
             "them; reproduced if at least half of those k levels do in every task; inconclusive where the positive "
             "control (activation × gradient top-k%, zeroed) beats uniform random at none of them",
        power="; ".join(power) or "no task",
        evidence="; ".join(ev) or "no task", source="reference code" if variant == ALL_LAYERS_POOLER else "paper",
        paper=PAPER_Z.text())


def _beats_random_accuracy(tasks: dict, variant: str = ALL_LAYERS) -> Verdict:
    """The earlier rule (summaries without "control_cells"), at the control k levels past the
    plateau only (`beats_random_levels`): a cell *beats random* when z >= 3 and the ranked
    accuracy drop exceeds the uniform random mean by >= 5 inputs' worth; a cell has *power* when
    the ranked or the mean random drop reaches 5 inputs. Per task: inconclusive without a powered
    cell, reproduced when at least half the cells beat random, else not reproduced; over tasks:
    `_overall`."""
    outs, ev = [], []
    for name, t in tasks.items():
        every = [c for c in t["controls"] if c["site"] == variant]
        if not every:
            continue
        deciding = set(beats_random_levels(c["k_percent"] for c in every))
        cells = [c for c in every if float(c["k_percent"]) in deciding]
        if not cells:
            outs.append("inconclusive")
            ev.append(f"{name}: no control k level above {PLATEAU_MAX_K:g}% (inconclusive)")
            continue
        dmin = t["min_detectable_drop"]
        powered = [c for c in cells if max(_f(c["drop"]), _f(c["random_mean"])) >= dmin - 1e-12]
        wins = [c for c in cells if _f(c["z"]) >= Z_MIN and _f(c["drop"]) - _f(c["random_mean"]) >= dmin - 1e-12]
        o = "inconclusive" if not powered else "reproduced" if len(wins) >= len(cells) / 2 else "not reproduced"
        outs.append(o)
        zs = [_f(c["z"]) for c in cells]
        ev.append(f"{name}: {len(wins)}/{len(cells)} k levels above {PLATEAU_MAX_K:g}% beat random, "
                  f"z {num(min(zs), 1)}…{num(max(zs), 1)}, "
                  f"largest ranked / random drop {num(max(_f(c['drop']) for c in cells))} / "
                  f"{num(max(_f(c['random_mean']) for c in cells))} ({o})")
    what = "the pooler output too" if variant == ALL_LAYERS_POOLER else "every layer at once"
    return Verdict(
        claim=f"zeroing the probe's global top-k% [CLS] neurons ({what}) hurts more than random k%",
        outcome=_overall(outs),
        rule=f"decided only at the control k levels above {PLATEAU_MAX_K:g}% (past the plateau); per task, a k level "
             f"beats random when z ≥ {Z_MIN:g} and ranked − random drop ≥ {MIN_FLIPS} inputs; reproduced if at least "
             "half of those k levels do in every task, inconclusive where neither the ranked nor the random drop "
             "reaches 5 inputs at any of them",
        power=("smallest detectable accuracy drop " + ", ".join(f"{n}: {num(t['min_detectable_drop'])} "
                                                               f"({MIN_FLIPS}/{t['n_eval']})" for n, t in tasks.items())),
        evidence="; ".join(ev) or "no task", source="reference code" if variant == ALL_LAYERS_POOLER else "paper",
        paper=PAPER_Z.text())


def _mean_fisher(rhos: list) -> float:
    """tanh of the mean Fisher z of the finite correlations (NaN if none)."""
    zs = [math.atanh(max(min(_f(r), 0.999999), -0.999999)) for r in rhos if r is not None and not math.isnan(_f(r))]
    return math.tanh(sum(zs) / len(zs)) if zs else math.nan


def attribution_agreement(tasks: dict) -> Verdict:
    """Spearman ρ between the concatenated probe's global ranking and activation × gradient,
    decided per layer: over the concatenation the layers' differences of scale (raw features)
    dominate ρ, so the rule averages the per-layer ρ (each over one layer's d neurons) in Fisher
    z; 95% interval tanh(z̄ ± 1.96/√(L·(d − 3))) (treats neurons as independent, so the interval
    is too narrow). Per task: reproduced if the interval lies above 0, not reproduced if it lies
    below `SMALLEST_RHO` (0.1, the least agreement that counts, as in claims 1 and 3), inconclusive
    otherwise or if no per-layer ρ is defined; over tasks: `_overall`. The paper's "0.46–0.70" is
    unsourced and shown beside only. The concatenated ρ is reported beside."""
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
        o = "not reproduced" if hi < SMALLEST_RHO else "reproduced" if lo > 0 else "inconclusive"
        outs.append(o)
        per_layer = ", ".join(num(_f(r), 2) for r in t["spearman_attribution_layers"])
        ev.append(f"{name}: per-layer ρ {per_layer}, mean (Fisher z) {num(rho)} [{num(lo)}, {num(hi)}]; "
                  f"over the concatenation ρ = {num(_f(t['spearman_attribution']))} ({o})")
    return Verdict(
        claim="the probe's neuron ranking agrees with an attribution ranking (activation × gradient) within each layer",
        outcome=_overall(outs),
        rule=f"per task, reproduced if the 95% interval of the per-layer ρ averaged in Fisher z lies above 0, not "
             f"reproduced if it lies below ρ = {SMALLEST_RHO:g}, else inconclusive; the ρ over all layers concatenated "
             "is reported, not decided on (layer scales dominate it); the paper figure is unsourced and decides nothing",
        power="interval half-width ≈ 1.96/√(L·(d − 3)) (optimistic: neurons are not independent)",
        evidence="; ".join(ev), source="paper", paper=PAPER_RHO.text())


def _margin_plateau(t: dict) -> tuple[bool, str] | None:
    """Whether the zeroed top-k% costs ≤ `PLATEAU_TOLERANCE` of the clean mean true-class margin at
    every control k ≤ `PLATEAU_MAX_K` (None: the summary has no margin cells at those k)."""
    cells = [c for c in t.get("control_cells") or [] if c["site"] == ALL_LAYERS and c["selection"] == "top"
             and c["ablation"] == "zero" and c["score"] == "margin"
             and float(c["k_percent"]) in plateau_levels([c["k_percent"]])]
    if not cells:
        return None
    clean = abs(_f(cells[0]["clean"]))
    worst = max(_f(c["drop"]) for c in cells)
    ok = worst <= PLATEAU_TOLERANCE * clean
    return ok, (f"largest margin drop at k ≤ {PLATEAU_MAX_K:g}% {num(worst, 2)} vs tolerance "
                f"{num(PLATEAU_TOLERANCE * clean, 2)} (10% of the clean margin {num(clean, 2)})")


def plateau_collapse(tasks: dict) -> Verdict:
    """The ranked silencing curve. Room R = clean accuracy − chance (majority share). Plateau
    (decided on the true-class margin, checked on accuracy too): at every k ≤ `PLATEAU_MAX_K`
    the zeroed top-k% lowers the mean true-class margin by ≤ 10% of its clean value (control
    cells) and accuracy by ≤ max(0.1·R, 5 inputs) (curve); collapse (decided on accuracy): some
    k reaches an accuracy drop ≥ 0.5·R. Per task: inconclusive if R < 5 inputs' worth or the
    summary has no margin cells at the plateau's k (the margin decides the plateau); reproduced
    if plateau and collapse; otherwise not reproduced. Over tasks: `_overall`."""
    outs, ev = [], []
    for name, t in tasks.items():
        room = t["clean"]["accuracy"] - t["chance"]
        dmin = t["min_detectable_drop"]
        drops = [c["top_drop"] for c in t["curve"]]
        ks = [float(c["k_percent"]) for c in t["curve"]]
        if room < dmin:
            outs.append("inconclusive")
            ev.append(f"{name}: clean accuracy {num(t['clean']['accuracy'])} ≈ chance {num(t['chance'])}")
            continue
        flat = [x for k, x in zip(ks, drops) if k in plateau_levels([k])] or drops[:1]
        acc_plateau = max(flat) <= max(PLATEAU_TOLERANCE * room, dmin)
        k_half = next((k for k, x in zip(ks, drops) if x >= COLLAPSE_SHARE * room), None)
        margin = _margin_plateau(t)
        if margin is None:
            o = "inconclusive"
        else:
            o = "reproduced" if margin[0] and acc_plateau and k_half is not None else "not reproduced"
        outs.append(o)
        ev.append(f"{name}: {margin[1] if margin else 'no margin cells at the plateau k (margin not measured)'}; "
                  f"largest accuracy drop at k ≤ {PLATEAU_MAX_K:g}% {num(max(flat))}, half the room "
                  f"({num(COLLAPSE_SHARE * room)}) lost at "
                  f"{'k = ' + format(k_half, 'g') + '%' if k_half is not None else 'no k'} ({o})")
    return Verdict(
        claim="the ranked silencing costs little for small k, then collapses",
        outcome=_overall(outs),
        rule=f"plateau (decided on the true-class margin): at every k ≤ {PLATEAU_MAX_K:g}% the zeroed top-k% lowers "
             f"the mean true-class margin by ≤ {PLATEAU_TOLERANCE:.0%} of its clean value, and accuracy by ≤ "
             f"max({PLATEAU_TOLERANCE:.0%} of clean − chance, 5 inputs); collapse (decided on accuracy): some k ≤ 95% "
             "loses half of clean − chance; reproduced if both in every task; inconclusive where the margin at the "
             "plateau's k was not measured or clean accuracy is within 5 inputs of chance",
        power="accuracy resolution 1/n: " + ", ".join(f"{n} {num(1 / t['n_eval'], 4)}" for n, t in tasks.items()),
        evidence="; ".join(ev), source="paper", paper=PAPER_CURVE.text())


def class_asymmetry(tasks: dict) -> Verdict:
    """At k = asymmetry_k, silencing class c's own top-k% (|W[c, ·]| of the concatenated probe)
    should drop c's F1 more than the other classes' (mean). Only tasks with >= 3 classes (with 2
    the per-class rankings of a softmax probe nearly coincide). A class counts for the claim
    only where own − other ≥ the detectable F1 difference (5 inputs of the smallest class),
    against it where other − own ≥ that size, else it is unresolved. Per task: reproduced if
    the classes for it reach 3/4; not reproduced if 3/4 is out of reach even with every
    unresolved class for it; else inconclusive. Over tasks: `_overall`."""
    outs, ev = [], []
    for name, t in tasks.items():
        if t["asymmetry"] is None:
            continue
        m = np.array(t["asymmetry"], float)
        own = np.diag(m)
        other = (np.nansum(m, 1) - own) / (len(m) - 1)
        dmin = MIN_FLIPS / t["min_class_support"]
        diff = own - other
        n_for, n_against = int((diff >= dmin).sum()), int((diff <= -dmin).sum())
        need = ASYMMETRY_SHARE * len(m)
        o = ("reproduced" if n_for >= need else "not reproduced" if len(m) - n_against < need else "inconclusive")
        outs.append(o)
        ev.append(f"{name}: own − other F1 drop ≥ {num(dmin)} for {n_for}/{len(m)} classes, ≤ −{num(dmin)} for "
                  f"{n_against}, unresolved {len(m) - n_for - n_against}; own F1 drops "
                  + ", ".join(num(x, 2) for x in own) + f" vs other {', '.join(num(x, 2) for x in other)} ({o})")
    return Verdict(
        claim="silencing a class's own top neurons hurts that class most (class asymmetry)",
        outcome=_overall(outs) if outs else "inconclusive",
        rule="per task with ≥ 3 classes, at k = 10%: a class counts where own-class F1 drop − mean other-class F1 "
             "drop ≥ the detectable size (5 inputs of the smallest class), against where ≤ minus it, else unresolved; "
             f"reproduced if ≥ {ASYMMETRY_SHARE:.0%} of the classes count; not reproduced if that is out of reach "
             "even with every unresolved class counted; else inconclusive",
        power="smallest detectable F1 difference ≈ 5/(smallest class support): " + ", ".join(
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


# One sub-claim's row of the report: (sub-claim with its rule, value per domain, "yes" / "partly" /
# "no" over both domains).
SubClaim = tuple[str, list[str], str]


def subclaims(domains: dict) -> list[SubClaim]:
    """Every sub-claim judged on the summary's per-domain results; each rule is in its row's
    label and in the docstring of the function that judges it."""
    return [_depth(domains), *_beats_random(domains), _top_vs_bottom(domains), _asymmetry(domains),
            *_redirects(domains), _bit_flips(domains)]


def verdict(verdicts: list[Verdict]) -> tuple[str, str]:
    """Claim 5's outcome from its three-valued sub-claim verdicts (`synapse_reference.all_verdicts`,
    rules stated there): reproduced if every primary sub-claim (extensions
    excluded) is, not reproduced if any is not, else inconclusive (`verdicts.combine`).

    Returns:
        (outcome, one sentence counting the primary sub-claims per outcome).
    """
    primary = [v for v in verdicts if v.source != "extension"]
    counts = {o: sum(v.outcome == o for v in primary) for o in ("reproduced", "not reproduced", "inconclusive")}
    reason = (f"Of {len(primary)} sub-claims (extensions excluded): " + ", ".join(f"{n} {o}" for o, n in counts.items())
              + ".")
    return overall(verdicts), reason


def _depth(domains: dict) -> SubClaim:
    """Holds if in every domain the last block's probe is at least 0.05 more accurate than
    block 0's."""
    def first_last(d):
        acc = {p["site"]: p["test_accuracy"] for p in d["probes"]}
        blocks = [acc[k] for k in sorted((k for k in acc if k.startswith("blocks.")), key=lambda k: int(k.split(".")[1]))]
        return blocks[0], blocks[-1]

    gains = [first_last(d) for d in domains.values()]
    ok = all(b - a >= 0.05 for a, b in gains)
    return ("probe accuracy rises with depth (last block ≥ block 0 + 0.05)",
            [f"{num(a)} → {num(b)}" for a, b in gains], "yes" if ok else "no")


# (label, count, cells): the layer-wise arm's ranked-vs-random rows; those on the continuous
# scores exist in summaries written since they were added
BEATS_RANDOM = (
    ("top-k beats random on the true-class margin (cells with p ≤ 0.05, of layer × k)", "top_significant_margin",
     "n_cells"),
    ("top-k beats random on accuracy (cells with p ≤ 0.05)", "top_significant", "n_cells"),
    ("top-k beats random on KL(clean ‖ silenced) (cells with p ≤ 0.05)", "top_significant_kl", "n_cells"),
    ("top-k mean-ablated beats mean-ablated random on the margin (cells with p ≤ 0.05)", "mean_top_significant_margin",
     "mean_cells"),
    ("positive control: the activation × gradient top-k beats random on the margin (cells with p ≤ 0.05)",
     "attribution_significant_margin", "attribution_cells"),
    ("each class's top-k beats random on accuracy (cells with p ≤ 0.05)", "class_significant", "class_cells"),
    ("each class's top-k beats random on the margin (cells with p ≤ 0.05)", "class_significant_margin",
     "class_cells"),
)


def _beats_random(domains: dict) -> list[SubClaim]:
    """Ranked selections against the random control (within the block: layer-matched by
    construction), counted in (layer × k) cells with p ≤ 0.05, on the true-class margin,
    accuracy and KL, zeroed and mean-ablated, with the attribution top-k as the positive control.
    Holds: at least half the cells in every domain; partly: more than the 5% chance expects (and
    at least 2) in some domain. Rows a summary has no counts for (written before them) are left out."""
    rows = []
    sil = [d["silencing"] for d in domains.values()]
    for label, num_key, den_key in BEATS_RANDOM:
        if not all(num_key in x and x.get(den_key) for x in sil):
            continue
        vals = [(x[num_key], x[den_key]) for x in sil]
        v = ("yes" if all(a >= b / 2 for a, b in vals) else
             "partly" if any(a > 0.05 * b and a >= 2 for a, b in vals) else "no")
        rows.append((label, [f"{a}/{b}" for a, b in vals], v))
    return rows


def _top_vs_bottom(domains: dict) -> SubClaim:
    """Holds if in every domain the top-k drop exceeds the bottom-k drop in at least half of
    the untied cells, and in at least one: on the true-class margin where the summary has it
    (no ties on a continuous score), else on accuracy."""
    sil = [d["silencing"] for d in domains.values()]
    if all("top_beats_bottom_margin" in x for x in sil):
        vals = [(x["top_beats_bottom_margin"], 0, x["n_cells"]) for x in sil]
        label = "top-k lowers the true-class margin more than bottom-k (cells top drop > bottom drop)"
    else:
        vals = [(x["top_beats_bottom"], x["top_ties_bottom"], x["n_cells"]) for x in sil]
        label = "top-k hurts more than bottom-k (cells top drop > bottom drop; ties)"
    v = "yes" if all(a >= (c - t) / 2 and a > 0 for a, t, c in vals) else "no"
    return (label, [f"{a}/{c}" + (f" ({t} ties)" if t else "") for a, t, c in vals], v)


def _asymmetry(domains: dict) -> SubClaim:
    """At the last silenced block: silencing class c's own top neurons drops c's F1 more than
    the other classes' F1 on average. Holds: for every class in every domain; partly: for
    some class somewhere."""
    asym = []
    for d in domains.values():
        m = np.array(list(d["silencing"]["asymmetry"].values())[-1], dtype=float)
        own = np.diag(m)
        other = (m.sum(1) - own) / max(len(m) - 1, 1)
        asym.append((own, other))
    v = "yes" if all((o > x).all() for o, x in asym) else "partly" if any((o > x).any() for o, x in asym) else "no"
    return ("silencing a class's own top neurons hurts its F1 most (last block; own / other F1 drop per class)",
            [", ".join(f"{num(a, 2)}/{num(b, 2)}" for a, b in zip(o, x)) for o, x in asym], v)


def _flip(d: dict, kind: str, magnitude: float) -> float | None:
    """The weaker target's flip-to-target rate of one manipulation at one magnitude (None: no
    target had inputs left to flip)."""
    r = [row["flip_to_target"] for a in d["attacks"].values() for row in a["rows"]
         if row["attack"] == kind and row["magnitude"] == magnitude]
    r = [x for x in r if x is not None]  # None: every input already predicted the target
    return min(r) if r else None


def _has_attack(d: dict, kind: str) -> bool:
    return any(r["attack"] == kind for a in d["attacks"].values() for r in a["rows"])


def _redirects(domains: dict) -> list[SubClaim]:
    """Holds if in every domain a logit bias of 8 (resp. a balanced column push Δ = 5, the
    sign-aware push Δ = 5, the reference code's push Δ = 0.3) redirects at least 90% of the
    other inputs toward the weaker target; a push a summary lacks is left out."""
    rows = []
    for label, kind, magnitude in (("a logit bias of 8 redirects (flip-to-target ≥ 0.9)", "logit_bias", 8.0),
                                   ("a balanced column push Δ = 5 redirects (≥ 0.9)", "column_push", 5.0),
                                   ("a sign-aware column push Δ = 5 redirects (≥ 0.9)", "column_push_signed", 5.0),
                                   ("the reference code's push Δ = 0.3 (top 25%, unsigned, unbalanced) redirects (≥ 0.9)",
                                    "column_push_reference", 0.3)):
        if kind != "logit_bias" and not all(_has_attack(d, kind) for d in domains.values()):
            continue
        vals = [_flip(d, kind, magnitude) for d in domains.values()]
        rows.append((label, [num(x) for x in vals], "yes" if all(x is not None and x >= 0.9 for x in vals) else "no"))
    return rows


def _bit_flips(domains: dict) -> SubClaim:
    """Holds if in every domain flipping the exponent bit of the largest number of top weights
    tried redirects at least half of the other inputs toward the weaker target."""
    first = next(iter(domains.values()))
    bit = [k for k in next(iter(first["attacks"].values()))["rows"] if k["attack"].startswith("bit_flip")]
    kind = bit[0]["attack"] if bit else "bit_flip_30"
    top = max((r["magnitude"] for r in bit), default=0.0)
    vals = [_flip(d, kind, top) for d in domains.values()]
    return (f"flipping the exponent bit of {top:g} top weights redirects (≥ 0.5)",
            [num(x) for x in vals], "yes" if all(x is not None and x >= 0.5 for x in vals) else "no")



# the figure texts summaries stored before `PAPER_FIGURES` (unmarked) -> the figure they quote
STORED_FIGURES = {PAPER_Z.value: PAPER_Z, PAPER_RHO.value: PAPER_RHO, "plateau then collapse (figure)": PAPER_CURVE,
                  PAPER_CURVE.value: PAPER_CURVE}


def paper_text(stored: str | None) -> str | None:
    """A stored verdict's paper figure as the report shows it: a figure of `PAPER_FIGURES`
    (stored marked or not) with its sourced / unsourced mark; other text unchanged."""
    fig = STORED_FIGURES.get(stored) if stored else None
    return fig.text() if fig else stored


# ---------------------------------------------------------------- seeds: verdict stability over runs
STABLE_SHARE = 2 / 3  # a task's outcome needs this share of its runs (and, for "reproduced", no contradiction)


def stability(outcomes: list[str]) -> str:
    """A task's outcome over its runs (pre-registered): reproduced if at least 2/3 of the runs
    reproduce and none gives "not reproduced"; not reproduced if at least 2/3 give "not
    reproduced"; else inconclusive (also with no runs)."""
    n = len(outcomes)
    if n == 0:
        return "inconclusive"
    share = {o: sum(x == o for x in outcomes) / n for o in ("reproduced", "not reproduced")}
    if share["reproduced"] >= STABLE_SHARE - 1e-12 and share["not reproduced"] == 0:
        return "reproduced"
    if share["not reproduced"] >= STABLE_SHARE - 1e-12:
        return "not reproduced"
    return "inconclusive"


def stability_text(outcomes: list[str]) -> str:
    """How many runs gave each outcome: "7 of 9 runs: reproduced; 2: inconclusive"."""
    counts = [(o, sum(x == o for x in outcomes)) for o in ("reproduced", "not reproduced", "inconclusive")]
    counts = [(o, c) for o, c in counts if c]
    if not counts:
        return "no run"
    first, rest = counts[0], counts[1:]
    return f"{first[1]} of {len(outcomes)} runs: {first[0]}" + "".join(f"; {c}: {o}" for o, c in rest)


STABILITY_RULE = ("each run (per text task: fine-tune seed × probe seed; per image task: zoo member × probe seed) "
                  "is judged alone by the rule above; per task, reproduced if at least 2/3 of its runs reproduce and "
                  "none gives not reproduced, not reproduced if at least 2/3 give not reproduced, else inconclusive; "
                  "over tasks as before")


def _over_runs(judge, runs: dict, label: str = "") -> Verdict:
    """One sub-claim over runs: `judge` ({task: run} -> Verdict) on every run of every task alone,
    `stability` per task, `_overall` over the tasks; claim, power, source and paper figure from
    the judge's verdict on each task's first run (its seed-0 run), the rule extended by
    `STABILITY_RULE`, the evidence the per-task stability with the first run's evidence."""
    outs, ev = [], []
    for name, rs in runs.items():
        per_run = [judge({name: r}).outcome for r in rs]
        o = stability(per_run)
        outs.append(o)
        ev.append(f"{name}: {stability_text(per_run)} → {o}")
    first = judge({n: rs[0] for n, rs in runs.items() if rs})
    return dataclasses.replace(first, outcome=_overall(outs) if outs else "inconclusive",
                               rule=f"{first.rule}; over runs: {STABILITY_RULE}",
                               evidence="; ".join(ev) + f"; first run of each task: {first.evidence}")


def seeded_verdicts(runs: dict, domains: dict) -> list[Verdict]:
    """Every SYNAPSE sub-claim's verdict over the reference arm's runs ({task: [run, ...]}, each
    run a `synapse_reference.run_task` result; the first run of a task is its seed-0 run), then the
    manipulations (not seeded: the layer-wise arm) and the last-block inversion (an extension)."""
    vs = [_over_runs(beats_random, runs), _over_runs(attribution_agreement, runs),
          _over_runs(plateau_collapse, runs)]
    multi = {n: rs for n, rs in runs.items() if rs and rs[0]["asymmetry"] is not None}
    vs.append(_over_runs(class_asymmetry, multi) if multi else class_asymmetry({}))
    pooled = {n: rs for n, rs in runs.items() if rs and rs[0]["pooler"]}
    if pooled:
        vs.append(_over_runs(lambda t: beats_random(t, ALL_LAYERS_POOLER), pooled))
    vs += attack_verdicts(domains)
    if all(r.get("inversion") for rs in runs.values() for r in rs):
        vs.append(last_block_inversion(runs))
    return vs


# ------------------------------------------------------------ the last-block inversion (an extension)
INVERSION_Z = 3.0  # "inverted" at a k: the top-k% drop ≥ 3 random SDs below the random mean …


def inversion_k_state(top: dict, bottom: dict | None) -> str:
    """One k level of one run, at the last block alone (cells as `SilencingResult.controls`:
    drop, z, p against the within-block random draws). "inverted": the top-k% drop lies below
    every random draw's (p = 1: all R draws ≥ it), with z ≤ −`INVERSION_Z`, and the bottom-k%
    drop exceeds it; "aligned": the top-k% drop is at least the random mean (z ≥ 0), which
    contradicts an inversion; else "unresolved"."""
    p = _f(top.get("p"))
    below_all = p >= 1 - 1e-12
    # a null z (JSON's inf) comes from draws without spread: −inf if they all lie above the drop
    z = _f(top["z"]) if top.get("z") is not None else -math.inf if below_all else math.inf
    if below_all and z <= -INVERSION_Z and bottom is not None and _f(bottom["drop"]) > _f(top["drop"]):
        return "inverted"
    if z >= 0:
        return "aligned"
    return "unresolved"


def _inv_cells(run: dict, selection: str, ablation: str, score: str) -> dict:
    return {float(c["k_percent"]): c for c in run["inversion"] if c["selection"] == selection
            and c["ablation"] == ablation and c["score"] == score}


def inversion_run(run: dict, ablation: str = "zero", score: str = "margin") -> tuple[str, dict]:
    """One run's inversion outcome at the last block (pre-registered; decided on the zeroed
    margin, the other ablation / score reported with the same rule): per k level
    `inversion_k_state`; reproduced (inverted) if at least half the k levels are inverted and
    none aligned; not reproduced if at least half are aligned; inconclusive otherwise, and
    whenever the positive control (the activation × gradient top-k% of the block) beats the
    random draws (p at its floor, z ≥ 3) at none of the k levels: then the block's margin does
    not tell a ranking from random. Returns (outcome, counts)."""
    top, bottom = _inv_cells(run, "top", ablation, score), _inv_cells(run, "bottom", ablation, score)
    att = _inv_cells(run, "attribution", ablation, score)
    states = [inversion_k_state(top[k], bottom.get(k)) for k in sorted(top)]
    n = len(states)
    counts = {s: states.count(s) for s in ("inverted", "aligned", "unresolved")}
    counts["n"] = n
    counts["positive"] = sum(_beats_all(c) for c in att.values())
    if n == 0 or (att and counts["positive"] == 0):
        return "inconclusive", counts
    if counts["inverted"] >= n / 2 and counts["aligned"] == 0:
        return "reproduced", counts
    if counts["aligned"] >= n / 2:
        return "not reproduced", counts
    return "inconclusive", counts


def last_block_inversion(runs: dict) -> Verdict:
    """The candidate last-block inversion, per run (`inversion_run` on the zeroed margin), per task
    over runs (`stability`), over tasks `_overall`; mean-ablated and KL outcomes reported beside."""
    outs, ev, power = [], [], []
    for name, rs in runs.items():
        per_run = [inversion_run(r)[0] for r in rs]
        o = stability(per_run)
        outs.append(o)
        beside = "; ".join(f"{ab} {sc}: {stability_text([inversion_run(r, ab, sc)[0] for r in rs])}"
                           for ab, sc in (("mean", "margin"), ("zero", "kl"), ("mean", "kl")))
        first = rs[0]
        top, bottom = _inv_cells(first, "top", "zero", "margin"), _inv_cells(first, "bottom", "zero", "margin")
        att = _inv_cells(first, "attribution", "zero", "margin")
        nums = ", ".join(f"k = {k:g}%: top {num(_f(top[k]['drop']), 2)} (z {num(_f(top[k]['z']), 1)}, p "
                         f"{num(_f(top[k]['p']), 2)}) / bottom {num(_f(bottom[k]['drop']), 2) if k in bottom else '–'} / "
                         f"random {num(_f(top[k]['random_mean']), 2)} / act×grad "
                         f"{num(_f(att[k]['drop']), 2) if k in att else '–'}" for k in sorted(top))
        ev.append(f"{name}: zeroed margin {stability_text(per_run)} → {o} (beside: {beside}); first run: {nums}")
        draws = sorted({int(c["draws"]) for r in rs for c in r["inversion"] if c.get("draws")})
        power.append(f"{name}: {'/'.join(map(str, draws))} within-block draws, p floor "
                     + "/".join(f"1/{d + 1}" for d in draws))
    return Verdict(
        claim="at the last block alone the probe's ranking is inverted on the true-class margin (its top-k% lowers the "
              "margin less than random k% of the block, its bottom-k% more)",
        outcome=_overall(outs) if outs else "inconclusive",
        rule=f"per run and k level, zeroed at the last block's [CLS] only: inverted when the top-k% margin drop lies "
             f"below every within-block random draw's with z ≤ −{INVERSION_Z:g} and the bottom-k% drop exceeds it; "
             "aligned when the top-k% drop is at least the random mean (z ≥ 0); per run, reproduced (inverted) if at "
             "least half the k levels are inverted and none aligned, not reproduced if at least half are aligned, "
             "else inconclusive, and inconclusive where the activation × gradient top-k% of the block beats the "
             f"random draws at no k level; over runs: {STABILITY_RULE}; mean-ablation and KL reported, not deciding",
        power="an inversion is seen when the top-k% drop is at least 3 random SDs below the random mean and below all "
              "R draws (a ranking no better or worse than random lies below all R with chance 1/(R + 1)): "
              + "; ".join(power),
        evidence="; ".join(ev) or "no run", source="extension")
