"""The research reproduction study: the APEX paper's claims on small ViTs trained here (claim 1
also on a MiniLM fine-tuned here) and the SYNAPSE paper's on two fine-tuned MiniLMs (see
reports/README.md).

It lives in the repository, not in the installed apex-jax wheel: the package `reproduce` in
`scripts/` (`python scripts/<claim>.py` finds it beside the script; `apex-jax reproduce` finds
it next to the package's source tree), built on apex_jax's public API.

Each claim is a module (`CLAIMS`, in report order) that owns its run and its report section;
its decision rules live apart, in `rules.<claim>` (`rules.RULES_FILES`): `main(argv)` (argparse;
`--quick` for a smoke-test size) writes tables, a figure and `summary.json` (with `provenance`'s
code and rules commits) into `reports/<name>/`; `verdict(results)`, imported from its rules
module, states the claim's rule in its docstring; `section(summary) -> (verdict, text)` fills the module's `SECTION` template
(`NAME`, `CLAIM`, `TITLE` name it in the overview). `report` assembles `reports/README.md` from
the summaries (header, claim order, footer). `run(name, argv)` dispatches by name (what
`scripts/*.py` and `apex-jax reproduce NAME` call); `run("all", argv)` runs every claim, then
the report.

Library parts: `vit` (small ViT configs; templates and fresh parameters from
`apex_jax.create`), `ensembles` (many models trained at once with a vmapped Optax step;
per-example training-time and hold-out correctness), `backdoor` (BadNets trigger and
poisoning), `zoo` (clean / random-label / label-noise / backdoored model groups saved as HF folders), `stats`
(Spearman and AUROC with bootstrap intervals; exact Mann–Whitney tests over models,
model-clustered bootstrap, partial Spearman), `verdicts` (three-valued verdicts: rule, power,
source, the paper's figure), `rules` (each claim's decision rules and quoted paper figures, sourced
or not), `provenance` (code and rules commits of a summary, stale detection), `common` (arguments, APEX sweeps over many
models, the interpolated escape σ, outputs), `reporting` (number and interval formatting shared
by the report sections), `minilm` (MiniLM sentiment classifiers fine-tuned once and cached for
the text claims).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from . import provenance

CLAIMS = ("regularity", "regularity_text", "random_labels", "transitions", "backdoor_bias", "synapse")
# claims that resume through their own pieces (`pieces.py`), keyed also on the weights and data each
# piece ran on: `reproduce all` always runs them (restoring a finished piece is cheap), so a
# fine-tune replaced by hand is never hidden behind a kept summary
PIECEWISE = ("synapse",)
NAMES = (*CLAIMS, "report", "all")


def _module(name: str):
    return importlib.import_module(f".{name}", __name__)


def canonical(name: str) -> str:
    """`random-labels` -> `random_labels`; error for an unknown name."""
    key = name.replace("-", "_")
    if key not in NAMES:
        raise SystemExit(f"unknown reproduction {name!r}; choose from {', '.join(n.replace('_', '-') for n in NAMES)}.")
    return key


def run(name: str, argv: list[str] | None = None):
    """Runs one claim script (or `report`, or `all`) with command-line arguments `argv`."""
    name = canonical(name)
    argv = list(argv or [])
    if name != "all":
        return _module(name).main(argv)
    import argparse

    p = argparse.ArgumentParser(prog="apex-jax reproduce all",
                                description="Every claim script, then reports/README.md.")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reports", default="reports")
    p.add_argument("--work", default="runs/reproduce")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--rerun", action="store_true",
                   help="rerun every claim, also those whose summary this commit and its rules already wrote")
    args = p.parse_args(argv)
    common = (["--quick"] if args.quick else []) + ["--work", args.work] + (["--quiet"] if args.quiet else [])
    for claim in CLAIMS:
        out = Path(args.reports) / claim
        if not args.rerun and claim not in PIECEWISE and provenance.finished_here(out / "summary.json", claim,
                                                                                   args.quick):
            print(f"{claim}: kept {out / 'summary.json'} (written by this commit and rules at this size; --rerun "
                  "to run it again)", flush=True)
            continue
        _module(claim).main([*common, "--out", str(out)])
    return _module("report").main(["--reports", args.reports])
