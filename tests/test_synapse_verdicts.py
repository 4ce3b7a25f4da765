"""SYNAPSE's three-valued verdict rules (scripts/reproduce/rules/synapse.py, re-exported by
synapse_reference) on hand-made results: a powerless case is inconclusive, a planted effect
reproduces, a powered null does not."""

from __future__ import annotations

import numpy as np

from reproduce import synapse_reference as ref  # scripts/reproduce/ (pyproject: pytest pythonpath)
from reproduce.rules import synapse as rules
from reproduce.verdicts import OUTCOMES


def _task(drops, random_means, z, clean=0.9, chance=0.25, n=300, curve=None, asym=None, rho=0.5):
    controls = [{"site": "all layers", "k_percent": k, "clean": clean, "drop": d, "random_mean": r,
                 "random_std": 0.01, "z": zz, "p": 0.09}
                for k, d, r, zz in zip((5.0, 10.0, 50.0), drops, random_means, z)]
    curve = curve or [{"k_percent": k, "top_drop": d, "random_drop": 0.0} for k, d in ((2.5, 0.0), (50.0, 0.7))]
    return {"controls": controls, "min_detectable_drop": 5 / n, "n_eval": n, "clean": {"accuracy": clean},
            "chance": chance, "curve": curve, "asymmetry": asym, "min_class_support": n // 4,
            "spearman_attribution": rho, "spearman_attribution_layers": [rho], "n_neurons": 2304,
            "sites": ["blocks.0.hook_resid_post"], "pooler": False}


def _plateau_cells(drop, clean=2.0, ks=(2.5, 5.0, 10.0)):
    """Margin cells of the zeroed top-k% at the plateau's k: each lowers the clean margin by `drop`."""
    return [{"site": "all layers", "selection": "top", "ablation": "zero", "score": "margin", "k_percent": k,
             "clean": clean, "drop": drop} for k in ks]


def test_beats_random_three_ways():
    powerless = {"t": _task([0.0, 0.0, 1 / 300], [0.0, 0.0, 0.0], [float("inf")] * 3)}  # one flip: below 5
    planted = {"t": _task([0.05, 0.2, 0.6], [0.0, 0.01, 0.05], [20.0, 25.0, 30.0])}
    null = {"t": _task([0.05, 0.2, 0.6], [0.05, 0.19, 0.6], [0.1, 0.5, 0.0])}
    assert ref.beats_random(powerless).outcome == "inconclusive"
    assert ref.beats_random(planted).outcome == "reproduced"
    assert ref.beats_random(null).outcome == "not reproduced"
    v = ref.beats_random(planted)
    assert "z" in v.paper and "0.017" in v.power and v.outcome in OUTCOMES
    # over tasks: one not reproduced task makes the sub-claim not reproduced
    assert ref.beats_random({**planted, "u": null["t"]}).outcome == "not reproduced"
    assert ref.beats_random({**planted, "u": powerless["t"]}).outcome == "inconclusive"


def test_curve_asymmetry_and_agreement_rules():
    flat = [{"k_percent": k, "top_drop": 0.0, "random_drop": 0.0} for k in (2.5, 50.0, 95.0)]
    early = [{"k_percent": k, "top_drop": d, "random_drop": 0.0} for k, d in ((2.5, 0.5), (50.0, 0.6), (95.0, 0.6))]
    def plateau(drop=0.05, **kw):  # margin drop 0.05 of a clean margin 2.0: within 10%
        return ref.plateau_collapse({"t": {**_task([0] * 3, [0] * 3, [0] * 3, **kw),
                                           "control_cells": _plateau_cells(drop)}}).outcome

    assert plateau() == "reproduced"
    assert plateau(curve=flat) == "not reproduced"  # no collapse
    assert plateau(curve=early) == "not reproduced"  # accuracy falls at once
    assert plateau(clean=0.25) == "inconclusive"  # no room above chance
    # the margin decides the plateau: flat accuracy with the margin down 25% at k <= 10% is no plateau
    assert plateau(drop=0.5) == "not reproduced"
    # without margin cells at the plateau's k the plateau is not measured
    assert ref.plateau_collapse({"t": _task([0] * 3, [0] * 3, [0] * 3)}).outcome == "inconclusive"
    diag = (np.eye(4) * 0.3 + 0.02).tolist()
    off = (0.3 - np.eye(4) * 0.3).tolist()
    tiny = (np.eye(4) * 0.01).tolist()
    assert ref.class_asymmetry({"t": _task([0] * 3, [0] * 3, [0] * 3, asym=diag)}).outcome == "reproduced"
    assert ref.class_asymmetry({"t": _task([0] * 3, [0] * 3, [0] * 3, asym=off)}).outcome == "not reproduced"
    assert ref.class_asymmetry({"t": _task([0] * 3, [0] * 3, [0] * 3, asym=tiny)}).outcome == "inconclusive"
    # own > other in every class, but by 0.05 < the detectable 5/75: unresolved, so inconclusive
    small = (np.eye(4) * 0.05 + 0.1).tolist()
    v = ref.class_asymmetry({"t": _task([0] * 3, [0] * 3, [0] * 3, asym=small)})
    assert v.outcome == "inconclusive" and "unresolved 4" in v.evidence
    assert ref.attribution_agreement({"t": _task([0] * 3, [0] * 3, [0] * 3, rho=0.5)}).outcome == "reproduced"
    assert ref.attribution_agreement({"t": _task([0] * 3, [0] * 3, [0] * 3, rho=0.02)}).outcome == "not reproduced"
    wide = {**_task([0] * 3, [0] * 3, [0] * 3, rho=0.05), "n_neurons": 64}  # one layer of 64: ±0.25
    assert ref.attribution_agreement({"t": wide}).outcome == "inconclusive"
    assert ref.attribution_agreement({"t": _task([0] * 3, [0] * 3, [0] * 3, rho=float("nan"))}).outcome == "inconclusive"


