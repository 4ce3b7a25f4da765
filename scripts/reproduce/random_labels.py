"""Claim 2 — structured vs random labels: the escape-noise distribution tells a model trained on
true labels from one trained (to fit) on random labels.

Protocol. The zoo's clean and random-label ViTs (`zoo`, same training images, seeds 0..n-1)
are probed with APEX (noise on every block's output, σ relative to each site's RMS) on the same
sample of their training images. Reported:

- per seed pair (clean seed i vs random seed i, the same images): AUROC of telling a clean
  model's escape σ from the random-label model's (probability that an image's escape σ is
  higher under the clean model; 0.5 = indistinguishable), and its mean over seeds with a
  Student-t 95% interval;
- model level: AUROC of separating the models by their median escape σ (bootstrap interval over
  models);
- the escape-σ distribution of every model (ECDF plot) and medians.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

import apex_jax
from apex_jax import io
from . import common, stats, vit, zoo
from .reporting import above, below, ci, estimator_sentence, num, span

NAME = "random_labels"
CLAIM = 2
TITLE = "structured vs random labels"


@dataclasses.dataclass(frozen=True)
class Settings:
    zoo: zoo.ZooConfig = zoo.ZooConfig()
    n_eval: int = 300
    sigma_lo: float = 0.1
    sigma_hi: float = 8.0
    n_sigmas: int = 12
    draws: int = 24
    seed: int = 0

    @classmethod
    def quick(cls) -> "Settings":
        return cls(zoo=zoo.ZooConfig.quick(), n_eval=48, sigma_lo=0.02, n_sigmas=8, draws=8)


def main(argv=None) -> dict:
    args = common.parser(NAME, "Claim 2: escape noise of clean vs random-label models.").parse_args(argv)
    s = Settings.quick() if args.quick else Settings()
    return run(s, common.out_dir(args, NAME), Path(args.work), common.logger(args), quick=args.quick)


def run(s: Settings, out: Path, work: Path, log=print, quick: bool = False) -> dict:
    timer = common.Timer()
    clean = zoo.get_group(s.zoo, "clean", work, log)
    rand = zoo.get_group(s.zoo, "random", work, log)
    timer.mark("zoo")
    train = zoo.splits(s.zoo)["train"]
    rows = np.sort(np.random.default_rng(s.seed).choice(len(train), min(s.n_eval, len(train)), replace=False))
    model = clean.model
    x = vit.pixels(model, train.inputs[rows])
    sigmas = common.sigma_grid(s.sigma_lo, s.sigma_hi, s.n_sigmas)
    sites = apex_jax.parse_sites(model, "resid_post")
    esc, curves = {}, {}
    for g in (clean, rand):
        res = common.apex_sweeps(model, g.params, x, train.ids[rows], sigmas, sites, s.draws, s.seed)
        esc[g.kind] = np.stack([common.escape_sigma_interpolated(r.consistency, sigmas) for r in res])  # [models, n]
        curves[g.kind] = np.stack([r.consistency.mean(0) for r in res])
    timer.mark("apex")
    n_pairs = min(len(clean.params), len(rand.params))
    pair = [stats.auroc(esc["clean"][i], esc["random"][i], n_boot=200, seed=i) for i in range(n_pairs)]
    median = {k: np.median(v, axis=1) for k, v in esc.items()}
    results = {
        "pair_auroc": [p["auroc"] for p in pair],
        "pair_auroc_mean": stats.mean_ci([p["auroc"] for p in pair]),
        "pooled_sample_auroc": stats.auroc(esc["clean"].ravel(), esc["random"].ravel(), n_boot=200, seed=99),
        "model_auroc_median_escape": stats.auroc(np.log(median["clean"]), np.log(median["random"]), seed=7),
        "median_escape": {k: v.tolist() for k, v in median.items()},
        "median_escape_mean": {k: float(np.exp(np.log(v).mean())) for k, v in median.items()},
        "never_escaped_share": {k: float(np.isinf(v).mean()) for k, v in esc.items()},
        "n_eval": int(len(rows)),
        "models": {"clean": clean.members, "random": rand.members},
        "random_epochs_run": rand.info["epochs_run"],
        "zoo_training_seconds": {g.kind: g.info["seconds"] for g in (clean, rand)},
    }
    timer.mark("statistics")
    io.write_rows(out / "models.csv", ["kind", "seed", "train_accuracy", "test_accuracy", "median_escape_sigma",
                                          "pair_auroc"],
                     [(g.kind, m["seed"], m["train_accuracy"], m["test_accuracy"], median[g.kind][i],
                       results["pair_auroc"][i] if g.kind == "clean" and i < n_pairs else "")
                      for g in (clean, rand) for i, m in enumerate(g.members)])
    io.write_rows(out / "samples.csv", ["id", "kind", "seed", "escape_sigma"],
                     [(int(train.ids[r]), g.kind, m["seed"], esc[g.kind][i, j])
                      for g in (clean, rand) for i, m in enumerate(g.members) for j, r in enumerate(rows)])
    _plot(out, esc, curves, sigmas, results)
    timer.mark("outputs")
    summary = {"claim": CLAIM, "name": NAME, "quick": quick, "settings": _settings(s),
               "escape_sigma_estimator": common.ESCAPE_SIGMA_ESTIMATOR, "sigmas": sigmas.tolist(), "sites": sites,
               "mean_consistency": {k: v.tolist() for k, v in curves.items()},
               "results": results, "timing": timer.summary(), "versions": io.versions()}
    io.write_json(out / "summary.json", summary)
    m = results["pair_auroc_mean"]
    log(f"[random_labels] AUROC clean vs random escape σ per seed pair: {m['mean']:.3f} "
        f"[{m['lo']:.3f}, {m['hi']:.3f}] over {m['n']} pairs; model-level AUROC "
        f"{results['model_auroc_median_escape']['auroc']:.3f} ({summary['timing']['total_seconds']} s)")
    return summary


def _settings(s) -> dict:
    d = dataclasses.asdict(s)
    d["zoo"]["key"] = s.zoo.key()
    return d


def _plot(out: Path, esc: dict, curves: dict, sigmas: np.ndarray, results: dict) -> None:
    plt = io.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    colors = {"clean": "tab:blue", "random": "tab:red"}
    for kind, e in esc.items():
        for i, row in enumerate(e):
            v = np.sort(np.where(np.isfinite(row), row, sigmas[-1] * 1.5))
            axes[0].step(v, np.arange(1, len(v) + 1) / len(v), where="post", color=colors[kind], alpha=0.7,
                         label=f"{kind} labels" if i == 0 else None)
        for i, c in enumerate(curves[kind]):
            axes[1].plot(sigmas, c, color=colors[kind], alpha=0.7, label=f"{kind} labels" if i == 0 else None)
    m = results["pair_auroc_mean"]
    axes[0].set(xscale="log", xlabel="escape σ (× site RMS)", ylabel="share of training images",
                title=f"AUROC per seed pair {m['mean']:.2f} [{m['lo']:.2f}, {m['hi']:.2f}]")
    axes[1].set(xscale="log", xlabel="σ (× site RMS)", ylabel="mean share keeping clean prediction",
                title="consistency curves")
    from matplotlib.ticker import NullFormatter

    for ax in axes:
        ax.xaxis.set_minor_formatter(NullFormatter())  # decade labels only
        ax.legend(fontsize=8)
    io.save_figure(fig, out / "random_labels.png", dpi=120)


# ------------------------------------------------------------------------------ report section

SECTION = """## Claim 2 — structured vs random labels

