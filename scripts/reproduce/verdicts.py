"""Three-valued verdicts for the reproduction's sub-claims.

A verdict is decided by a rule written in the claim's code before any number is seen. Each one
says what the test could have detected (its power: the smallest effect it could see), where the
claim comes from (the paper's abstract, its reference code, or our extension) and, where the
paper states a magnitude, that figure next to ours. "inconclusive" is the honest outcome when the
test could not have told the claim from its negation (too few models, drops below resolution, a
baseline that explains the effect alone).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Outcome = Literal["reproduced", "not reproduced", "inconclusive"]
Source = Literal["abstract", "reference code", "paper", "extension"]
OUTCOMES: tuple[str, ...] = ("reproduced", "not reproduced", "inconclusive")


@dataclass(frozen=True)
class Verdict:
    """One sub-claim's verdict.

    Attributes:
        claim: what is tested, in one line.
        outcome: "reproduced", "not reproduced" or "inconclusive".
        rule: the decision rule, fixed before the numbers ("reproduced if the 95% interval of … lies
            above …; not reproduced if it lies below …; else inconclusive").
        power: the smallest effect the test could detect, in words with a number.
        evidence: the numbers the rule was applied to.
        source: where the claim is asserted: "abstract", "paper", "reference code" or "extension".
        paper: the paper's (or reference code's) own figure, when it states one; else None.
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
