"""Claim 2 — structured vs random labels: the escape-noise distribution tells a model trained on
true labels from one trained (to fit) on random labels.

Protocol. Clean and random-label ViTs that all fit their training labels: the two ends (0% and
100% random labels) of the label-noise series below (`zoo.noise_kind` groups: the same training
images, one recipe trained to fit, and paired seeds — random-label model i has clean model i's
initialization and batch order, so the two differ only in their labels). An earlier protocol
used random-label models trained with the clean models' fixed recipe; they underfit (training
accuracy 0.63–0.88), so lower confidence alone could have told them apart. The models are probed
with APEX (noise on every block's output, σ relative to each site's RMS; rerun with absolute σ)
on the same sample of their training images. Models are the units of the claim ("distinguishing
structured from randomly labeled models"). Reported:

- model level (primary): each model's median escape σ; the exact one-sided Mann–Whitney test
  (clean > random; `stats.mann_whitney_exact`), its AUROC, the AUROC the design needs for
  p < 0.05 and the one it detects with 80% power; the same with absolute σ;
- all images of all models pooled: AUROC with a bootstrap that resamples whole models (an
  image's escape σ under one model is not independent of the others under it);
- per seed pair (clean seed i vs random seed i, the same images): the AUROC of telling the
  clean model's escape σ from the random-label model's, mean over pairs with a t interval;
- confidence baseline: the same model-level test on each model's median clean softmax margin;
- input-noise baseline: the same model-level test on each model's median input-noise escape σ
  (the same escape rule, relative σ grid and draws, with Gaussian noise on the normalized pixel
  values only, σ × their RMS: `common.pixel_noise_consistency`);
- the escape-σ distribution of every model (ECDF plot) and medians;
- the label-noise series (`label_noise_series`): does escape σ follow the share of random labels,
  beyond confidence? Groups at 0, 25, 50, 75 and 100% random labels
  (`zoo.noise_kind`; 12 per level; every one trained to fit its labels, those that do not are
  flagged and excluded), each model's median escape σ, clean margin and input-noise escape σ on
  the same training images; the trend of escape σ with the noise share over models, and what it
  adds beyond the margin (partial ρ) and beyond margin and input noise.

Verdicts (`rules.random_labels`): model level by `verdicts.rank_test_rule` (reproduced if
p < 0.05; inconclusive if the design could not detect AUROC 0.9, the separation the claim
implies; else not reproduced); pooled by `verdicts.effect_rule` (interval above 0.5; not
reproduced if below 0.6, the smallest separation that counts); the series by
`rules.random_labels.series_verdicts` (pre-registered).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

import apex_jax
from apex_jax import fileio
from . import common, provenance, stats, vit, zoo
from .reporting import ci, estimator_sentence, num, span
from .rules.random_labels import (NEEDED_AUROC, SMALLEST_POOLED, _test_text, series_verdicts,  # noqa: F401
                                  verdict, verdicts)  # (the claim's rules)

NAME = "random_labels"
CLAIM = 2
TITLE = "structured vs random labels"


NOISE_LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)
# the label-noise series: 12 models per level (the count the 25-minute budget allows; the trend
# over 60 models detects |ρ| ≥ 0.36 and the 12-vs-12 ends AUROC ≥ 0.80 with 80% power) on the
# zoo's first 1,000 training images (half the zoo's: an epoch costs half, and fitting random
# labels takes tens of epochs), each group trained to fit its labels
SERIES = zoo.ZooConfig(n_train=1000, n_models=12)
# quick series: 3 levels of 2 micro ViTs on 160 digits (a smoke test of the series' code, not of
# the claim; kept this small because its training epoch is a shape of its own to compile)
QUICK_SERIES = dataclasses.replace(zoo.ZooConfig.quick(), n_train=160, n_models=2, random_max_epochs=60,
                                   random_learning_rate=4e-3)


@dataclasses.dataclass(frozen=True)
class Settings:
    series: zoo.ZooConfig = SERIES  # the label-noise series' zoo; its 0% and 100% groups are the clean and random ends
    noise_levels: tuple[float, ...] = NOISE_LEVELS
    n_boot: int = stats.N_BOOT  # bootstrap resamples of the pooled and the series' intervals
    n_eval: int = 100  # models are the claim's units: 100 images give each model's median escape σ
    sigma_lo: float = 0.1
    sigma_hi: float = 8.0
    abs_sigma_lo: float = 0.1  # the absolute-σ rerun's grid (noise std, not × site RMS)
    abs_sigma_hi: float = 16.0
    n_sigmas: int = 12
    draws: int = 16
    seed: int = 0

    @classmethod
    def quick(cls) -> "Settings":
        return cls(series=QUICK_SERIES, noise_levels=(0.0, 0.5, 1.0), n_boot=200,
                   n_eval=48, sigma_lo=0.02, abs_sigma_lo=0.02, n_sigmas=8, draws=8)


def main(argv=None) -> dict:
    args = common.parser(NAME, "Claim 2: escape noise of clean vs random-label models.").parse_args(argv)
    s = Settings.quick() if args.quick else Settings()
    return run(s, common.out_dir(args, NAME), Path(args.work), common.logger(args), quick=args.quick)


def run(s: Settings, out: Path, work: Path, log=print, quick: bool = False) -> dict:
    prov = provenance.stamp(NAME)  # the code and rules about to produce the numbers
    timer = common.Timer()
    groups = series_groups(s, work, log)
    ends = {"clean": groups[0], "random": groups[-1]}  # 0% and 100% random labels, both trained to fit
    clean, rand = ends["clean"], ends["random"]
    timer.mark("zoo")
    train = zoo.splits(s.series)["train"]
    rows = np.sort(np.random.default_rng(s.seed).choice(len(train), min(s.n_eval, len(train)), replace=False))
    model = clean.model
    x = vit.pixels(model, train.inputs[rows])
    sigmas = common.sigma_grid(s.sigma_lo, s.sigma_hi, s.n_sigmas)
    sites = apex_jax.parse_sites(model, "resid_post")
    abs_sigmas = common.sigma_grid(s.abs_sigma_lo, s.abs_sigma_hi, s.n_sigmas)
    esc, esc_abs, curves, margin, esc_in = {}, {}, {}, {}, {}
    for kind, g in ends.items():
        res = common.apex_sweeps(model, g.params, x, train.ids[rows], sigmas, sites, s.draws, s.seed)
        esc[kind] = np.stack([common.escape_sigma_interpolated(r.consistency, sigmas) for r in res])  # [models, n]
        curves[kind] = np.stack([r.consistency.mean(0) for r in res])
        res = common.apex_sweeps(model, g.params, x, train.ids[rows], abs_sigmas, sites, s.draws, s.seed,
                                 relative=False)
        esc_abs[kind] = np.stack([common.escape_sigma_interpolated(r.consistency, abs_sigmas) for r in res])
        margin[kind] = np.stack([common.softmax_margin(common.clean_logits(model, p, {"pixel_values": x}))
                                 for p in g.params])  # [models, n]
    timer.mark("apex")
    for kind, g in ends.items():  # the input-noise baseline: the same rule, grid and draws, noise on the pixels only
        kept = [common.pixel_noise_consistency(model, p, x, train.ids[rows], sigmas, s.draws, s.seed)
                for p in g.params]
        esc_in[kind] = np.stack([common.escape_sigma_interpolated(k[0], sigmas) for k in kept])  # [models, n]
        pixel_rms = kept[0][2]
    timer.mark("input_noise")
    series = label_noise_series(s, work, log, groups)
    timer.mark("label_noise_series")
    n_pairs = min(len(clean.params), len(rand.params))
    pair = [stats.auroc(esc["clean"][i], esc["random"][i], n_boot=200, seed=i) for i in range(n_pairs)]
    median = {k: np.median(v, axis=1) for k, v in esc.items()}
    median_abs = {k: np.median(v, axis=1) for k, v in esc_abs.items()}
    median_margin = {k: np.median(v, axis=1) for k, v in margin.items()}
    median_in = {k: np.median(v, axis=1) for k, v in esc_in.items()}
    n_models = len(clean.params) + len(rand.params)
    results = {
        "model_level": stats.mann_whitney_exact(np.log(median["clean"]), np.log(median["random"])),
        "model_level_absolute": stats.mann_whitney_exact(np.log(median_abs["clean"]), np.log(median_abs["random"])),
        "model_level_clean_margin": stats.mann_whitney_exact(median_margin["clean"], median_margin["random"]),
        "model_level_input_noise": stats.mann_whitney_exact(np.log(median_in["clean"]), np.log(median_in["random"])),
        "median_input_escape": {k: v.tolist() for k, v in median_in.items()},
        "input_noise": {"where": common.PIXEL_NOISE, "rms": pixel_rms,
                        "never_escaped_share": {k: float(np.isinf(v).mean()) for k, v in esc_in.items()},
                        "extra_perturbed_forwards": int(n_models * len(rows) * len(sigmas) * s.draws)},
        "pooled_sample_auroc": stats.cluster_auroc(list(esc["clean"]), list(esc["random"]), s.n_boot, seed=99),
        "pair_auroc": [p["auroc"] for p in pair],
        "pair_auroc_mean": stats.mean_ci([p["auroc"] for p in pair]),
        "median_escape": {k: v.tolist() for k, v in median.items()},
        "median_escape_absolute": {k: v.tolist() for k, v in median_abs.items()},
        "median_clean_margin": {k: v.tolist() for k, v in median_margin.items()},
        "median_escape_mean": {k: float(np.exp(np.log(v).mean())) for k, v in median.items()},
        "never_escaped_share": {k: float(np.isinf(v).mean()) for k, v in esc.items()},
        "n_eval": int(len(rows)),
        "models": {"clean": clean.members, "random": rand.members},
        "groups": {"clean": clean.kind, "random": rand.kind},  # the series' ends
        "epochs_run": {"clean": clean.info["epochs_run"], "random": rand.info["epochs_run"]},
        "abs_sigmas": abs_sigmas.tolist(),
        "zoo_training_seconds": {zoo.noise_kind(lv): sec for lv, sec in zip(series["levels"],
                                                                          series["training_seconds"])},
        "label_noise": series,
    }
    timer.mark("statistics")
    fileio.write_rows(out / "models.csv", ["kind", "seed", "train_accuracy", "test_accuracy", "median_escape_sigma",
                                          "median_escape_sigma_absolute", "median_clean_margin",
                                          "median_input_noise_escape_sigma", "pair_auroc"],
                     [(kind, m["seed"], m["train_accuracy"], m["test_accuracy"], median[kind][i],
                       median_abs[kind][i], median_margin[kind][i], median_in[kind][i],
                       results["pair_auroc"][i] if kind == "clean" and i < n_pairs else "")
                      for kind, g in ends.items() for i, m in enumerate(g.members)])
    fileio.write_rows(out / "samples.csv", ["id", "kind", "seed", "escape_sigma"],
                     [(int(train.ids[r]), kind, m["seed"], esc[kind][i, j])
                      for kind, g in ends.items() for i, m in enumerate(g.members) for j, r in enumerate(rows)])
    fileio.write_rows(out / "series.csv", list(series["models"][0]), [list(m.values()) for m in series["models"]])
    _plot(out, esc, curves, sigmas, results)
    timer.mark("outputs")
    summary = {"claim": CLAIM, "name": NAME, "quick": quick, **prov, "settings": _settings(s),
               "escape_sigma_estimator": common.ESCAPE_SIGMA_ESTIMATOR, "sigmas": sigmas.tolist(), "sites": sites,
               "mean_consistency": {k: v.tolist() for k, v in curves.items()},
               "results": results, "timing": timer.summary(), "versions": fileio.versions()}
    fileio.write_json(out / "summary.json", summary)
    m, t = results["pair_auroc_mean"], results["model_level"]
    log(f"[random_labels] model-level AUROC {t['auroc']:.3f} (exact p {t['p']:.2g}, {t['n_pos']} vs {t['n_neg']}); "
        f"per seed pair {m['mean']:.3f} [{m['lo']:.3f}, {m['hi']:.3f}] ({summary['timing']['total_seconds']} s)")
    return summary


def series_groups(s: Settings, work: Path, log=print) -> list:
    """The label-noise series' zoo groups, one per level of `s.noise_levels` (trained here if not
    cached); the levels must run from 0 (the clean end) to 1 (the random end)."""
    if s.noise_levels[0] != 0.0 or s.noise_levels[-1] != 1.0 or list(s.noise_levels) != sorted(s.noise_levels):
        raise ValueError(f"noise_levels must rise from 0.0 to 1.0 (the clean and random-label ends); "
                         f"got {s.noise_levels}.")
    return [zoo.get_group(s.series, zoo.noise_kind(level), work, log) for level in s.noise_levels]


def label_noise_series(s: Settings, work: Path, log=print, groups: list | None = None) -> dict:
    """The label-noise series (`s.series` zoo, one `zoo.noise_kind` group per level in
    `s.noise_levels`, each trained to fit its labels): per model, the median escape σ (relative
    σ), median clean softmax margin and median input-noise escape σ on the same `s.n_eval`
    training images; then, over the models that fit (final train accuracy on their own labels
    >= the fit threshold; the others are listed, flagged and excluded from every test), the
    trend of each with the noise share, the partial ρ beyond the margin (and beyond margin and
    input noise), and the fitted ends (0% vs 100%) — what `rules.random_labels.series_verdicts`
    decides on."""
    cfg = s.series
    groups = series_groups(s, work, log) if groups is None else groups
    train = zoo.splits(cfg)["train"]
    rows = np.sort(np.random.default_rng(s.seed + 1).choice(len(train), min(s.n_eval, len(train)), replace=False))
    model = groups[0].model
    x, ids = vit.pixels(model, train.inputs[rows]), train.ids[rows]
    sigmas = common.sigma_grid(s.sigma_lo, s.sigma_hi, s.n_sigmas)
    sites = apex_jax.parse_sites(model, "resid_post")
    models = []
    for level, g in zip(s.noise_levels, groups):
        sweeps = common.apex_sweeps(model, g.params, x, ids, sigmas, sites, s.draws, s.seed)
        for m, p, r in zip(g.members, g.params, sweeps):
            kept_in = common.pixel_noise_consistency(model, p, x, ids, sigmas, s.draws, s.seed)[0]
            models.append({
                "label_noise": level, "seed": m["seed"], "train_accuracy": m["train_accuracy"],
                "test_accuracy": m["test_accuracy"], "labels_changed": m["labels_changed"],
                "fitted": bool(m["train_accuracy"] >= cfg.fit_threshold),
                "median_escape": float(np.median(common.escape_sigma_interpolated(r.consistency, sigmas))),
                "median_clean_margin": float(np.median(common.softmax_margin(
                    common.clean_logits(model, p, {"pixel_values": x})))),
                "median_input_escape": float(np.median(common.escape_sigma_interpolated(kept_in, sigmas)))})
    for m in models:
        if not m["fitted"]:
            log(f"[random_labels] flagged and excluded: noise {m['label_noise']:.0%} seed {m['seed']} reached "
                f"train accuracy {m['train_accuracy']:.3f} < {cfg.fit_threshold}")
    fit = [m for m in models if m["fitted"]]
    tests_over = "fitted models"
    if {min(s.noise_levels), max(s.noise_levels)} - {m["label_noise"] for m in fit}:
        # an end without a fitted model: the design guard makes the series inconclusive; its
        # numbers are still shown, over all models, and said to be so
        fit, tests_over = models, "all models (an end has no fitted model)"
    noise = np.array([m["label_noise"] for m in fit])
    log_esc = np.log([m["median_escape"] for m in fit])
    margin = np.array([m["median_clean_margin"] for m in fit])
    log_in = np.log([m["median_input_escape"] for m in fit])
    lo_end, hi_end = noise == min(s.noise_levels), noise == max(s.noise_levels)
    return {
        "levels": list(s.noise_levels), "fit_threshold": cfg.fit_threshold, "n_eval": int(len(rows)),
        "models_per_level": [len(g.members) for g in groups],
        "fitted_per_level": [sum(m["fitted"] for m in models if m["label_noise"] == lv) for lv in s.noise_levels],
        "epochs_run": [g.info["epochs_run"] for g in groups],
        "training_seconds": [g.info["seconds"] for g in groups],
        "models": models,
        "trend": stats.spearman(noise, log_esc, s.n_boot, seed=21),
        "trend_margin": stats.spearman(noise, margin, s.n_boot, seed=22),
        "trend_input": stats.spearman(noise, log_in, s.n_boot, seed=23),
        "escape_vs_margin": stats.spearman(log_esc, margin, s.n_boot, seed=24),
        "trend_given_margin": stats.partial_spearman(log_esc, noise, [margin], s.n_boot, seed=25),
        "trend_given_margin_and_input": stats.partial_spearman(log_esc, noise, [margin, log_in], s.n_boot, seed=26),
        "ends": stats.mann_whitney_exact(log_esc[lo_end], log_esc[hi_end]), "tests_over": tests_over,
        "ends_margin": stats.mann_whitney_exact(margin[lo_end], margin[hi_end]),
        "ends_input": stats.mann_whitney_exact(log_in[lo_end], log_in[hi_end]),
        "perturbed_forwards": int(2 * len(models) * len(rows) * len(sigmas) * s.draws),
    }


def _settings(s) -> dict:
    d = dataclasses.asdict(s)
    d["series"]["key"] = s.series.key()
    return d


def _plot(out: Path, esc: dict, curves: dict, sigmas: np.ndarray, results: dict) -> None:
    plt = fileio.pyplot()
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
    fileio.save_figure(fig, out / "random_labels.png", dpi=120)


# ------------------------------------------------------------------------------ report section

SECTION = """## Claim 2 — structured vs random labels