**Verdict: {verdict}.** {reason}

Setup: {n_clean} clean and {n_random} random-label ViTs ({size}) on the same {n_train} `{data}`
training images. Clean models: {clean_epochs} epochs, training accuracy {clean_train}, test
accuracy {clean_test}. Random-label models: trained until they fit (training-time accuracy ≥
{fit}, at most {max_epochs} epochs; stopped after {random_epochs}): training accuracy on their
labels {random_train}, test accuracy {random_test} (chance 0.1). APEX on {n_eval} of the training
images, noise on every block's output, {n_sigmas} σ from {sigma_lo} to {sigma_hi}, {draws} draws.

| | value |
|---|---|
| AUROC per seed pair (P[escape σ under the clean model > under the random-label one]), mean [95% t-CI] over {n_pairs} pairs | {pair} |
| per-pair AUROCs | {pairs} |
| AUROC, all images of all models pooled | {pooled} |
| AUROC separating the models by their median escape σ | {model_level} |
| median escape σ (geometric mean over models): clean / random labels | {med_clean} / {med_random} |

{estimator}Run time {seconds} s. Files: `random_labels/models.csv`, `random_labels/samples.csv`,
`random_labels/summary.json`.

![escape σ distributions](random_labels/random_labels.png)
"""


def verdict(results: dict) -> tuple[str, str]:
    """Claim 2's rule. Reproduced: the mean per-pair AUROC has its t-interval above 0.5 (the
    clean models' escape σ is higher). Opposite direction: interval below 0.5. Otherwise
    inconclusive.

    Returns:
        (verdict, one-sentence reason).
    """
    m = results["pair_auroc_mean"]
    if above(m, 0.5):
        return "reproduced", "The escape-σ distributions separate clean from random-label models (interval above 0.5)."
    if below(m, 0.5):
        return "opposite direction", "Random-label models have the higher escape σ (interval below 0.5)."
    return "inconclusive", "The per-pair AUROC interval contains 0.5."


def section(summary: dict) -> tuple[str, str]:
    """The README section of this claim from its summary.json: (verdict, markdown text)."""
    r, st = summary["results"], summary["settings"]
    v, reason = verdict(r)
    z = st["zoo"]
    c, rd = r["models"]["clean"], r["models"]["random"]
    text = SECTION.format(
        verdict=v, reason=reason, n_clean=len(c), n_random=len(rd), size=z["size"], n_train=z["n_train"],
        data=z["data"], clean_epochs=z["epochs"], clean_train=span(m["train_accuracy"] for m in c),
        clean_test=span(m["test_accuracy"] for m in c), fit=z["fit_threshold"],
        max_epochs=z["random_max_epochs"], random_epochs=r["random_epochs_run"],
        random_train=span(m["train_accuracy"] for m in rd), random_test=span(m["test_accuracy"] for m in rd),
        n_eval=r["n_eval"], n_sigmas=st["n_sigmas"], sigma_lo=st["sigma_lo"], sigma_hi=st["sigma_hi"],
        draws=st["draws"], n_pairs=r["pair_auroc_mean"]["n"], pair=ci(r["pair_auroc_mean"], "mean"),
        pairs=", ".join(num(a) for a in r["pair_auroc"]), pooled=ci(r["pooled_sample_auroc"], "auroc"),
        model_level=ci(r["model_auroc_median_escape"], "auroc"),
        med_clean=num(r["median_escape_mean"]["clean"]), med_random=num(r["median_escape_mean"]["random"]),
        estimator=estimator_sentence(summary), seconds=summary["timing"]["total_seconds"])
    return v, text
