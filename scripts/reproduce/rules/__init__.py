"""The reproduction's decision rules as data, one module per claim, apart from the code that
computes the numbers.

`rules.<claim>` holds every rule of that claim: its thresholds, what is compared, the
three-valued outcome (`verdicts.OUTCOMES`), the power statement and the text the report quotes
(`verdicts.Verdict.rule`). Claim 1's MiniLM part is judged by claim 1's rules (`rules.regularity`).
`RULES_FILES` maps each claim script to its rules module; the report compares a summary's
`rules_commit` with the last commit that changed that file (`reproduce.provenance`).

Each rules module also lists `PAPER_FIGURES`: the paper's figures its verdicts quote, each either
sourced (a quote of the paper's text) or unsourced (not traced to the paper's text). An
unsourced figure is shown beside the numbers, marked so, and never decides a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass

# claim script -> its rules module (under scripts/reproduce/rules/)
RULES_FILES = {"regularity": "regularity", "regularity_text": "regularity", "random_labels": "random_labels",
               "transitions": "transitions", "backdoor_bias": "backdoor_bias", "synapse": "synapse"}

UNSOURCED = "unsourced: not found in the paper's text; shown for comparison, decides nothing"


@dataclass(frozen=True)
class PaperFigure:
    """A figure the rules quote as the paper's.

    Attributes:
        value: the figure as the report shows it ("random-control z ≈ 17–30").
        where: which sub-claim(s) quote it.
        quote: the paper's own sentence stating it (a sourced figure); None when no such sentence
            has been found (unsourced), or when `states_none`.
        states_none: the figure is "the source states no number" (nothing to trace).
    """

    value: str
    where: str
    quote: str | None = None
    states_none: bool = False

    @property
    def sourced(self) -> bool:
        """Whether the figure can be traced to the paper's text (or is a "no number" statement)."""
        return self.states_none or self.quote is not None

    def text(self) -> str:
        """The figure as a verdict line shows it, unsourced ones marked."""
        if self.states_none:
            return self.value
        return f"{self.value} (quoted: “{self.quote}”)" if self.quote else f"{self.value} [{UNSOURCED}]"
