"""Claim 2's decision rules (structured vs random labels), kept apart from the code that computes the numbers.

Everything that decides this claim's verdicts lives here and only here: the thresholds, what is
compared with what, the three-valued outcome (reproduced / not reproduced / inconclusive), the
power statement and the rule text the report quotes. The claim script (`reproduce.random_labels`) computes
the numbers and renders its section; it imports these functions. A summary records the last commit
that changed this file (`rules_commit`), and the report marks the claim stale when this file has
changed since (`reproduce.provenance`).

The clean-vs-random rules (`verdicts`' first three) were written after the claim's first results
existed: they are not pre-registered. They were written for random-label models trained with the
clean models' fixed recipe, which underfit; they now decide on the label-noise series' fitted ends
(0% vs 100% random labels, the same recipe and paired seeds), with their thresholds unchanged. The label-noise series' rules (`series_verdicts`: groups
trained to fit 0, 25, 50, 75 and 100% random labels) are pre-registered: written and committed
before any full-size run of the series, and not tuned on its results afterwards.
"""

from __future__ import annotations

from .. import verdicts as V
from ..reporting import ci, num
from . import PaperFigure

# The paper's figures these rules quote, and whether each is a quote of the paper's text
# (`rules.PaperFigure`); figures marked unsourced never decide a verdict.
PAPER_FIGURES = (PaperFigure("the APEX abstract states no number for this", "every sub-claim", quote=None, states_none=True),)


NEEDED_AUROC = 0.9  # "distinguishes" models: most clean models above most random-label ones
SMALLEST_POOLED = 0.1  # pooled AUROC 0.6: the least image-level separation that counts
SMALLEST_TREND = 0.3  # |Spearman ρ| of noise share vs escape σ over models: a moderate monotone trend
SMALLEST_PARTIAL = 0.1  # |partial ρ| beyond the baselines: the least extra information that counts (as claim 1)
MIN_FITTED_SHARE = 2 / 3  # each noise level needs this share of its models at >= the fit threshold


def _test_text(t: dict) -> str:
    return f"{num(t['auroc'])} (p = {t['p']:.2g}{', ties' if t.get('ties') else ''})"


def verdicts(results: dict) -> list[V.Verdict]:
    """Claim 2's rules (not pre-registered: see above). Model level (abstract; relative σ, and absolute
    σ as an extension): `verdicts.rank_test_rule` on the exact one-sided Mann–Whitney test of
    the models' median escape σ (clean > random), with AUROC 0.9 as the separation the claim
    implies. Pooled images (abstract): `verdicts.effect_rule` on the AUROC's model-clustered
    interval (reproduced above 0.5, not reproduced below 0.6)."""
    out = []
    for key, claim, source in (("model_level", "escape σ distinguishes clean from random-label models", "abstract"),
                               ("model_level_absolute", "the same with absolute σ (noise std not scaled by "
                                "each site's RMS)", "extension")):
        t = results[key]
        mde = V.mde_auroc(t["n_pos"], t["n_neg"])
        base = results.get("model_level_clean_margin")
        base_in = results.get("model_level_input_noise")
        out.append(V.Verdict(
            claim=claim, outcome=V.rank_test_rule(t["p"], t["p_min"], mde, NEEDED_AUROC),
            rule=(f"exact one-sided Mann–Whitney test over models of their median escape σ: reproduced if "
                  f"p < {V.ALPHA}; inconclusive if the design cannot detect AUROC {NEEDED_AUROC} with 80% power; "
                  f"else not reproduced"),
            power=V.rank_test_power(t), source=source, paper=V.no_figure(),
            evidence=f"AUROC {_test_text(t)}" + (f"; the clean-margin baseline separates them with AUROC "
                                                 f"{_test_text(base)}" if base and key == "model_level" else "")
            + (f"; the input-noise baseline (median escape σ with noise on the pixels only) with AUROC "
               f"{_test_text(base_in)}" if base_in and key == "model_level" else "")))
    d = results["pooled_sample_auroc"]
    out.append(V.Verdict(
        claim="escape σ of all images pooled is higher under clean models", source="abstract", paper=V.no_figure(),
        outcome=V.effect_rule(d["lo"], d["hi"], 0.5, SMALLEST_POOLED),
        rule=(f"reproduced if the model-clustered 95% interval of the pooled AUROC lies above 0.5; not "
              f"reproduced if it lies below {0.5 + SMALLEST_POOLED}; else inconclusive"),
        power=f"{d['n_pos']} vs {d['n_neg']} models; this interval resolves ≈ "
              f"{num(V.mde_interval(d['lo'], d['hi']), 2)} of AUROC (80% power)",
        evidence=f"AUROC {ci(d, 'auroc')}"))
    return out


def _decreasing(d: dict) -> dict:
    """A Spearman result of (noise share, score) turned into one of (structure, score): the
    claim predicts ρ < 0, so the rules' "above" tests read the negated interval."""
    lo, hi = d.get("lo"), d.get("hi")
    return {"rho": None if d.get("rho") is None else -d["rho"], "lo": None if hi is None else -hi,
            "hi": None if lo is None else -lo, "n": d.get("n")}


