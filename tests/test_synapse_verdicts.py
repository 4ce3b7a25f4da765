"""SYNAPSE's three-valued verdict rules (scripts/reproduce/synapse_reference.py) on hand-made
results: a powerless case is inconclusive, a planted effect reproduces, a powered null does not."""

from __future__ import annotations

import numpy as np

from reproduce import synapse_reference as ref  # scripts/reproduce/ (pyproject: pytest pythonpath)
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
    assert ref.plateau_collapse({"t": _task([0] * 3, [0] * 3, [0] * 3)}).outcome == "reproduced"
    assert ref.plateau_collapse({"t": _task([0] * 3, [0] * 3, [0] * 3, curve=flat)}).outcome == "not reproduced"
    assert ref.plateau_collapse({"t": _task([0] * 3, [0] * 3, [0] * 3, curve=early)}).outcome == "not reproduced"
    assert ref.plateau_collapse({"t": _task([0] * 3, [0] * 3, [0] * 3, clean=0.25)}).outcome == "inconclusive"
    diag = (np.eye(4) * 0.3 + 0.02).tolist()
    off = (0.3 - np.eye(4) * 0.3).tolist()
    tiny = (np.eye(4) * 0.01).tolist()
    assert ref.class_asymmetry({"t": _task([0] * 3, [0] * 3, [0] * 3, asym=diag)}).outcome == "reproduced"
    assert ref.class_asymmetry({"t": _task([0] * 3, [0] * 3, [0] * 3, asym=off)}).outcome == "not reproduced"
    assert ref.class_asymmetry({"t": _task([0] * 3, [0] * 3, [0] * 3, asym=tiny)}).outcome == "inconclusive"
    assert ref.attribution_agreement({"t": _task([0] * 3, [0] * 3, [0] * 3, rho=0.5)}).outcome == "reproduced"
    assert ref.attribution_agreement({"t": _task([0] * 3, [0] * 3, [0] * 3, rho=0.1)}).outcome == "not reproduced"
    assert ref.attribution_agreement({"t": _task([0] * 3, [0] * 3, [0] * 3, rho=float("nan"))}).outcome == "inconclusive"