def _cell(variant, selection, ablation, score, k, drop, layer=None, uniform=None, R=10, clean=10.0):
    """One control cell as `synapse_reference.control_cells` writes it: the ranked drop against
    R uniform draws (mean `uniform`, above the ranked drop where p is not at its floor) and, for
    the top-k%, R layer-matched ones (mean `layer`)."""
    def ctrl(mean, prefix=""):
        if mean is None:
            return {f"{prefix}z": None, f"{prefix}p": None, f"{prefix}random_mean": None,
                    f"{prefix}random_std": None, f"{prefix}draws": None}
        sd = 0.01
        beats = drop > mean + 3 * sd  # the draws lie within mean ± 3 sd
        return {f"{prefix}z": (drop - mean) / sd, f"{prefix}p": 1 / (R + 1) if beats else 0.5,
                f"{prefix}random_mean": mean, f"{prefix}random_std": sd, f"{prefix}draws": R}

    lay = ctrl(layer, "layer_")
    return {"site": variant, "selection": selection, "ablation": ablation, "k_percent": k, "score": score,
            "clean": clean, "value": clean - drop, "drop": drop, **ctrl(uniform), "layer_random_mean": lay["layer_random_mean"],
            "layer_random_std": lay["layer_random_std"], "layer_z": lay["layer_z"], "layer_p": lay["layer_p"],
            "layer_draws": lay["layer_draws"]}


def _margin_task(top, layer, uniform, attribution=None, acc_drop=0.0):
    """A task whose zeroed top-k% margin drops `top` per k face layer-matched / uniform random means;
    `attribution`: the positive control's margin drops (None: not run)."""
    ks = (2.5, 10.0, 50.0)
    cells = []
    for k, t, lm, um in zip(ks, top, layer, uniform):
        cells += [_cell("all layers", "top", "zero", "margin", k, t, layer=lm, uniform=um),
                  _cell("all layers", "top", "zero", "accuracy", k, acc_drop, layer=0.0, uniform=0.0),
                  _cell("all layers", "top", "zero", "kl", k, 0.1, layer=0.05, uniform=0.0)]
    for k, a in zip(ks, attribution or ()):
        cells.append(_cell("all layers", "attribution", "zero", "margin", k, a, uniform=0.0))
    t = _task([acc_drop] * 3, [0.0] * 3, [0.0] * 3)
    return {**t, "control_cells": cells, "n_random": 10}