**Verdict: {verdict}.**

{lines}

Setup: {n_clean} clean and {n_random} random-label ViTs ({size}) on the same {n_train} `{data}`
training images. {recipe} Clean models: training accuracy {clean_train}, test accuracy
{clean_test}. Random-label models: training accuracy on their own labels {random_train}, test
accuracy {random_test} (chance 0.1). APEX on {n_eval} of the training images, noise on every
block's output, {n_sigmas} σ from {sigma_lo} to {sigma_hi} (× site RMS; absolute rerun: {abs_lo}
to {abs_hi}), {draws} draws.

| | value |
|---|---|
| models separated by their median escape σ: AUROC (exact one-sided Mann–Whitney p) | {model_level} |
| the same with absolute σ | {model_abs} |
| baseline: models separated by their median clean softmax margin | {model_margin} |
{input_row}| AUROC, all images of all models pooled [95% CI, bootstrap over models] | {pooled} |
| AUROC per seed pair (P[escape σ under the clean model > under the random-label one]), mean [95% t-CI] over {n_pairs} pairs | {pair} |
| per-pair AUROCs | {pairs} |
| median escape σ (geometric mean over models): clean / random labels | {med_clean} / {med_random} |

{series}{estimator}Run time {seconds} s. Files: `random_labels/models.csv`, `random_labels/samples.csv`,
`random_labels/series.csv`, `random_labels/summary.json`.

