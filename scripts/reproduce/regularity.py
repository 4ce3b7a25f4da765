"""Claim 1 — APEX regularity: escape noise agrees with established per-sample regularity metrics.

Protocol. The pool is the train split of the data set. M small ViTs are trained at once
(`ensembles.train_ensemble`, one vmapped Optax step), each on its own random half of the pool.
Models 0..P−1 (`n_probed`, 3) are probed in turn: APEX (Gaussian noise on every block's output, σ
relative to each site's RMS, K draws per σ) gives the escape σ of each of a probed model's
training examples (a random sample of them). The regularity metrics of those examples come from
the *other* M − 1 models only, so they are independent of the probed model:

- C-score estimate (Jiang et al. 2021): accuracy on the example of the models that did not train
  on it (hold-out accuracy over random subsets);
- learning-speed proxy: the mean training-time accuracy on the example (correct in its training
  batch, before the update) over all epochs of the models that trained on it.

Reported: Spearman ρ (escape σ vs each metric) with BCa bootstrap 95% intervals over
examples; the same for the area under the consistency curve (a finer regularity score than the
escape point); plots.

Confidence baseline. The probed model's clean softmax margin (probability of its prediction
minus the runner-up's) is the cheapest regularity score there is. Reported: its own ρ with each
metric, its ρ with escape σ, and the partial Spearman ρ of escape σ and each metric given the
margin (does escape σ say more than the clean confidence?), and the share of examples at the
metrics' ceiling (C-score or learning speed exactly 1), where no rank statistic can order them.

Input-noise baseline. Is escape σ about the hidden activations at all, or would noise on the
input say the same? The same escape rule, σ grid and draws with Gaussian noise on the
normalized pixel values only (`common.pixel_noise_consistency`; σ × their RMS; the pixels, not
`hook_embed`, which also holds the [CLS] token and position embeddings) gives an input-noise
escape σ per example. Reported: its ρ with each metric and with escape σ, and the partial ρ of
escape σ and each metric given [margin, input-noise escape σ]; its cost (as many perturbed
forwards as APEX's sweep).

Verdicts (`rules.regularity`, written after the first results): each correlation's 95% interval against
ρ = 0 and the smallest agreement that counts, ρ = 0.1 (`verdicts.spearman_rule`); the two
correlations with the metrics are the abstract's claim, the baseline-adjusted ones extensions.
Over the probed models (`rules.regularity.verdicts_over_runs`, pre-registered): a sub-claim is
reproduced if ≥ 2/3 of the probed models reproduce it and none contradicts, not reproduced if ≥
2/3 do not, else inconclusive; the report states "k of n" for each.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

import apex_jax
from apex_jax import fileio
from apex_jax.data import load_dataset, split_dataset
from apex_jax.models import VIT_PRESETS
from . import common, ensembles, provenance, stats, vit
from .reporting import ci, estimator_sentence, num
from .rules.regularity import (SMALLEST_RHO, verdict, verdict_lines, verdict_over_runs, verdicts,  # noqa: F401
                               verdicts_over_runs)  # (the claim's rules)

NAME = "regularity"
CLAIM = 1
TITLE = "APEX regularity"


@dataclasses.dataclass(frozen=True)
class Settings:
    data: str = "mnist5k"
    size: str = "tiny"
    split_seed: int = 0
    n_models: int = 24
    subset: float = 0.5
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 3e-3
    n_apex: int = 1000
    sigma_lo: float = 0.2
    sigma_hi: float = 8.0
    n_sigmas: int = 14
    draws: int = 32
    seed: int = 0
    checkpoint_every: int = 5  # epochs between orbax checkpoints (each costs ~1 s at full size)
    n_probed: int = 3  # models 0..n_probed-1 are probed in turn, each against the other n_models - 1
    n_boot: int = stats.N_BOOT  # bootstrap resamples of every interval

    @classmethod
    def quick(cls) -> "Settings":
        # 6 models on 46% of the 1,258 training digits = 18 steps of 32 per epoch: the shapes
        # of the quick zoo's training, so one compiled epoch serves both in one process
        return cls(data="digits", size="micro", n_models=6, subset=0.46, epochs=16, batch_size=32,
                   learning_rate=5e-3, n_apex=48, sigma_lo=0.02, n_sigmas=8, draws=8, checkpoint_every=1000,
                   n_probed=2, n_boot=200)


def main(argv=None) -> dict:
    args = common.parser(NAME, "Claim 1: escape noise vs C-score estimate and learning speed.").parse_args(argv)
    s = Settings.quick() if args.quick else Settings()
    return run(s, common.out_dir(args, NAME), Path(args.work), common.logger(args), quick=args.quick)


def run(s: Settings, out: Path, work: Path, log=print, quick: bool = False) -> dict:
    prov = provenance.stamp(NAME)  # the code and rules about to produce the numbers
    timer = common.Timer()
    pool = split_dataset(load_dataset(s.data), seed=s.split_seed)["train"]
    model = vit.template(pool, s.size)
    res, params = _ensemble(s, pool, model, work, log)
    timer.mark("train_ensemble")
    sigmas = common.sigma_grid(s.sigma_lo, s.sigma_hi, s.n_sigmas)
    sites = apex_jax.parse_sites(model, "resid_post")
    runs, data = [], []
    for i in range(s.n_probed):  # each probed model's metrics come from the other models only
        r, d = probe_one(s, i, res, pool, model, params[i])
        runs.append(r)
        data.append(d)
        timer.mark(f"probe_model_{i}")
    results = {**runs[0], "runs": runs,
               "ensemble_test_accuracy": res["test_accuracy"], "ensemble_train_accuracy": res["train_accuracy"],
               "ensemble_training_seconds": round(float(res["seconds"]), 1)}
    timer.mark("statistics")
    fileio.write_rows(out / "samples.csv",
                     ["probed_model", "id", "label", "clean_prediction", "escape_sigma", "consistency_area", "cscore",
                      "learning_speed", "clean_margin", "input_noise_escape_sigma"],
                     [(i, int(pool.ids[r]), int(pool.labels[r]), int(d["clean"][j]), d["escape"][j], d["area"][j],
                       d["cscore"][j], d["speed"][j], d["margin"][j], d["input_escape"][j])
                      for i, d in enumerate(data) for j, r in enumerate(d["rows"])])
    d = data[0]  # the figure shows the first probed model
    common.plot_regularity(out / "regularity.png", d["escape"], d["cscore"], d["speed"], results)
    timer.mark("outputs")
    summary = {"claim": CLAIM, "name": NAME, "quick": quick, **prov, "settings": dataclasses.asdict(s),
               "escape_sigma_estimator": common.ESCAPE_SIGMA_ESTIMATOR, "sigmas": sigmas.tolist(), "sites": sites,
               "mean_consistency": data[0]["mean_consistency"],
               "results": results, "timing": timer.summary(), "versions": fileio.versions()}
    fileio.write_json(out / "summary.json", summary)
    r = results
    for run_ in r["runs"]:
        log(f"[regularity] model {run_['probed_model']}, n={run_['n_examples']}: Spearman(log escape σ, C-score) = "
            f"{common.fmt_rho(run_['escape_vs_cscore'])}; (log escape σ, learning speed) = "
            f"{common.fmt_rho(run_['escape_vs_learning_speed'])}")
    log(f"[regularity] over {len(r['runs'])} probed models: {claim_verdict(r)[1]} ({summary['timing']['total_seconds']} s)")
    return summary


def probe_one(s: Settings, i: int, res: dict, pool, model, params) -> tuple[dict, dict]:
    """APEX, the clean margin and the input-noise baseline on a random sample of probed model
    `i`'s training examples, against the C-score estimate and learning speed of the other
    models only. Returns (its results, its per-example arrays for the outputs)."""
    rng = np.random.default_rng([s.seed, i]) if i else np.random.default_rng(s.seed)  # model 0: the earlier sample
    own = np.flatnonzero(res["in_train"][i])
    rows = np.sort(rng.choice(own, min(s.n_apex, len(own)), replace=False))
    sigmas = common.sigma_grid(s.sigma_lo, s.sigma_hi, s.n_sigmas)
    sites = apex_jax.parse_sites(model, "resid_post")
    x = vit.pixels(model, pool.inputs[rows])
    ar = common.apex_sweeps(model, [params], x, pool.ids[rows], sigmas, sites, s.draws, s.seed)[0]
    escape = common.escape_sigma_interpolated(ar.consistency, sigmas)
    area = ar.consistency.mean(1)  # mean share kept over the log-spaced grid
    margin = common.softmax_margin(common.clean_logits(model, params, {"pixel_values": x}))
    # the input-noise baseline: the same escape rule, σ grid and draws, noise on the pixels only
    kept_in, _, pixel_rms = common.pixel_noise_consistency(model, params, x, pool.ids[rows], sigmas, s.draws, s.seed)
    input_escape = common.escape_sigma_interpolated(kept_in, sigmas)
    others = np.arange(res["in_train"].shape[0]) != i
    seen, hits = res["train_seen"][others], res["train_hits"][others]
    out_mask = ~res["in_train"][others]
    correct = res["final_correct"][others]
    with np.errstate(invalid="ignore", divide="ignore"):
        speed = np.where(seen.sum(0) > 0, hits.sum(0) / np.maximum(seen.sum(0), 1), np.nan)[rows]
        n_out = out_mask.sum(0)
        cscore = np.where(n_out > 0, (correct & out_mask).sum(0) / np.maximum(n_out, 1), np.nan)[rows]
    log_escape = np.log(escape)
    results = {
        "probed_model": i,
        "escape_vs_cscore": stats.spearman(log_escape, cscore, s.n_boot, seed=1),
        "escape_vs_learning_speed": stats.spearman(log_escape, speed, s.n_boot, seed=2),
        "cscore_vs_learning_speed": stats.spearman(cscore, speed, s.n_boot, seed=3),
        "area_vs_cscore": stats.spearman(area, cscore, s.n_boot, seed=4),
        "area_vs_learning_speed": stats.spearman(area, speed, s.n_boot, seed=5),
        **margin_baseline(log_escape, cscore, speed, margin, s.n_boot),
        **input_noise_baseline(log_escape, input_escape, cscore, speed, margin, sigmas, s.draws,
                               where=common.PIXEL_NOISE, scale=pixel_rms, n_boot=s.n_boot),
        "n_examples": int(len(rows)), "pool_size": int(len(pool)),
        "clean_accuracy_probed": float((ar.clean == pool.labels[rows]).mean()),
        "escaped_on_grid": int(np.isfinite(escape).sum()),
        "escape_below_grid": int((escape <= sigmas[0]).sum()),
        "escape_sigma_quartiles": np.quantile(escape, [0.25, 0.5, 0.75]).tolist(),
        "cscore_mean": float(np.nanmean(cscore)), "learning_speed_mean": float(np.nanmean(speed)),
        "holdout_models_per_example": {"min": int(n_out[rows].min()), "mean": float(n_out[rows].mean())},
    }
    data = {"rows": rows, "clean": ar.clean, "escape": escape, "area": area, "cscore": cscore, "speed": speed,
            "margin": margin, "input_escape": input_escape, "mean_consistency": ar.consistency.mean(0).tolist()}
    return results, data


def claim_verdicts(results: dict) -> list:
    """The verdicts the report states: over every probed model when the summary has several
    (`rules.regularity.verdicts_over_runs`), else the single run's."""
    return verdicts_over_runs(results["runs"]) if "runs" in results else verdicts(results)