def _trend_power(d: dict) -> str:
    n = d.get("n") or 0
    mde, width = V.mde_spearman(n), V.mde_interval(d.get("lo"), d.get("hi"))
    return (f"n = {n} models: |ρ| ≥ {'n/a' if mde is None else num(mde, 2)} detected with 80% power (two-sided "
            f"α = 0.05, Fisher z)" + (f"; this interval resolves ≈ {num(width, 2)}" if width is not None else ""))


def series_design_met(series: dict) -> bool:
    """Whether every noise level kept at least `MIN_FITTED_SHARE` of its models at or above the
    fit threshold (models that did not fit are excluded from every test and listed)."""
    return all(f >= MIN_FITTED_SHARE * m for f, m in zip(series["fitted_per_level"], series["models_per_level"]))


def series_verdicts(series: dict) -> list[V.Verdict]:
    """The label-noise series' rules (pre-registered; models are the units; only models that fit
    their labels count). All are inconclusive when a noise level kept fewer than
    `MIN_FITTED_SHARE` of its models fitted (`series_design_met`).

    - (abstract) the trend: Spearman ρ over models of the label-noise share and log median
      escape σ (BCa interval over models): reproduced if the interval lies below 0 (escape σ
      falls as labels get noisier); not reproduced if it lies above −`SMALLEST_TREND` (weaker
      than a moderate trend, or rising); else inconclusive.
    - (abstract) the two ends, both fitted: `verdicts.rank_test_rule` on the exact one-sided
      Mann–Whitney test of median escape σ, 0% > 100% noise, with AUROC `NEEDED_AUROC`.
    - (extension) beyond the margin: the partial Spearman ρ of the noise share and log escape σ
      given the median clean softmax margin: reproduced if its interval lies below 0, not
      reproduced if above −`SMALLEST_PARTIAL`; else inconclusive.
    - (extension) beyond the margin and input noise: the same given [margin, log median
      input-noise escape σ].
    """
    met = series_design_met(series)
    design = (f"each noise level keeps ≥ {num(100 * MIN_FITTED_SHARE, 0)}% of its models at train accuracy ≥ "
              f"{series['fit_threshold']}, else inconclusive")
    out = []

    def trend(claim: str, key: str, smallest: float, source: str, what: str, evidence: str) -> None:
        d = series[key]
        outcome = V.spearman_rule(_decreasing(d), smallest) if met else "inconclusive"
        out.append(V.Verdict(
            claim=claim, outcome=outcome, source=source, paper=V.no_figure(), power=_trend_power(d),
            rule=(f"{what} over models: reproduced if its 95% interval lies below 0; not reproduced if it lies "
                  f"above −{smallest}; else inconclusive; {design}"),
            evidence=f"ρ = {ci(d, 'rho')}" + evidence))

    trend("escape σ falls as the share of random labels grows (every model fits its labels)", "trend",
          SMALLEST_TREND, "abstract", "Spearman ρ of the label-noise share and log median escape σ",
          f"; the clean margin's own ρ = {ci(series['trend_margin'], 'rho')}; the input-noise escape σ's "
          f"ρ = {ci(series['trend_input'], 'rho')}")
    t = series["ends"]
    mde = V.mde_auroc(t["n_pos"], t["n_neg"])
    base = series["ends_margin"]
    out.append(V.Verdict(
        claim="escape σ distinguishes clean- from random-label models when both fit their labels",
        outcome=V.rank_test_rule(t["p"], t["p_min"], mde, NEEDED_AUROC) if met else "inconclusive",
        rule=(f"exact one-sided Mann–Whitney test over the fitted models of the 0% and 100% noise groups "
              f"(median escape σ, 0% > 100%): reproduced if p < {V.ALPHA}; inconclusive if the design cannot "
              f"detect AUROC {NEEDED_AUROC} with 80% power; else not reproduced; {design}"),
        power=V.rank_test_power(t), source="abstract", paper=V.no_figure(),
        evidence=f"AUROC {_test_text(t)}; the clean-margin baseline: AUROC {_test_text(base)}"))
    trend("escape σ falls with label noise beyond the clean softmax margin", "trend_given_margin",
          SMALLEST_PARTIAL, "extension", "the partial Spearman ρ of the noise share and log escape σ given the "
          "median clean margin", f"; escape σ vs margin over models ρ = {num(series['escape_vs_margin']['rho'])}")
    trend("escape σ falls with label noise beyond the clean margin and the input-noise escape σ",
          "trend_given_margin_and_input", SMALLEST_PARTIAL, "extension",
          "the partial Spearman ρ of the noise share and log escape σ given [median clean margin, log median "
          "input-noise escape σ]", "")
    return out


def verdict(results: dict) -> tuple[str, str]:
    """Claim 2's overall outcome (pre-registered with the series): `verdicts.combine` of
    `verdicts(results)` and, when the summary has the label-noise series, `series_verdicts`
    (sub-claims from the abstract decide — the clean-vs-random ones and the series' trend and
    fitted ends; the absolute-σ rerun and the beyond-the-baselines tests are extensions).

    Returns:
        (outcome, one sentence naming each sub-claim's outcome).
    """
    vs = verdicts(results)
    if "label_noise" in results:  # the series' verdicts decide beside the clean-vs-random ones
        vs = vs + series_verdicts(results["label_noise"])
    return V.combine(vs), "; ".join(f"{v.claim}: {v.outcome}" for v in vs) + "."
