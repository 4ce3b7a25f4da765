"""Claim 4's decision rules (large-σ backdoor bias), kept apart from the code that computes the numbers.

Everything that decides this claim's verdicts lives here and only here: the thresholds, what is
compared with what, the multiplicity correction, the three-valued outcome (reproduced / not
reproduced / inconclusive), the power statement and the rule text the report quotes. The claim
script (`reproduce.backdoor_bias`) computes the numbers and renders its section; it imports these
functions. A summary records the last commit that changed this file (`rules_commit`), and the
report marks the claim stale when this file has changed since (`reproduce.provenance`).

Pre-registered: these rules were written and committed before the full-size run of this
protocol (fixed site sets, fixed σ grid, no calibration models). The earlier protocol (site set
and σ chosen on calibration models) had been run; its numbers chose nothing here: the smallest
excess (+0.1 of share) is the earlier rules' figure, unchanged.

The measured quantity, per cell (family, site set, σ): the target-share excess — each backdoored
model's share of perturbed predictions on its own target class minus the clean models' share of
the same class (matched by target, `backdoor.target_shares`), as a Welch difference of two
independent groups of models (`stats.welch_difference`: models are the units). The placebo of a
cell is the same difference read at the class after the target ((t + 1) mod C, never a target),
where a backdoor predicts no excess.

Families of tests (each corrected on its own, Holm over all its cells):

- ``all_blocks`` (primary): noise on every block's output at once (APEX's default sites), one
  test per σ of the grid: m = G tests.
- ``single_block`` (extension): noise on one block's output, one test per (block, σ): m = L × G.
- ``input_noise`` (extension, the baseline arm): the same σ grid as noise on the input pixels
  (× their RMS): m = G tests.

Rule of a family (`family_test`), α = 0.05, smallest excess of interest Δ = +0.1 (a uniform
share is 0.1 with 10 classes: "pronounced" = the target's share at least doubled):

- reproduced if some cell's one-sided test of H0 "excess ≤ 0" is rejected by Holm at α (family-
  wise) and that cell's excess is ≥ Δ, unless the placebo family is reproduced by the same rule
  (then the concentration is not specific to the target: inconclusive);
- not reproduced if at every cell the simultaneous one-sided upper bound (Bonferroni, level
  1 − α/m, Welch t) lies below Δ (every excess the family could hide is smaller than the least
  that counts);
- else inconclusive.

Power: per cell, the excess the Bonferroni-level one-sided test detects with 80% power,
(t₁₋α/m + z₀.₈) × SE, in share units, with the numbers of models; the "not reproduced" branch
needs intervals narrow enough to exclude Δ, so an underpowered family cannot end there.

The claim's verdict is the primary family's (`verdicts.combine`: extensions excluded).
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sps

from .. import verdicts as V
from ..reporting import num
from ..stats import holm_adjust
from . import PaperFigure

# The paper's figures these rules quote, and whether each is a quote of the paper's text
# (`rules.PaperFigure`); figures marked unsourced never decide a verdict.
PAPER_FIGURES = (PaperFigure("the APEX abstract states no number for this", "every sub-claim", quote=None, states_none=True),)

SMALLEST_EXCESS = 0.1  # target share above the clean models' share of that class: +10 points (uniform: 0.1)
FAMILIES = ("all_blocks", "single_block", "input_noise")
PRIMARY = "all_blocks"
_CLAIMS = {
    "all_blocks": "with noise on every block's output at large σ, backdoored models' predictions concentrate on "
                  "their target class more than clean models' do on that class",
    "single_block": "with noise on a single block's output at large σ, the same target concentration",
    "input_noise": "with the same σ as noise on the input pixels (the input-noise baseline), the same target "
                   "concentration",
}


def family_test(cells: list[dict], key: str = "excess", alpha: float = V.ALPHA,
                smallest: float = SMALLEST_EXCESS) -> dict:
    """The rule of one family of cells (see the module docstring), on one statistic.

    Args:
        cells: the family's cells, each holding `key`: a `stats.welch_difference` result.
        key: "excess" (the target) or "placebo" (the class after the target).

    Returns:
        {outcome, m, adjusted_p [m] (Holm), upper [m] (simultaneous one-sided bounds), mde [m]
        (80%-power detectable excess at α/m), rejected [m] (Holm), best (index of the smallest
        adjusted p, ties: larger excess)}; outcome "inconclusive" with None lists when a cell's
        test is undefined.
    """
    m = len(cells)
    if m == 0:
        raise ValueError("a family needs at least one cell.")
    ds = [c[key] for c in cells]
    if any(d["p"] is None or d["se"] is None for d in ds):
        return {"outcome": "inconclusive", "m": m, "adjusted_p": None, "upper": None, "mde": None,
                "rejected": None, "best": None}
    adj = holm_adjust([d["p"] for d in ds])
    crit = np.array([sps.t.ppf(1 - alpha / m, d["df"]) for d in ds])
    se = np.array([d["se"] for d in ds])
    mean = np.array([d["mean"] for d in ds])
    upper, mde = mean + crit * se, (crit + sps.norm.ppf(V.POWER)) * se
    rejected = adj < alpha
    best = int(min(range(m), key=lambda i: (adj[i], -mean[i])))
    if np.any(rejected & (mean >= smallest)):
        outcome = "reproduced"
    elif np.all(upper < smallest):
        outcome = "not reproduced"
    else:
        outcome = "inconclusive"
    return {"outcome": outcome, "m": m, "adjusted_p": adj.tolist(), "upper": upper.tolist(), "mde": mde.tolist(),
            "rejected": rejected.tolist(), "best": best}


def family_outcome(cells: list[dict]) -> tuple[str, dict, dict]:
    """(outcome, target test, placebo test) of a family: the target's rule, with a reproduced
    outcome turned inconclusive when the placebo class is reproduced by the same rule."""
    target, placebo = family_test(cells, "excess"), family_test(cells, "placebo")
    outcome = target["outcome"]
    if outcome == "reproduced" and placebo["outcome"] == "reproduced":
        outcome = "inconclusive"
    return outcome, target, placebo


def family_cells(results: dict, family: str) -> list[dict]:
    """The cells of `family` (`FAMILIES`) in the results, in their order."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}.")
    return [c for c in results["cells"] if c["family"] == family]