def claim_verdict(results: dict) -> tuple[str, str]:
    """The claim's outcome and sentence from `claim_verdicts`' rules."""
    return verdict_over_runs(results["runs"]) if "runs" in results else verdict(results)


def margin_baseline(log_escape: np.ndarray, cscore: np.ndarray, speed: np.ndarray, margin: np.ndarray,
                    n_boot: int = stats.N_BOOT) -> dict:
    """The clean-confidence baseline (all [n] per example): the margin's own Spearman ρ with
    each metric and with log escape σ, the partial ρ of log escape σ and each metric given the
    margin, and the share of examples at each metric's ceiling (exactly 1). `n_boot`: bootstrap
    resamples of every interval."""
    return {
        "clean_margin_vs_cscore": stats.spearman(margin, cscore, n_boot, seed=6),
        "clean_margin_vs_learning_speed": stats.spearman(margin, speed, n_boot, seed=7),
        "escape_vs_clean_margin": stats.spearman(log_escape, margin, n_boot, seed=8),
        "escape_vs_cscore_given_margin": stats.partial_spearman(log_escape, cscore, [margin], n_boot, seed=9),
        "escape_vs_learning_speed_given_margin": stats.partial_spearman(log_escape, speed, [margin], n_boot, seed=10),
        "cscore_ceiling_share": float(np.mean(cscore[np.isfinite(cscore)] == 1)),
        "learning_speed_ceiling_share": float(np.mean(speed[np.isfinite(speed)] == 1)),
        "clean_margin_quartiles": np.quantile(margin, [0.25, 0.5, 0.75]).tolist(),
    }


