"""Three-valued verdicts for the reproduction's sub-claims.

A verdict is decided by a rule in the claim's rules module (`reproduce.rules.<claim>`). Each one
says what the test could have detected (its power: the smallest effect it could see), where the
claim comes from (the paper's abstract, its reference code, or our extension) and, where the
paper states a magnitude, that figure next to ours. "inconclusive" is the honest outcome when the
test could not have told the claim from its negation (too few models, drops below resolution, a
baseline that explains the effect alone).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

Outcome = Literal["reproduced", "not reproduced", "inconclusive"]
Source = Literal["abstract", "reference code", "paper", "extension"]
OUTCOMES: tuple[str, ...] = ("reproduced", "not reproduced", "inconclusive")


@dataclass(frozen=True)
class Verdict:
    """One sub-claim's verdict.

    Attributes:
        claim: what is tested, in one line.
        outcome: "reproduced", "not reproduced" or "inconclusive".
        rule: the decision rule as its rules module states it ("reproduced if the 95% interval of … lies
            above …; not reproduced if it lies below …; else inconclusive").
        power: the smallest effect the test could detect, in words with a number.
        evidence: the numbers the rule was applied to.
        source: where the claim is asserted: "abstract", "paper", "reference code" or "extension".
        paper: the paper's (or reference code's) figure, when one is quoted (`rules.PaperFigure.text`:
            unsourced figures are marked so); else None.
    """

    claim: str
    outcome: Outcome
    rule: str
    power: str
    evidence: str
    source: Source = "abstract"
    paper: str | None = None

    def __post_init__(self):
        if self.outcome not in OUTCOMES:
            raise ValueError(f"verdict outcome {self.outcome!r} is not one of {OUTCOMES}")

    def to_json(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        """One markdown bullet: outcome, claim, rule, power, evidence and the paper's figure."""
        tag = "" if self.source in ("abstract", "paper") else f" ({self.source})"
        paper = f" Paper: {self.paper}." if self.paper else ""
        return (f"- **{self.outcome}**{tag} — {self.claim}. Rule: {self.rule}. Power: {self.power}. "
                f"Found: {self.evidence}.{paper}")


def combine(verdicts: list[Verdict]) -> Outcome:
    """A claim's overall outcome from its primary sub-claims (extensions excluded): reproduced if
    all are, not reproduced if any is, else inconclusive."""
    primary = [v.outcome for v in verdicts if v.source != "extension"] or [v.outcome for v in verdicts]
    if primary and all(o == "reproduced" for o in primary):
        return "reproduced"
    if any(o == "not reproduced" for o in primary):
        return "not reproduced"
    return "inconclusive"


def interval_rule(lo: float | None, hi: float | None, null: float, margin: float = 0.0) -> Outcome:
    """The usual three-way rule on a 95% interval against a null value: reproduced if it lies
    above `null + margin`, not reproduced if it lies entirely below `null + margin` (the effect,
    if any, is smaller than the smallest one the claim needs), inconclusive otherwise or when the
    interval is undefined."""
    if lo is None or hi is None:
        return "inconclusive"
    if lo > null + margin:
        return "reproduced"
    if hi < null + margin:
        return "not reproduced"
    return "inconclusive"


# ------------------------------------------------------------------ power: the smallest detectable effect

ALPHA = 0.05
POWER = 0.8


def _z(q: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(q))


def mde_spearman(n: int, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """The smallest Spearman ρ a two-sided test at `alpha` detects with probability `power` on n
    pairs (Fisher z, SE ≈ 1/√(n − 3)): tanh((z₁₋α/₂ + z_power) / √(n − 3)); None below 4 pairs."""
    if n < 4:
        return None
    return float(np.tanh((_z(1 - alpha / 2) + _z(power)) / np.sqrt(n - 3)))


def mde_interval(lo: float | None, hi: float | None, power: float = POWER, alpha: float = ALPHA) -> float | None:
    """The smallest effect a 95% interval of this width detects with probability `power`: its
    half-width × (z₁₋α/₂ + z_power) / z₁₋α/₂ (≈ 1.43 × the half-width); None if undefined."""
    if lo is None or hi is None:
        return None
    return float((hi - lo) / 2 * (_z(1 - alpha / 2) + _z(power)) / _z(1 - alpha / 2))


def mde_auroc(n_pos: int, n_neg: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest AUROC a one-sided Mann–Whitney test at `alpha` detects with probability
    `power` between n_pos and n_neg units (normal approximation, null SE √((n₊ + n₋ + 1) /
    (12 n₊ n₋))): 0.5 + (z₁₋α + z_power) · SE. Above 1: no separation is reliably detectable."""
    se = np.sqrt((n_pos + n_neg + 1) / (12 * n_pos * n_neg))
    return float(0.5 + (_z(1 - alpha) + _z(power)) * se)


def rank_test_rule(p: float | None, p_min: float | None, mde: float | None, needed: float,
                   alpha: float = ALPHA) -> Outcome:
    """Three-way rule for a one-sided exact rank test over units (models): reproduced if p <
    `alpha`; inconclusive if the design cannot reach `alpha` at all (`p_min` >= alpha) or its
    80%-power detectable effect `mde` exceeds the effect the claim implies (`needed`, e.g.
    AUROC 0.9 for "distinguishes"): the test could have missed the claimed effect; otherwise
    (p >= alpha with a test that would have seen the claimed effect) not reproduced."""
    if p is None:
        return "inconclusive"
    if p < alpha:
        return "reproduced"
    if p_min is None or p_min >= alpha or mde is None or mde > needed:
        return "inconclusive"
    return "not reproduced"


def spearman_rule(d: dict, smallest: float = 0.1) -> Outcome:
    """Three-way rule for a rank correlation with a 95% interval: not reproduced if the interval
    lies below `smallest` (the effect is smaller than the least that would count as agreement:
    ρ = 0.1 by default, or opposite); reproduced if it lies above 0; else inconclusive."""
    lo, hi = d.get("lo"), d.get("hi")
    if lo is None or hi is None:
        return "inconclusive"
    if hi < smallest:
        return "not reproduced"
    return "reproduced" if lo > 0 else "inconclusive"


def no_figure(paper: str = "APEX") -> str:
    """The `paper` text for a sub-claim whose source states no magnitude."""
    return f"the {paper} abstract states no number for this"


def effect_rule(lo: float | None, hi: float | None, null: float, smallest: float) -> Outcome:
    """Three-way rule on a 95% interval with a smallest effect of interest: not reproduced if
    the interval lies below `null + smallest` (any effect is smaller than the least the claim
    needs, or opposite); reproduced if it lies above `null`; else inconclusive (undefined
    intervals too)."""
    if lo is None or hi is None:
        return "inconclusive"
    if hi < null + smallest:
        return "not reproduced"
    return "reproduced" if lo > null else "inconclusive"


def rank_test_power(t: dict) -> str:
    """The power sentence of a `stats.mann_whitney_exact` result over models."""
    n1, n2 = t["n_pos"], t["n_neg"]
    crit, mde = t.get("critical_auroc"), mde_auroc(n1, n2)
    return (f"{n1} vs {n2} models: the exact one-sided test reaches p < {ALPHA} only at AUROC ≥ "
            f"{'n/a (never)' if crit is None else f'{crit:.2f}'}; "
            + (f"AUROC ≥ {mde:.2f} detected with {POWER:.0%} power (normal approximation)" if mde <= 1 else
               f"no AUROC ≤ 1 is detected with {POWER:.0%} power")
            + f"; smallest possible p {t['p_min']:.2g}")