def test_beats_random_decides_on_the_margin_against_layer_matched_draws():
    """The margin rule: the ranked drop must clear every layer-matched draw (p at its floor 1/11,
    z >= 3); beating only the uniform draws is not enough; a positive control that beats nothing
    makes the task inconclusive; no accuracy flip is needed."""
    planted = {"t": _margin_task([1.0, 2.0, 3.0], [0.1, 0.2, 0.3], [0.0, 0.0, 0.0], attribution=[1.0, 1.0, 1.0])}
    layer_only = {"t": _margin_task([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0], attribution=[1.0, 1.0, 1.0])}
    blind = {"t": _margin_task([1.0, 2.0, 3.0], [0.1, 0.2, 0.3], [0.0, 0.0, 0.0], attribution=[0.0, 0.0, 0.0])}
    no_control = {"t": _margin_task([1.0, 2.0, 3.0], [0.1, 0.2, 0.3], [0.0, 0.0, 0.0])}
    assert ref.beats_random(planted).outcome == "reproduced"  # accuracy did not move (acc_drop 0)
    v = ref.beats_random(layer_only)
    assert v.outcome == "not reproduced"  # the last layer's random units do as much as the ranked ones
    # decided at k = 50% only (2.5% and 10% are the plateau's levels)
    assert "0/1 k levels beat the layer-matched draws" in v.evidence and "1/1 the uniform ones" in v.evidence
    assert ref.beats_random(blind).outcome == "inconclusive"
    assert ref.beats_random(no_control).outcome == "reproduced" and "not run" in ref.beats_random(no_control).power
    assert "1/11" in v.rule and "true-class margin" in v.claim
    # one task of two not reproduced: the sub-claim is not
    assert ref.beats_random({**planted, "u": layer_only["t"]}).outcome == "not reproduced"
    # a summary written before the control cells is judged by the accuracy rule it was judged by
    old = {"t": _task([0.05, 0.2, 0.6], [0.0, 0.01, 0.05], [20.0, 25.0, 30.0])}
    assert ref.beats_random(old).outcome == "reproduced" and "ranked − random drop" in ref.beats_random(old).rule
    # JSON writes z = +inf (draws without spread, all below) as null: with p at its floor it still beats them
    inf = _margin_task([1.0, 2.0, 3.0], [0.1, 0.2, 0.3], [0.0, 0.0, 0.0], attribution=[1.0, 1.0, 1.0])
    for c in inf["control_cells"]:
        c["layer_z"] = None if c["layer_p"] is not None and c["layer_p"] < 0.1 else c["layer_z"]
    assert ref.beats_random({"t": inf}).outcome == "reproduced"
    # wins on the plateau (k <= 10%) do not count: beating random only there is not reproduced
    small_k = {"t": _margin_task([1.0, 2.0, 0.3], [0.1, 0.2, 0.3], [0.0, 0.0, 0.0], attribution=[1.0, 1.0, 1.0])}
    v = ref.beats_random(small_k)
    assert v.outcome == "not reproduced" and "on the plateau (k ≤ 10%): 2/2 beat" in v.evidence
    assert "unsourced" in v.paper


def test_beats_random_is_decided_only_where_the_layer_matched_control_can_differ():
    """The revised 5.1 levels: a k past the plateau decides only when a layer-matched draw misses at
    least half the ranked share a uniform draw misses and the draws leave >= 10% of the clean
    margin; a task with no such level is inconclusive, whatever its z."""
    assert rules.layer_overlap([0, 0, 384], 384) == 1.0 and rules.contrast([0, 0, 384], 384) == 0.0
    assert abs(rules.layer_overlap([10, 10, 10], 100) - 0.1) < 1e-12 and abs(rules.contrast([10, 10, 10], 100) - 1) < 1e-12
    # 90 of 300 (k = 0.3): overlap (30² + 60²) / 100 / 90 = 0.5, contrast 0.5 / 0.7
    assert abs(rules.contrast([0, 30, 60], 100) - 0.5 / 0.7) < 1e-12
    spread = _margin_task([1.0, 2.0, 3.0], [0.1, 0.2, 0.3], [0.0, 0.0, 0.0], attribution=[1.0, 1.0, 1.0])
    spread.update(top_layer_counts={"2.5": [3, 3, 3], "10": [10, 10, 10], "50": [50, 50, 50]}, layer_width=100)
    assert ref.beats_random({"t": spread}).outcome == "reproduced"  # contrast 1 at every level
    # k = 50% with the last layer full: overlap (50² + 100²) / 100 / 150 = 0.83, contrast 0.17 / 0.5 = 0.33
    filled = {**spread, "top_layer_counts": {**spread["top_layer_counts"], "50": [0, 50, 100]}}
    v = ref.beats_random({"t": filled})
    assert v.outcome == "inconclusive" and "not decidable" in v.evidence and "shares 0.83" in v.evidence
    assert "contrast 0.33 < 0.5" in v.evidence
    # the same z, but the layer-matched draws already took 95% of the clean margin (10): nothing left to beat
    floor = _margin_task([1.0, 2.0, 9.9], [0.1, 0.2, 9.5], [0.0, 0.0, 0.0], attribution=[1.0, 1.0, 1.0])
    floor.update(top_layer_counts=spread["top_layer_counts"], layer_width=100)
    v = ref.beats_random({"t": floor})
    assert v.outcome == "inconclusive" and "leave 0.50 of the clean margin 10.00" in v.evidence
    assert "no decidable k level" in v.power
    # a model already wrong on average (clean mean margin below 0) has no margin to lose
    wrong = {**floor, "control_cells": [{**c, "clean": -0.04} for c in spread["control_cells"]]}
    assert "is not positive" in ref.beats_random({"t": wrong}).evidence
    # one decidable task that beats random and one that cannot decide: inconclusive, not reproduced
    assert ref.beats_random({"a": spread, "b": filled}).outcome == "inconclusive"
    # an undecidable level is left out; a decidable one still decides (here k = 50% only, not beaten)
    beaten_nowhere = {**spread, "control_cells": _margin_task([1.0, 2.0, 0.3], [0.1, 0.2, 0.3], [0.0, 0.0, 0.0],
                                                               attribution=[1.0, 1.0, 1.0])["control_cells"]}
    assert ref.beats_random({"t": beaten_nowhere}).outcome == "not reproduced"
    # plateau cells without layer-matched draws are not counted as losses
    for c in beaten_nowhere["control_cells"]:
        if c["k_percent"] <= 10:
            c.update(layer_draws=None, layer_p=None, layer_z=None, layer_random_mean=None)
    assert "on the plateau" not in ref.beats_random({"t": beaten_nowhere}).evidence