def input_noise_baseline(log_escape: np.ndarray, input_escape: np.ndarray, cscore: np.ndarray, speed: np.ndarray,
                         margin: np.ndarray, sigmas: np.ndarray, draws: int, where: str, scale: float,
                         n_boot: int = stats.N_BOOT) -> dict:
    """The input-noise baseline (all [n] per example; `input_escape` is the escape σ of the same
    rule with noise at the model's input only, on the same grid `sigmas` [G] and `draws`): its
    Spearman ρ with each metric and with log (activation-noise) escape σ, and the partial ρ of
    log escape σ and each metric given both baselines, [clean margin, log input-noise escape σ]
    (does noise on the hidden activations say something that input noise and the clean
    confidence do not?). `where` says where the input noise goes, `scale` the RMS its σ is
    relative to; the sweep's extra cost is n × G × draws perturbed forwards, as many as APEX's.
    `n_boot`: bootstrap resamples of every interval."""
    log_input = np.log(input_escape)
    n = len(log_escape)
    both = [margin, log_input]
    return {
        "input_escape_vs_cscore": stats.spearman(log_input, cscore, n_boot, seed=11),
        "input_escape_vs_learning_speed": stats.spearman(log_input, speed, n_boot, seed=12),
        "escape_vs_input_escape": stats.spearman(log_escape, log_input, n_boot, seed=13),
        "escape_vs_cscore_given_margin_and_input": stats.partial_spearman(log_escape, cscore, both, n_boot, seed=14),
        "escape_vs_learning_speed_given_margin_and_input": stats.partial_spearman(log_escape, speed, both, n_boot,
                                                                                  seed=15),
        "input_noise": {
            "where": where, "rms": float(scale),
            "escaped_on_grid": int(np.isfinite(input_escape).sum()),
            "escape_below_grid": int((input_escape <= sigmas[0]).sum()),
            "escape_sigma_quartiles": np.quantile(input_escape, [0.25, 0.5, 0.75], method="inverted_cdf").tolist(),
            "extra_perturbed_forwards": int(n * len(sigmas) * draws),
        },
    }