![escape σ distributions](random_labels/random_labels.png)
"""


OUTDATED = """## Claim {claim} — {title}

**Verdict: not run (the summary predates this protocol).** `{name}/summary.json` was written by an
earlier protocol (before the exact model-level test, the absolute-σ rerun, or the clean and
random-label groups taken from the label-noise series' fitted ends); rerun `scripts/{name}.py` (its
numbers are not shown: they come from the earlier protocol).
"""


def _input_row(r: dict) -> str:
    """The input-noise baseline's table row (empty for a summary written before it existed)."""
    if "model_level_input_noise" not in r:
        return ""
    d = r["input_noise"]
    return (f"| baseline: models separated by their median input-noise escape σ (the same rule, grid and draws "
            f"with noise on the pixels only: {d['where']}; {d['extra_perturbed_forwards']:,} extra perturbed "
            f"forwards) | "
            f"{_test_text(r['model_level_input_noise'])} |\n")


SERIES_TEXT = """### Label-noise series: every model fits its labels

A review found a confound in an earlier protocol: its random-label models, trained with the clean
models' fixed recipe, underfit (training accuracy 0.63–0.88), so they were less confident, and the
clean margin and input noise separated the groups as well as escape σ did. Here, as for the two
groups above (this series' ends), each noise
level ({levels} random labels) is a group of {per_level} ViTs ({size}) on the same {n_train} `{data}`
training images, all trained until they fit their own labels (training-time accuracy ≥
{fit}; constant learning rate {lr}, no weight decay, at most {max_epochs} epochs; epochs run per
level: {epochs}; the same {per_level} initializations at every level). Models whose final training
accuracy stays below {fit} are excluded and listed: {flagged}. Per model: the median escape σ,
median clean softmax margin and median input-noise escape σ on the same {n_eval} training images
(the grid and draws above). Spearman ρ over the {tests_over} [95% BCa interval]:

| over models | ρ [95% CI] |
|---|---|
| noise share vs log median escape σ (the claim's trend) | {trend} |
| noise share vs median clean margin (baseline) | {trend_margin} |
| noise share vs log median input-noise escape σ (baseline) | {trend_input} |
| noise share vs log escape σ given the margin (partial ρ) | {given_margin} |
| noise share vs log escape σ given the margin and input-noise escape σ (partial ρ) | {given_both} |
| 0% vs 100% noise, AUROC (exact p): escape σ / margin / input-noise escape σ | {ends} / {ends_margin} / {ends_input} |

| noise | models fitted | training accuracy | test accuracy | median escape σ (geometric mean) | median margin (mean) |
|---|---|---|---|---|---|
{level_rows}
"""


