"""Claim 1's decision rules (APEX regularity, ViT and MiniLM), kept apart from the code that computes the numbers.

Everything that decides this claim's verdicts lives here and only here: the thresholds, what is
compared with what, the three-valued outcome (reproduced / not reproduced / inconclusive), the
power statement and the rule text the report quotes. The claim script (`reproduce.regularity`) computes
the numbers and renders its section; it imports these functions. A summary records the last commit
that changed this file (`rules_commit`), and the report marks the claim stale when this file has
changed since (`reproduce.provenance`).

The per-run rules (`verdicts`) were written after the claim's first results existed: they are
not pre-registered. The rule over probed models (`verdicts_over_runs`: the same sub-claims on
several probed ViTs, each with its metrics from the other models) is pre-registered: written and
committed before any full-size run with several probed models, and not tuned on them afterwards.
"""

from __future__ import annotations

from .. import verdicts as V
from ..reporting import ci, num
from . import PaperFigure

# The paper's figures these rules quote, and whether each is a quote of the paper's text
# (`rules.PaperFigure`); figures marked unsourced never decide a verdict.
PAPER_FIGURES = (PaperFigure("the APEX abstract states no number for this", "every sub-claim", quote=None, states_none=True),)


SMALLEST_RHO = 0.1  # the least rank agreement that counts as "aligns with" a metric
STABLE_SHARE = 2 / 3  # over probed models: the share of runs that must agree for a verdict


def _rho_power(d: dict) -> str:
    n = d.get("n") or 0
    mde, width = V.mde_spearman(n), V.mde_interval(d.get("lo"), d.get("hi"))
    return (f"n = {n} examples: ρ ≥ {num(mde, 2)} detected with 80% power (two-sided α = 0.05, Fisher z)"
            + (f"; this interval resolves ≈ {num(width, 2)}" if width is not None else ""))


def verdicts(results: dict) -> list[V.Verdict]:
    """Claim 1's rules (not pre-registered: see above) (`verdicts.spearman_rule`, smallest agreement
    ρ = 0.1): reproduced if the 95% interval of ρ lies above 0, not reproduced if it lies below
    0.1, else inconclusive. Abstract: log escape σ vs the C-score estimate and vs learning speed.
    Extension (only when the summary has the confidence baseline): the same rule on the partial ρ
    given the clean softmax margin (escape σ says more than the clean confidence); and (only when
    it has the input-noise baseline) on the partial ρ given [margin, input-noise escape σ]."""
    rule = (f"reproduced if the 95% interval of Spearman ρ lies above 0; not reproduced if it lies "
            f"below ρ = {SMALLEST_RHO}; else inconclusive")
    out = []
    for key, metric in (("cscore", "the C-score estimate"), ("learning_speed", "learning speed")):
        d = results[f"escape_vs_{key}"]
        out.append(V.Verdict(
            claim=f"escape σ aligns with {metric}", outcome=V.spearman_rule(d, SMALLEST_RHO), rule=rule,
            power=_rho_power(d), evidence=f"ρ = {ci(d, 'rho')}", source="abstract", paper=V.no_figure()))
    for key, metric in (("cscore", "the C-score estimate"), ("learning_speed", "learning speed")):
        d = results.get(f"escape_vs_{key}_given_margin")
        if d is None:
            continue
        own = results[f"clean_margin_vs_{key}"]
        ceiling = results.get(f"{key}_ceiling_share")
        out.append(V.Verdict(
            claim=f"escape σ says more about {metric} than the clean softmax margin",
            outcome=V.spearman_rule(d, SMALLEST_RHO), rule=rule.replace("Spearman ρ", "the partial Spearman ρ given "
                                                                         "the margin"),
            power=_rho_power(d), source="extension",
            evidence=(f"partial ρ = {ci(d, 'rho')}; the margin's own ρ = {ci(own, 'rho')}; escape σ vs margin "
                      f"ρ = {num(results['escape_vs_clean_margin']['rho'])}"
                      + (f"; {num(100 * ceiling, 0)}% of the examples at the metric's ceiling (exactly 1)"
                         if ceiling is not None else ""))))
    for key, metric in (("cscore", "the C-score estimate"), ("learning_speed", "learning speed")):
        d = results.get(f"escape_vs_{key}_given_margin_and_input")
        if d is None:
            continue
        own = results[f"input_escape_vs_{key}"]
        out.append(V.Verdict(
            claim=(f"escape σ (noise on the hidden activations) says more about {metric} than input noise and "
                   f"the clean margin together"),
            outcome=V.spearman_rule(d, SMALLEST_RHO),
            rule=rule.replace("Spearman ρ", "the partial Spearman ρ given the clean margin and the input-noise "
                                            "escape σ"),
            power=_rho_power(d), source="extension",
            evidence=(f"partial ρ = {ci(d, 'rho')}; the input-noise escape σ's own ρ = {ci(own, 'rho')}; "
                      f"activation- vs input-noise escape σ ρ = {num(results['escape_vs_input_escape']['rho'])}")))
    return out