def _ensemble(s: Settings, pool, model, work: Path, log):
    """Trains (or loads) the ensemble (every member saved); returns its per-example records and
    the probed models' params (members 0..n_probed-1)."""
    key = json.dumps({k: v for k, v in dataclasses.asdict(s).items()
                      if k in ("data", "size", "split_seed", "n_models", "subset", "epochs", "batch_size",
                               "learning_rate", "seed")} | {"saved_members": "all"}, sort_keys=True)
    folder = work / NAME / f"{s.data}-{s.size}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    done = folder / "ensemble.npz"
    if not done.exists():
        folder.mkdir(parents=True, exist_ok=True)
        n = len(pool)
        members = ensembles.random_members(n, s.n_models, int(round(s.subset * n)), seed=s.seed)
        params = vit.fresh_params(model, range(s.n_models))
        log(f"training {s.n_models} ViTs ({s.size}) at once, each on a random {s.subset:.0%} of "
            f"{n} {s.data} images, {s.epochs} epochs")
        cfg = ensembles.EnsembleConfig(epochs=s.epochs, batch_size=s.batch_size, learning_rate=s.learning_rate,
                                       seed=s.seed, checkpoint_every=s.checkpoint_every)
        res = ensembles.train_ensemble(model, params, vit.pixels(model, pool.inputs), pool.labels, members, cfg,
                                       run_dir=folder, log=log)
        test = split_dataset(load_dataset(s.data), seed=s.split_seed)["test"]
        pred = ensembles.predict_stack(model, res.params, vit.pixels(model, test.inputs)).argmax(-1)
        for i, p in enumerate(ensembles.unstack(res.params)):  # every member can be a probed model
            model.save(folder / f"member-{i}", p)
        np.savez(folder / "tmp.npz", train_hits=res.train_hits, train_seen=res.train_seen,
                 final_correct=res.final_correct, in_train=res.in_train,
                 test_accuracy=(pred == test.labels).mean(1), train_accuracy=res.train_accuracy(),
                 seconds=res.seconds)
        (folder / "tmp.npz").rename(done)
    with np.load(done) as z:
        res = {k: z[k] for k in z.files}
    res["test_accuracy"] = res["test_accuracy"].round(4).tolist()
    res["train_accuracy"] = res["train_accuracy"].round(4).tolist()
    return res, [apex_jax.load(str(folder / f"member-{i}")).params for i in range(s.n_probed)]