def _geometric_mean(values) -> float:
    """Geometric mean of escape σ values read from a summary (null = never escaped: +inf)."""
    v = np.array([np.inf if x is None else x for x in values], np.float64)
    return float(np.exp(np.log(v).mean()))


def series_text(summary: dict) -> str:
    """The label-noise series' subsection (empty for a summary written before it existed)."""
    r, st = summary["results"], summary["settings"]
    if "label_noise" not in r:
        return ""
    d, z = r["label_noise"], st["series"]
    flagged = [m for m in d["models"] if not m["fitted"]]
    rows = []
    for level, fitted, n in zip(d["levels"], d["fitted_per_level"], d["models_per_level"]):
        ms = [m for m in d["models"] if m["label_noise"] == level]
        ok = [m for m in ms if m["fitted"]] or ms
        rows.append(f"| {num(100 * level, 0)}% | {fitted} of {n} | {span(m['train_accuracy'] for m in ms)} | "
                    f"{span(m['test_accuracy'] for m in ms)} | "
                    f"{num(_geometric_mean(m['median_escape'] for m in ok))} | "
                    f"{num(float(np.mean([m['median_clean_margin'] for m in ok])))} |")
    return SERIES_TEXT.format(
        levels=", ".join(f"{num(100 * x, 0)}%" for x in d["levels"]), per_level=max(d["models_per_level"]),
        size=z["size"], n_train=z["n_train"], data=z["data"], fit=d["fit_threshold"], lr=z["random_learning_rate"],
        max_epochs=z["random_max_epochs"], epochs=", ".join(str(e) for e in d["epochs_run"]),
        flagged=("none" if not flagged else ", ".join(
            f"noise {num(100 * m['label_noise'], 0)}% seed {m['seed']} (train accuracy {num(m['train_accuracy'])})"
            for m in flagged)),
        n_eval=d["n_eval"], tests_over=d["tests_over"], trend=ci(d["trend"], "rho"), trend_margin=ci(d["trend_margin"], "rho"),
        trend_input=ci(d["trend_input"], "rho"), given_margin=ci(d["trend_given_margin"], "rho"),
        given_both=ci(d["trend_given_margin_and_input"], "rho"), ends=_test_text(d["ends"]),
        ends_margin=_test_text(d["ends_margin"]), ends_input=_test_text(d["ends_input"]),
        level_rows="\n".join(rows)) + "\n"


