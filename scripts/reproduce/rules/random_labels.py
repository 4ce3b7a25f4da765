"""Claim 2's decision rules (structured vs random labels), kept apart from the code that computes the numbers.

Everything that decides this claim's verdicts lives here and only here: the thresholds, what is
compared with what, the three-valued outcome (reproduced / not reproduced / inconclusive), the
power statement and the rule text the report quotes. The claim script (`reproduce.random_labels`) computes
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


NEEDED_AUROC = 0.9  # "distinguishes" models: most clean models above most random-label ones
SMALLEST_POOLED = 0.1  # pooled AUROC 0.6: the least image-level separation that counts


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


def verdict(results: dict) -> tuple[str, str]:
    """Claim 2's overall outcome: `verdicts.combine` of `verdicts(results)` (sub-claims from the
    abstract decide; the absolute-σ rerun is an extension).

    Returns:
        (outcome, one sentence naming each sub-claim's outcome).
    """
    vs = verdicts(results)
    return V.combine(vs), "; ".join(f"{v.claim}: {v.outcome}" for v in vs) + "."