# ------------------------------------------------------------------------------ report section

SECTION = """## Claim 1 — escape noise agrees with per-sample regularity metrics

**Verdict: {verdict}.**

{lines}

Setup: {n_models} ViTs ({size}: d_model {d_model}, {n_layers} layers) trained at once (one vmapped
Optax step) on random {subset_pct}% subsets of the {pool}-image `{data}` train split, {epochs}
epochs; their test accuracy {test_acc_min}–{test_acc_max}. {probed}: APEX noise on every
block's output, {n_sigmas} σ from {sigma_lo} to {sigma_hi}, {draws} draws, on {n} of its training
images (clean accuracy {probed_acc}); {escaped} of them escape on the grid. The C-score estimate
(hold-out accuracy, {holdout_mean} hold-out models per image on average) and the learning-speed
proxy (mean training-time accuracy) come from the other {others} models only. The table is model 0's.

| escape measure | vs C-score estimate: Spearman ρ [95% CI] | vs learning speed: Spearman ρ [95% CI] |
|---|---|---|
| log escape σ | {esc_c} | {esc_s} |
| area under the consistency curve | {area_c} | {area_s} |
{margin_rows}{input_rows}
{runs}{ceiling}{input_noise}{estimator}The two regularity metrics agree with each other at ρ = {c_s}. Run time {seconds} s (training
the ensemble: {train_seconds} s, wall clock, possibly in an earlier run).
Files: `regularity/samples.csv`, `regularity/summary.json`.

![escape σ vs regularity](regularity/regularity.png)
"""



def _table_rows(r: dict, rows: list[tuple[str, str]]) -> str:
    """Correlation-table rows "| label | ρ vs C-score | ρ vs learning speed |" for (label, key
    template with {} for the metric); empty when the summary predates those keys."""
    metrics = ("cscore", "learning_speed")
    if any(key.format(m) not in r for _, key in rows for m in metrics):
        return ""
    return "".join(f"| {label} | " + " | ".join(ci(r[key.format(m)], "rho") for m in metrics) + " |\n"
                   for label, key in rows)


def margin_rows(r: dict) -> str:
    """The confidence-baseline rows of the correlation table (empty for older summaries)."""
    return _table_rows(r, [("clean softmax margin (baseline)", "clean_margin_vs_{}"),
                           ("log escape σ given the margin (partial ρ)", "escape_vs_{}_given_margin")])


def input_rows(r: dict) -> str:
    """The input-noise baseline rows of the correlation table (empty for older summaries)."""
    return _table_rows(r, [("log input-noise escape σ (baseline)", "input_escape_vs_{}"),
                           ("log escape σ given the margin and the input-noise escape σ (partial ρ)",
                            "escape_vs_{}_given_margin_and_input")])


def input_sentence(r: dict) -> str:
    """What the input-noise baseline is and cost; for a summary written before it existed, a
    sentence saying it is missing."""
    if "input_noise" not in r:
        return ("The input-noise baseline is not in this summary, which predates it: rerun the script to add "
                "it. ")
    d = r["input_noise"]
    return (f"Input-noise baseline: the same escape rule, σ grid and draws with noise at the model's input "
            f"only — {d['where']} ({d['extra_perturbed_forwards']:,} extra perturbed forwards, as many as the "
            f"APEX sweep); "
            f"{d['escaped_on_grid']} of the {r['n_examples']} examples escape on the grid "
            f"({d['escape_below_grid']} already at its smallest σ). Activation- vs input-noise escape σ: ρ = "
            f"{ci(r['escape_vs_input_escape'], 'rho')}. ")


