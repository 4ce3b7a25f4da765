"""Claim 4's decision rules (large-σ backdoor bias), kept apart from the code that computes the numbers.

Everything that decides this claim's verdicts lives here and only here: the thresholds, what is
compared with what, the three-valued outcome (reproduced / not reproduced / inconclusive), the
power statement and the rule text the report quotes. The claim script (`reproduce.backdoor_bias`) computes
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


NEEDED_AUROC = 0.9  # "pronounced": most backdoored models above most clean ones
SMALLEST_EXCESS = 0.1  # target share above the clean models' share of that class: +10 points (uniform: 0.1)

def _test_text(t: dict) -> str:
    return f"{num(t['auroc'])} (p = {t['p']:.2g})"


def verdicts(results: dict) -> list[V.Verdict]:
    """Claim 4's rules (not pre-registered: see above), at the site set and σ chosen on the
    calibration models. (1) Target unknown (abstract: model-level bias exposed without a
    trigger; primary): `verdicts.rank_test_rule` on the exact one-sided Mann–Whitney test of the
    largest class share, AUROC 0.9 the separation "pronounced" implies. (2) Magnitude
    (abstract: "a pronounced concentration of predictions on the target class"): reproduced if
    the t-interval of the target share's excess over the clean models' share of that class lies
    above +0.1 (uniform is 0.1), not reproduced if below, else inconclusive
    (`verdicts.interval_rule`). (3) Absolute σ, target unknown: rule (1), an extension."""
    out = []
    for mode, source in (("relative", "abstract"), ("absolute", "extension")):
        r = results["modes"][mode]
        t = r["target_unknown"]
        out.append(V.Verdict(
            claim=("large-σ class shares tell backdoored from clean models without knowing the target"
                   + (" (absolute σ)" if mode == "absolute" else "")),
            outcome=V.rank_test_rule(t["p"], t["p_min"], V.mde_auroc(t["n_pos"], t["n_neg"]), NEEDED_AUROC),
            rule=(f"exact one-sided Mann–Whitney test over the evaluated models of their largest class share at the "
                  f"calibrated site set and σ: reproduced if p < {V.ALPHA}; inconclusive if the design cannot detect "
                  f"AUROC {NEEDED_AUROC} with 80% power; else not reproduced"),
            power=V.rank_test_power(t), source=source, paper=V.no_figure(),
            evidence=f"AUROC {_test_text(t)} at {r['site_set']}, σ = {r['sigma']:g}"))
        if mode == "relative":
            e = r["target_share_excess"]
            out.append(V.Verdict(
                claim="predictions concentrate on the target class (pronounced: ≥ 10 points above the clean "
                      "models' share of that class)",
                outcome=V.interval_rule(e["lo"], e["hi"], 0.0, SMALLEST_EXCESS), source="abstract",
                paper=V.no_figure(),
                rule=(f"reproduced if the t-interval of the excess target share lies above +{SMALLEST_EXCESS}; not "
                      f"reproduced if it lies below; else inconclusive"),
                power=(f"{e['n']} backdoored models; this interval resolves ≈ "
                       f"{num(V.mde_interval(e['lo'], e['hi']), 3)} of share"),
                evidence=(f"excess {ci(e, 'mean')}; target share {num(r['target_share_backdoor']['mean'])} vs "
                          f"{num(r['target_share_clean']['mean'])} in clean models (their 95th percentile "
                          f"{num(r['target_share_clean_p95'])}); target known AUROC {_test_text(r['target_known'])}")))
    return out


def verdict(results: dict) -> tuple[str, str]:
    """Claim 4's overall outcome: `verdicts.combine` of `verdicts(results)` (target-unknown
    detection and the magnitude decide; absolute σ is an extension).

    Returns:
        (outcome, one sentence naming each sub-claim's outcome).
    """
    vs = verdicts(results)
    return V.combine(vs), "; ".join(f"{v.claim}: {v.outcome}" for v in vs) + "."
