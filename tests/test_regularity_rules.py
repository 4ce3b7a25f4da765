"""Claim 1's rule over several probed models on planted per-run outcomes."""

from __future__ import annotations

from reproduce.rules import regularity as rules

UP = {"rho": 0.5, "lo": 0.2, "hi": 0.7, "n": 1000}
MID = {"rho": 0.1, "lo": -0.2, "hi": 0.4, "n": 1000}
DOWN = {"rho": -0.3, "lo": -0.6, "hi": -0.1, "n": 1000}


def _run(c: dict, s: dict, i: int) -> dict:
    return {"escape_vs_cscore": c, "escape_vs_learning_speed": s, "probed_model": i}


def test_over_runs_has_three_outcomes():
    assert rules.over_runs(["reproduced"] * 3) == "reproduced"
    assert rules.over_runs(["reproduced", "reproduced", "inconclusive"]) == "reproduced"
    assert rules.over_runs(["reproduced", "reproduced", "not reproduced"]) == "inconclusive"  # one contradicts
    assert rules.over_runs(["not reproduced", "not reproduced", "reproduced"]) == "not reproduced"
    assert rules.over_runs(["reproduced", "inconclusive", "inconclusive"]) == "inconclusive"
    assert rules.over_runs(["reproduced", "inconclusive"]) == "inconclusive"  # 1 of 2 is below 2/3
    assert rules.over_runs([]) == "inconclusive"


def test_verdicts_over_runs_count_each_run():
    runs = [_run(UP, UP, 0), _run(UP, MID, 1), _run(UP, DOWN, 2)]
    vs = rules.verdicts_over_runs(runs)
    assert [v.outcome for v in vs] == ["reproduced", "inconclusive"]
    assert vs[0].evidence.startswith("3 of 3 reproduced") and "model 2: ρ = " in vs[0].evidence
    assert "1 of 3 reproduced, 1 of 3 not reproduced, 1 of 3 inconclusive" in vs[1].evidence
    assert rules.verdict_over_runs(runs)[0] == "inconclusive"
    assert rules.verdict_over_runs([_run(DOWN, DOWN, i) for i in range(3)])[0] == "not reproduced"