def claim_verdicts(results: dict) -> list:
    """Every verdict the section states: the clean-vs-random ones, then the series' (if run)."""
    return verdicts(results) + (series_verdicts(results["label_noise"]) if "label_noise" in results else [])


def section(summary: dict) -> tuple[str, str]:
    """The README section of this claim from its summary.json: (verdict, markdown text); a
    summary written by the earlier protocol gets a section saying so."""
    r, st = summary["results"], summary["settings"]
    if "model_level" not in r or "groups" not in r:
        return "not run (outdated summary)", OUTDATED.format(claim=CLAIM, title=TITLE, name=NAME)
    v, _ = verdict(r)
    z = st["series"]
    c, rd = r["models"]["clean"], r["models"]["random"]
    recipe = (f"Both groups are the ends of the label-noise series below (0% and 100% random labels), trained "
              f"with one recipe until each model fits its labels (training-time accuracy ≥ {z['fit_threshold']}; "
              f"constant learning rate {z['random_learning_rate']}, no weight decay, at most "
              f"{z['random_max_epochs']} epochs; epochs run: {r['epochs_run']['clean']} clean, "
              f"{r['epochs_run']['random']} random labels) and paired seeds: random-label model i has clean "
              f"model i's initialization and batch order, so the two differ only in their labels.")
    text = SECTION.format(
        verdict=v, lines="\n".join(x.line() for x in claim_verdicts(r)), series=series_text(summary), n_clean=len(c), n_random=len(rd),
        size=z["size"], n_train=z["n_train"], data=z["data"], recipe=recipe,
        clean_train=span(m["train_accuracy"] for m in c), clean_test=span(m["test_accuracy"] for m in c),
        random_train=span(m["train_accuracy"] for m in rd), random_test=span(m["test_accuracy"] for m in rd),
        n_eval=r["n_eval"], n_sigmas=st["n_sigmas"], sigma_lo=st["sigma_lo"], sigma_hi=st["sigma_hi"],
        abs_lo=st["abs_sigma_lo"], abs_hi=st["abs_sigma_hi"], draws=st["draws"],
        model_level=_test_text(r["model_level"]), model_abs=_test_text(r["model_level_absolute"]),
        model_margin=_test_text(r["model_level_clean_margin"]), input_row=_input_row(r), pooled=ci(r["pooled_sample_auroc"], "auroc"),
        n_pairs=r["pair_auroc_mean"]["n"], pair=ci(r["pair_auroc_mean"], "mean"),
        pairs=", ".join(num(a) for a in r["pair_auroc"]),
        med_clean=num(r["median_escape_mean"]["clean"]), med_random=num(r["median_escape_mean"]["random"]),
        estimator=estimator_sentence(summary), seconds=summary["timing"]["total_seconds"])
    return v, text