def ceiling_sentence(r: dict) -> str:
    """The ceiling and escape-vs-margin sentence; for a summary written before the confidence
    baseline existed, a sentence saying it is missing."""
    if "cscore_ceiling_share" not in r:
        return ("The clean-margin (confidence) baseline is not in this summary, which predates it: rerun the "
                "script to add it. ")
    return (f"Ceiling: {num(100 * r['cscore_ceiling_share'], 0)}% of the examples have a C-score estimate of "
            f"exactly 1 and {num(100 * r['learning_speed_ceiling_share'], 0)}% a learning speed of exactly 1 "
            f"(ties that no score can order). Log escape σ vs the clean margin: ρ = "
            f"{ci(r['escape_vs_clean_margin'], 'rho')}. ")


def correlation_cells(r: dict) -> dict:
    """The table cells shared with the MiniLM part: every Spearman ρ [95% CI] of the summary."""
    return dict(esc_c=ci(r["escape_vs_cscore"], "rho"), esc_s=ci(r["escape_vs_learning_speed"], "rho"),
                area_c=ci(r["area_vs_cscore"], "rho"), area_s=ci(r["area_vs_learning_speed"], "rho"),
                c_s=ci(r["cscore_vs_learning_speed"], "rho"))


def runs_text(r: dict) -> str:
    """The table of every probed model's correlations (the table above is model 0's); empty for a
    summary with one probed model."""
    if "runs" not in r:
        return ""
    rows = "".join(f"| {x['probed_model']} | {x['n_examples']} | {ci(x['escape_vs_cscore'], 'rho')} | "
                   f"{ci(x['escape_vs_learning_speed'], 'rho')} | "
                   f"{' / '.join(ci(x[k], 'rho') for k in ('escape_vs_cscore_given_margin', 'escape_vs_learning_speed_given_margin'))} |\n"
                   for x in r["runs"])
    return (f"Every probed model (the verdicts count them; each one's C-score estimate and learning speed come "
            f"from the other models):\n\n| probed model | examples | log escape σ vs C-score: ρ | vs learning "
            f"speed: ρ | given the margin: partial ρ (C-score / learning speed) |\n|---|---|---|---|---|\n{rows}\n")


def section(summary: dict) -> tuple[str, str]:
    """The README section of this claim from its summary.json: (verdict, markdown text)."""
    r, st = summary["results"], summary["settings"]
    v, _ = claim_verdict(r)
    acc = r["ensemble_test_accuracy"]
    size = VIT_PRESETS[vit.SIZES[st["size"]]]
    text = SECTION.format(
        verdict=v, lines="\n".join(x.line() for x in claim_verdicts(r)), runs=runs_text(r), margin_rows=margin_rows(r), ceiling=ceiling_sentence(r),
        input_rows=input_rows(r), input_noise=input_sentence(r),
        n_models=st["n_models"], size=st["size"], d_model=size["hidden_size"],
        n_layers=size["num_hidden_layers"], subset_pct=round(100 * st["subset"]), pool=f"{r['pool_size']:,}",
        data=st["data"], epochs=st["epochs"], test_acc_min=num(min(acc)), test_acc_max=num(max(acc)),
        n_sigmas=st["n_sigmas"], sigma_lo=st["sigma_lo"], sigma_hi=st["sigma_hi"], draws=st["draws"],
        n=r["n_examples"], probed_acc=num(r["clean_accuracy_probed"]), escaped=r["escaped_on_grid"],
        probed=(f"Models 0–{len(r['runs']) - 1} are probed in turn (model 0's numbers below)" if "runs" in r
                else "Model 0 is probed"),
        holdout_mean=num(r["holdout_models_per_example"]["mean"], 1), others=st["n_models"] - 1,
        **correlation_cells(r), estimator=estimator_sentence(summary), seconds=summary["timing"]["total_seconds"],
        train_seconds=r.get("ensemble_training_seconds", "n/a"))
    return v, text