def verdict(results: dict) -> tuple[str, str]:
    """Claim 1's overall outcome: `verdicts.combine` of `verdicts(results)` (the abstract's two
    correlations decide; extensions are reported beside them).

    Returns:
        (outcome, one sentence naming each sub-claim's outcome).
    """
    vs = verdicts(results)
    return V.combine(vs), "; ".join(f"{v.claim}: {v.outcome}" for v in vs) + "."


def verdict_lines(results: dict) -> str:
    """The sub-claims' verdict lines (markdown bullets), shared with the MiniLM part."""
    return "\n".join(v.line() for v in verdicts(results))


def over_runs(outcomes: list[str]) -> str:
    """The verdict of one sub-claim over several runs (probed models) from each run's outcome:
    reproduced if at least `STABLE_SHARE` of the runs reproduce and none is "not reproduced"; not
    reproduced if at least `STABLE_SHARE` are "not reproduced"; else inconclusive (no runs:
    inconclusive)."""
    n = len(outcomes)
    if n == 0:
        return "inconclusive"
    rep, neg = outcomes.count("reproduced"), outcomes.count("not reproduced")
    if rep >= STABLE_SHARE * n and neg == 0:
        return "reproduced"
    if neg >= STABLE_SHARE * n:
        return "not reproduced"
    return "inconclusive"


def verdicts_over_runs(runs: list[dict]) -> list[V.Verdict]:
    """Claim 1 over several probed models (pre-registered): each run's `verdicts`, then for each
    sub-claim `over_runs` of its outcomes; the rule, power and evidence name every run ("k of n
    runs reproduced")."""
    per_run = [verdicts(r) for r in runs]
    n = len(per_run)
    out = []
    for i, first in enumerate(per_run[0]):
        same = [vs[i] for vs in per_run]
        outcomes = [v.outcome for v in same]
        counts = ", ".join(f"{outcomes.count(o)} of {n} {o}" for o in V.OUTCOMES if o in outcomes)
        each = "; ".join(f"model {r.get('probed_model', j)}: {v.evidence}" for j, (r, v) in enumerate(zip(runs, same)))
        out.append(V.Verdict(
            claim=first.claim, outcome=over_runs(outcomes), source=first.source, paper=first.paper,
            rule=(f"over the {n} probed models: reproduced if ≥ {num(100 * STABLE_SHARE, 0)}% of them reproduce and "
                  f"none is not reproduced; not reproduced if ≥ {num(100 * STABLE_SHARE, 0)}% are not reproduced; "
                  f"else inconclusive. Each: {first.rule}"),
            power=f"each probed model: {first.power}",
            evidence=f"{counts} ({each})"))
    return out


def verdict_over_runs(runs: list[dict]) -> tuple[str, str]:
    """Claim 1's overall outcome over several probed models: `verdicts.combine` of
    `verdicts_over_runs(runs)` (the abstract's two correlations decide)."""
    vs = verdicts_over_runs(runs)
    return V.combine(vs), "; ".join(f"{v.claim}: {v.outcome}" for v in vs) + "."
