"""Claim 3's decision rules (transitions), kept apart from the code that computes the numbers.

Everything that decides this claim's verdicts lives here and only here: the thresholds, what is
compared with what, the three-valued outcome (reproduced / not reproduced / inconclusive), the
power statement and the rule text the report quotes. The claim script (`reproduce.transitions`) computes
the numbers and renders its section; it imports these functions. A summary records the last commit
that changed this file (`rules_commit`), and the report marks the claim stale when this file has
changed since (`reproduce.provenance`).

These rules were written after the claim's first results existed: they are not pre-registered.
"""

from __future__ import annotations

from .. import verdicts as V
from ..reporting import ci, num
from . import PaperFigure

# The paper's figures these rules quote, and whether each is a quote of the paper's text
# (`rules.PaperFigure`); figures marked unsourced never decide a verdict.
PAPER_FIGURES = (PaperFigure("the APEX abstract states no number for this", "every sub-claim", quote=None, states_none=True),)


SMALLEST_RHO = 0.1  # the least partial agreement that counts


def verdicts(results: dict) -> list[V.Verdict]:
    """Claim 3's rules (not pre-registered: see above) (both from the abstract's "semantically coherent
    prediction transitions", read as: they go where the models' errors go). (1) Beyond the class
    margins: reproduced if the jackknife 95% interval of ρ (transitions vs confusions on disjoint
    inputs) lies above the independence null's ρ, not reproduced if it lies below it, else
    inconclusive. (2) Partial ρ given the margins-only expectations: `verdicts.effect_rule`
    (above 0: reproduced; below 0.1: not reproduced). Summaries without the disjoint
    confusions (older runs) are judged inconclusive: their confusions share inputs with the
    transitions."""
    d = results["spearman_offdiagonal"]
    cells = d.get("n_cells", 90)
    power = (f"{cells} matrix cells (ρ ≥ {num(V.mde_spearman(cells), 2)} detected with 80% power if cells were "
             f"independent); this interval resolves ≈ {num(V.mde_interval(d.get('lo'), d.get('hi')), 2)}")
    if "partial_spearman_given_margins" not in results:
        return [V.Verdict(claim="small-σ transitions follow the confusions", outcome="inconclusive",
                          rule="needs confusions on inputs disjoint from the transitions' (absent in this summary)",
                          power=power, evidence=f"ρ = {ci(d, 'rho')} on shared inputs", paper=V.no_figure())]
    null = results["independence_null_rho"]
    lo, hi = d.get("lo"), d.get("hi")
    beyond = "inconclusive" if lo is None or hi is None else (
        "reproduced" if lo > null else "not reproduced" if hi < null else "inconclusive")
    p = results["partial_spearman_given_margins"]
    return [
        V.Verdict(claim="small-σ transitions agree with the confusions (disjoint inputs) more than the class "
                        "margins alone make them", outcome=beyond, paper=V.no_figure(), power=power,
                  rule=("reproduced if the jackknife 95% interval of ρ lies above the independence null's ρ; not "
                        "reproduced if it lies below it; else inconclusive"),
                  evidence=f"ρ = {ci(d, 'rho')}; independence null ρ = {num(null)}"),
        V.Verdict(claim="the agreement survives the margins (partial ρ given the margins-only expectations)",
                  outcome=V.effect_rule(p.get("lo"), p.get("hi"), 0.0, SMALLEST_RHO), paper=V.no_figure(),
                  rule=(f"reproduced if the jackknife 95% interval of the partial ρ lies above 0; not reproduced if "
                        f"it lies below {SMALLEST_RHO}; else inconclusive"),
                  power=f"this interval resolves ≈ {num(V.mde_interval(p.get('lo'), p.get('hi')), 2)}",
                  evidence=f"partial ρ = {ci(p, 'rho')}"),
    ]


def verdict(results: dict) -> tuple[str, str]:
    """Claim 3's overall outcome: `verdicts.combine` of `verdicts(results)`.

    Returns:
        (outcome, one sentence naming each sub-claim's outcome).
    """
    vs = verdicts(results)
    return V.combine(vs), "; ".join(f"{v.claim}: {v.outcome}" for v in vs) + "."