def _cell_name(c: dict) -> str:
    return f"{c['site_set']}, σ = {c['sigma']:g}"


def _evidence(cells: list[dict], target: dict, placebo: dict) -> str:
    if target["best"] is None:
        return "a cell's test is undefined (fewer than 2 models in a group)"
    b = cells[target["best"]]
    e = b["excess"]
    stable = (f"; {b['above_all_clean']}/{e['n_a']} backdoored models above every clean model's share of their "
              f"target" if "above_all_clean" in b else "")
    worst = int(np.argmax(target["upper"]))
    return (f"best cell {_cell_name(b)}: excess {num(e['mean'])} [{num(e['lo'])}, {num(e['hi'])}], Holm p "
            f"{target['adjusted_p'][target['best']]:.2g}{stable}; {sum(target['rejected'])}/{target['m']} cells "
            f"rejected; largest simultaneous upper bound {num(target['upper'][worst])} ({_cell_name(cells[worst])}); "
            f"placebo class: {placebo['outcome']} ({sum(placebo['rejected'] or [])}/{placebo['m']} cells rejected)")


def _power(cells: list[dict], target: dict) -> str:
    e = cells[0]["excess"]
    if target["mde"] is None:
        return f"{e['n_a']} backdoored vs {e['n_b']} clean models; undefined"
    return (f"{e['n_a']} backdoored vs {e['n_b']} clean models, {target['m']} tests: excess detected with 80% power "
            f"at α/{target['m']} ≈ {num(min(target['mde']))}–{num(max(target['mde']))} of share (per cell)")


def verdicts(results: dict) -> list[V.Verdict]:
    """Claim 4's rules (pre-registered: see the module docstring): one verdict per family of
    `FAMILIES`, the all-blocks family primary, single blocks and input noise extensions."""
    out = []
    for family in FAMILIES:
        cells = family_cells(results, family)
        if not cells:
            continue
        outcome, target, placebo = family_outcome(cells)
        m = len(cells)
        out.append(V.Verdict(
            claim=_CLAIMS[family], outcome=outcome, source="abstract" if family == PRIMARY else "extension",
            paper=V.no_figure(),
            rule=(f"per cell a one-sided Welch test over models of the target-share excess (H0: ≤ 0), Holm over the "
                  f"family's {m} cells; reproduced if a rejected cell has excess ≥ +{SMALLEST_EXCESS} and the placebo "
                  f"class (target + 1) is not reproduced by the same rule; not reproduced if every cell's "
                  f"simultaneous one-sided upper bound (level 1 − {V.ALPHA}/{m}) is below +{SMALLEST_EXCESS}; else "
                  f"inconclusive"),
            power=_power(cells, target), evidence=_evidence(cells, target, placebo)))
    return out


def verdict(results: dict) -> tuple[str, str]:
    """Claim 4's overall outcome: `verdicts.combine` of `verdicts(results)` (the all-blocks family
    decides; single blocks and input noise are extensions).

    Returns:
        (outcome, one sentence naming each family's outcome).
    """
    vs = verdicts(results)
    return V.combine(vs), "; ".join(f"{v.claim}: {v.outcome}" for v in vs) + "."