def test_attribution_agreement_decides_per_layer():
    """Per-layer ρ of 0.05, 0.02, −0.03, 0.04 over 4 layers of 1024 (mean Fisher z ρ ≈ 0.02,
    interval up to ≈ 0.05 < 0.1) is not reproduced whatever the concatenated ρ; 0.6 in every layer
    is; the paper's unsourced 0.46 decides nothing (0.3 everywhere reproduces)."""
    layers = [0.05, 0.02, -0.03, 0.04]
    low = {**_task([0] * 3, [0] * 3, [0] * 3, rho=0.9), "spearman_attribution_layers": layers,
           "n_neurons": 4096, "sites": ["a", "b", "c", "d"]}
    high = {**low, "spearman_attribution": 0.04, "spearman_attribution_layers": [0.6] * 4}
    v = ref.attribution_agreement({"t": low})
    assert v.outcome == "not reproduced" and "over the concatenation ρ = 0.900" in v.evidence
    zbar = np.mean(np.arctanh(layers))
    hi = np.tanh(zbar + 1.96 / np.sqrt(4 * 1021))
    assert f"mean (Fisher z) {np.tanh(zbar):.3f}" in v.evidence and f"{hi:.3f}]" in v.evidence and hi < 0.1
    assert ref.attribution_agreement({"t": high}).outcome == "reproduced"
    mid = {**low, "spearman_attribution_layers": [0.3] * 4}
    assert ref.attribution_agreement({"t": mid}).outcome == "reproduced" and "unsourced" in v.paper
    assert ref.attribution_agreement({"t": {**low, "spearman_attribution_layers": []}}).outcome == "inconclusive"


def _attacks(flips):
    """A domain's attack rows: {target: {attack: flip_to_target at its verdict magnitude}}."""
    mags = {"logit_bias": 8.0, "column_push_reference": 0.3, "column_push_signed": 5.0, "bit_flip_30": 8}
    return {"n_probe_test": 400, "attacks": {t: {"median_clean_margin": 1.0, "rows": [
        {"attack": a, "magnitude": mags[a], "flip_to_target": f} for a, f in fl.items()]} for t, fl in flips.items()}}


def test_attack_verdicts_judge_the_reference_push_and_the_fixed_signed_push_apart():
    both = {"logit_bias": 1.0, "column_push_reference": 0.9, "column_push_signed": 1.0, "bit_flip_30": 0.1}
    weak = {**both, "column_push_reference": 0.05}
    vs = ref.attack_verdicts({"d": _attacks({"neg": both, "pos": weak})})
    by = {v.claim.split(" ")[0] + v.source: v for v in vs}
    assert [v.source for v in vs] == ["reference code", "reference code", "extension", "extension"]
    ref_push, signed = vs[1], vs[2]
    assert "reference code's push" in ref_push.claim and ref_push.outcome == "not reproduced"  # the weaker target
    assert "neg 0.900" in ref_push.evidence and "pos 0.050" in ref_push.evidence
    assert "sign-aware" in signed.claim and signed.outcome == "reproduced"
    assert by and vs[0].outcome == "reproduced" and vs[3].outcome == "not reproduced"
    # a summary from before the reference push: the signed push is judged as the reference's, as it was
    old = {t: {k: v for k, v in f.items() if k != "column_push_reference"} for t, f in {"neg": both, "pos": both}.items()}
    vs = ref.attack_verdicts({"d": _attacks(old)})
    assert [v.source for v in vs] == ["reference code", "reference code", "extension"] and "sign-aware" in vs[1].claim
