"""Claim 4 — large-σ backdoor bias: under large activation noise, a backdoored model's
predictions concentrate on its backdoor target class, so the class shares at large σ expose
backdoored models without any triggered input.

Protocol. The zoo's clean and BadNets-backdoored ViTs (`zoo`; targets 0, 2, 4, ... over the
seeds) are probed with APEX on clean test images (no trigger) at two site sets: every block's
output (`resid_post`) and the embedding output only (`hook_embed`, input-only noise), with σ
relative to each site's RMS and, rerun, absolute. Each model's class shares at a σ: the share of
all draws over all inputs predicting each class.

Calibration. The last `n_calibration` models of each group are a held-out calibration group:
the site set and σ are chosen on them only, by a rule fixed here — the (site set, σ) whose
largest class share best separates the calibration group's backdoored models from its clean ones
(AUROC; ties: the larger gap in mean largest share, then the first site set, then the smaller
σ). The evaluated models (the others) never enter the choice. Relative and absolute σ are
calibrated separately.

Tests on the evaluated models at the chosen site set and σ (models are the units; one value per
model, so no model's many inputs or classes count as independent negatives):

- target unknown (primary): each model's largest class share, backdoored vs clean, exact
  one-sided Mann–Whitney test (`stats.mann_whitney_exact`);
- magnitude: each backdoored model's share of its target minus the clean models' mean share of
  that class (t interval over backdoored models), its z against the clean models' spread and
  percentile in their distribution; how often the dominant class is the target;
- target known (reported): each backdoored model's target share vs each clean model's mean share
  of the targets in use (exact Mann–Whitney).

Also each model's clean accuracy and attack success rate, the clean models' rate of predicting
each target on stamped images, and the target-unknown AUROC at every σ of both site sets
(descriptive: it shows how much a rule choosing σ on the evaluated models could gain).

Verdicts (`rules.backdoor_bias`): target-unknown detection by `verdicts.rank_test_rule`
(AUROC 0.9 as the separation "pronounced" implies); magnitude by `verdicts.interval_rule` with
a smallest effect of +0.1 target share (reproduced if the interval lies above it, not
reproduced if below); the absolute-σ rerun as an extension.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

import apex_jax
from apex_jax import check_sigmas, fileio
from . import backdoor, common, ensembles, provenance, stats, vit, zoo
from .reporting import ci, num
from .rules.backdoor_bias import NEEDED_AUROC, SMALLEST_EXCESS, _test_text, verdict, verdicts  # noqa: F401  (the claim's rules)

NAME = "backdoor_bias"
CLAIM = 4
TITLE = "large-σ backdoor bias"
SITE_SETS = ("resid_post", "embed")


@dataclasses.dataclass(frozen=True)
class Settings:
    zoo: zoo.ZooConfig = zoo.ZooConfig()
    n_inputs: int = 64  # models are the units: 64 inputs × 16 draws = 1,024 predictions per model and σ
    sigmas: tuple = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)  # large σ: below 1 × RMS the input still decides
    abs_sigmas: tuple = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)  # noise std, not × site RMS
    draws: int = 16
    seed: int = 0
    n_calibration: int = 4  # per group: the last members, used only to choose the site set and σ

    @classmethod
    def quick(cls) -> "Settings":
        # 8 σ values and 8 draws on 48 inputs, like the other quick runs: one compiled kernel
        grid = tuple(np.logspace(-0.5, 1.5, 8).round(4))
        return cls(zoo=zoo.ZooConfig.quick(), n_inputs=48, sigmas=grid, abs_sigmas=grid, draws=8, n_calibration=2)


MODES = ("relative", "absolute")


def main(argv=None) -> dict:
    args = common.parser(NAME, "Claim 4: class shares at large σ in clean vs backdoored models.").parse_args(argv)
    s = Settings.quick() if args.quick else Settings()
    return run(s, common.out_dir(args, NAME), Path(args.work), common.logger(args), quick=args.quick)


def run(s: Settings, out: Path, work: Path, log=print, quick: bool = False) -> dict:
    prov = provenance.stamp(NAME)  # the code and rules about to produce the numbers
    timer = common.Timer()
    clean = zoo.get_group(s.zoo, "clean", work, log)
    bd = zoo.get_group(s.zoo, "backdoor", work, log)
    timer.mark("zoo")
    n_cal = s.n_calibration
    for g in (clean, bd):
        if not 2 <= len(g.params) - n_cal:
            raise ValueError(f"{g.kind} group has {len(g.params)} models: too few for {n_cal} calibration models "
                             f"and at least 2 evaluated ones.")
    if n_cal < 1:
        raise ValueError(f"n_calibration must be >= 1 (the site set and σ are chosen on those models); got {n_cal}.")
    test = zoo.splits(s.zoo)["test"]
    model = clean.model
    targets = [int(t) for t in bd.targets]
    # clean models on stamped test images: how often the trigger alone yields each target
    trigger = backdoor.Trigger(**bd.info["trigger"])
    stamped = ensembles.predict_stack(model, ensembles.stack(clean.params),
                                      vit.pixels(model, backdoor.stamp(test.inputs, trigger))).argmax(-1)
    clean_trigger_rate = {t: float(np.mean([(p[test.labels != t] == t).mean() for p in stamped]))
                          for t in sorted(set(targets))}
    inputs = test.subset(np.arange(min(s.n_inputs, len(test))))
    x = vit.pixels(model, inputs.inputs)
    grids = {"relative": check_sigmas(s.sigmas), "absolute": check_sigmas(s.abs_sigmas)}
    shares = {}  # mode -> site set -> kind -> [M, G, C]
    for mode in MODES:
        shares[mode] = {}
        for spec in SITE_SETS:
            sites = apex_jax.parse_sites(model, spec)
            shares[mode][spec] = {
                g.kind: np.stack([[r.class_shares(i) for i in range(len(grids[mode]))]
                                  for r in common.apex_sweeps(model, g.params, x, inputs.ids, grids[mode], sites,
                                                              s.draws, s.seed, relative=mode == "relative")])
                for g in (clean, bd)}
            timer.mark(f"apex_{mode}_{spec}")
    ev_c, ev_b = np.arange(len(clean.params) - n_cal), np.arange(len(bd.params) - n_cal)
    cal_c, cal_b = np.arange(len(ev_c), len(clean.params)), np.arange(len(ev_b), len(bd.params))
    per_mode = {}
    for mode in MODES:
        sh = shares[mode]
        choice = calibrate({spec: sh[spec]["clean"][cal_c] for spec in SITE_SETS},
                           {spec: sh[spec]["backdoor"][cal_b] for spec in SITE_SETS})
        spec, gi = choice["site_set"], choice["sigma_index"]
        res = analyse(sh[spec]["clean"][ev_c, gi], sh[spec]["backdoor"][ev_b, gi], [targets[i] for i in ev_b])
        res.update({"calibration": choice, "site_set": spec, "sigma": float(grids[mode][gi]),
                    "auroc_max_share_by_sigma": {
                        sp: [stats.mann_whitney_exact(sh[sp]["backdoor"][ev_b, g].max(1),
                                                      sh[sp]["clean"][ev_c, g].max(1))["auroc"]
                             for g in range(len(grids[mode]))] for sp in SITE_SETS},
                    "target_share_by_sigma": {
                        sp: {"backdoor": [float(np.mean([sh[sp]["backdoor"][i, g, targets[i]] for i in ev_b]))
                                          for g in range(len(grids[mode]))],
                             "clean": [float(np.mean([sh[sp]["clean"][ev_c, g, targets[i]].mean() for i in ev_b]))
                                       for g in range(len(grids[mode]))]} for sp in SITE_SETS}})
        per_mode[mode] = res
    results = {
        "modes": per_mode,
        "calibration_rule": ("the (site set, σ) maximizing the calibration models' AUROC of the largest class share "
                             "(backdoored vs clean); ties: larger gap in mean largest share, first site set, smaller σ"),
        "n_evaluated": {"clean": int(len(ev_c)), "backdoor": int(len(ev_b))},
        "n_calibration": {"clean": int(len(cal_c)), "backdoor": int(len(cal_b))},
        "models": {"clean": clean.members, "backdoor": bd.members},
        "attack_success_rate": stats.mean_ci([m["attack_success_rate"] for m in bd.members]),
        "clean_accuracy": {"clean": stats.mean_ci([m["test_accuracy"] for m in clean.members]),
                           "backdoor": stats.mean_ci([m["test_accuracy"] for m in bd.members])},
        "clean_models_trigger_to_target_rate": clean_trigger_rate,
        "n_inputs": len(inputs), "targets": targets,
        "zoo_training_seconds": {g.kind: g.info["seconds"] for g in (clean, bd)},
    }
    timer.mark("statistics")
    rows = []
    for mode in MODES:
        spec, gi = per_mode[mode]["site_set"], per_mode[mode]["calibration"]["sigma_index"]
        for kind, group, ev in (("clean", clean, ev_c), ("backdoor", bd, ev_b)):
            for i, m in enumerate(group.members):
                rows.append((mode, spec, float(grids[mode][gi]), kind, "evaluated" if i in ev else "calibration",
                             m["seed"], m.get("target", ""), m["test_accuracy"], m.get("attack_success_rate", ""),
                             *shares[mode][spec][kind][i, gi]))
    fileio.write_rows(out / "class_shares.csv", ["sigma_mode", "sites", "sigma", "kind", "role", "seed", "target",
                                             "clean_accuracy", "attack_success_rate",
                                             *[f"share_{n}" for n in test.label_names]], rows)
    _plot(out, shares, targets, grids, test.label_names, per_mode, ev_c, ev_b)
    timer.mark("outputs")
    summary = {"claim": CLAIM, "name": NAME, "quick": quick, **prov, "settings": _settings(s),
               "sigmas": {m: g.tolist() for m, g in grids.items()}, "results": results,
               "class_shares_by_sigma": {mode: {spec: {k: v.tolist() for k, v in sh.items()}
                                                for spec, sh in shares[mode].items()} for mode in MODES},
               "timing": timer.summary(), "versions": fileio.versions()}
    fileio.write_json(out / "summary.json", summary)
    for mode in MODES:
        r = per_mode[mode]
        t = r["target_unknown"]
        log(f"[backdoor_bias] {mode} σ: {r['site_set']} σ={r['sigma']:g} (calibrated); target unknown AUROC "
            f"{t['auroc']:.3f} (p {t['p']:.2g}); target share excess {r['target_share_excess']['mean']:.3f}")
    log(f"[backdoor_bias] attack success {results['attack_success_rate']['mean']:.3f} "
        f"({summary['timing']['total_seconds']} s)")
    return summary


def _settings(s) -> dict:
    d = dataclasses.asdict(s)
    d["zoo"]["key"] = s.zoo.key()
    return d


def calibrate(clean: dict, bd: dict) -> dict:
    """The calibration rule (fixed before any evaluated model is seen): for every site set and σ
    the AUROC of the largest class share, backdoored vs clean calibration models; the best one
    wins (ties: the larger gap in mean largest share, then the first site set of `SITE_SETS`,
    then the smaller σ).

    Args:
        clean, bd: {site set: [M, G, C] class shares of the calibration models}.

    Returns:
        {site_set, sigma_index, auroc (the winner's), table: {site set: [G] AUROCs}}.
    """
    table, best = {}, None
    for si, spec in enumerate(SITE_SETS):
        c, b = clean[spec].max(-1), bd[spec].max(-1)  # [M, G]
        aucs = [stats.mann_whitney_exact(b[:, g], c[:, g])["auroc"] for g in range(c.shape[1])]
        table[spec] = aucs
        for g, a in enumerate(aucs):
            key = (a, float(b[:, g].mean() - c[:, g].mean()), -si, -g)
            if best is None or key > best[0]:
                best = (key, spec, g)
    return {"site_set": best[1], "sigma_index": int(best[2]), "auroc": float(best[0][0]), "table": table}


def analyse(clean: np.ndarray, bd: np.ndarray, targets: list[int]) -> dict:
    """The tests at one site set and σ. clean [Mc, C], bd [Mb, C]: class shares of the evaluated
    models; targets [Mb]: each backdoored model's target."""
    pos = np.array([bd[i, t] for i, t in enumerate(targets)])
    used = sorted(set(targets))
    neg = clean[:, used].mean(1)  # one value per clean model: its mean share of the targets in use
    mu, sd = clean.mean(0), clean.std(0, ddof=1) if len(clean) > 1 else np.zeros(clean.shape[1])
    excess = pos - mu[targets]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sd[targets] > 0, excess / sd[targets], np.nan)
    pct = [float(np.mean(clean[:, t] < p)) for p, t in zip(pos, targets)]
    return {
        "target_unknown": stats.mann_whitney_exact(bd.max(1), clean.max(1)),
        "target_known": stats.mann_whitney_exact(pos, neg),
        "target_share_backdoor": stats.mean_ci(pos),
        "target_share_clean": stats.mean_ci(mu[targets]),
        "target_share_excess": stats.mean_ci(excess, bounds=None),
        "target_share_z": stats.mean_ci(z, bounds=None),
        "target_share_clean_p95": float(np.mean([np.quantile(clean[:, t], 0.95) for t in targets])),
        "target_share_percentile_in_clean": pct,
        "dominant_is_target": int(sum(int(bd[i].argmax() == t) for i, t in enumerate(targets))),
        "n_backdoored": len(targets), "n_clean": int(len(clean)),
        "dominant_share": {"backdoor": stats.mean_ci(bd.max(1)), "clean": stats.mean_ci(clean.max(1))},
        "dominant_class": {"backdoor": bd.argmax(1).tolist(), "clean": clean.argmax(1).tolist()},
    }


def _plot(out: Path, shares: dict, targets, grids, names, per_mode, ev_c, ev_b) -> None:
    plt = fileio.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), gridspec_kw={"width_ratios": [1, 1, 1.1]})
    for ax, mode in zip(axes[:2], MODES):
        r = per_mode[mode]
        spec, gi = r["site_set"], r["calibration"]["sigma_index"]
        sh = shares[mode][spec]
        mat = np.concatenate([sh["clean"][ev_c, gi], sh["backdoor"][ev_b, gi]])
        im = ax.imshow(mat, cmap="magma", vmin=0, vmax=max(float(mat.max()), 0.2), aspect="auto")
        nc = len(ev_c)
        for k, i in enumerate(ev_b):
            ax.add_patch(plt.Rectangle((targets[i] - 0.5, nc + k - 0.5), 1, 1, fill=False, ec="cyan", lw=2))
        ax.axhline(nc - 0.5, color="white", lw=1)
        ax.set(xticks=range(len(names)), xticklabels=names,
               yticks=range(len(mat)), yticklabels=[f"clean {i}" for i in ev_c] + [f"backdoor→{targets[i]}"
                                                                                    for i in ev_b],
               xlabel="predicted class", title=f"{mode} σ={grids[mode][gi]:g} ({spec}), evaluated models")
        fig.colorbar(im, ax=ax, fraction=0.046)
    ax = axes[2]
    r = per_mode["relative"]
    for spec, ls in zip(SITE_SETS, ("-", "--")):
        t = r["target_share_by_sigma"][spec]
        ax.plot(grids["relative"], t["backdoor"], ls, color="tab:red", marker="o", label=f"backdoored, {spec}")
        ax.plot(grids["relative"], t["clean"], ls, color="tab:blue", marker="o", label=f"clean, {spec}")
    ax.axvline(r["sigma"], color="gray", lw=1)
    ax.set(xscale="log", xlabel="σ (× site RMS)", ylabel="mean share of the target class",
           ylim=(0, max(0.3, 1.1 * max(max(r["target_share_by_sigma"][sp]["backdoor"]) for sp in SITE_SETS))),
           title="target-class share vs σ (gray: calibrated σ)")
    ax.legend(fontsize=8)
    fileio.save_figure(fig, out / "backdoor_bias.png", dpi=120)


# ------------------------------------------------------------------------------ report section

SECTION = """## Claim 4 — large-σ predictions reveal a backdoor's target class

**Verdict: {verdict}.**

{lines}

Setup: {n_clean} clean and {n_bd} BadNets-backdoored ViTs ({size}) on {n_train} `{data}` training
images; backdoor: a {trig}×{trig} white square {margin} px from the bottom-right corner on
{poison_pct}% of the images, relabelled to the target (targets {targets}). Backdoored models: clean
test accuracy {bd_acc} (clean models {clean_acc}), attack success rate {asr} (per model {asrs});
clean models send stamped images to those targets at a rate of {clean_asr}. APEX on {n_inputs}
clean (untriggered) test images, {draws} draws, σ ∈ {{{sigmas}}} (× site RMS; absolute: {{{abs_sigmas}}}).
Calibration: {n_cal_c} clean and {n_cal_b} backdoored models held out; on them only, {rule}.
Evaluated: the other {n_ev_c} clean and {n_ev_b} backdoored models.

| | relative σ | absolute σ |
|---|---|---|
| chosen on the calibration models: site set, σ (their AUROC) | {choice_r} | {choice_a} |
| target unknown: AUROC of the largest class share (exact one-sided p) | {unk_r} | {unk_a} |
| target-class share, backdoored models (mean [t-CI]) | {ts_bd_r} | {ts_bd_a} |
| share of the same classes, clean models (mean; 95th percentile) | {ts_c_r} | {ts_c_a} |
| excess target share over the clean models' (mean [t-CI]) | {ex_r} | {ex_a} |
| z of the target share against the clean models' spread (mean [t-CI]) | {z_r} | {z_a} |
| target known: AUROC target share vs clean models' share of the targets (exact p) | {known_r} | {known_a} |
| backdoored models whose dominant class is the target | {dom_r} | {dom_a} |

Target-unknown AUROC on the evaluated models at every relative σ (descriptive; not used for any
choice) — `resid_post`: {by_r}; `hook_embed`: {by_e}.

Run time {seconds} s. Files: `backdoor_bias/class_shares.csv`, `backdoor_bias/summary.json`.

![class shares at large σ](backdoor_bias/backdoor_bias.png)
"""



OUTDATED = """## Claim {claim} — {title}

**Verdict: not run (the summary predates this protocol).** `{name}/summary.json` was written
before the calibration models, the target-unknown test and the absolute-σ rerun; rerun `scripts/{name}.py` (its numbers are not shown: they come from the
earlier protocol).
"""


def section(summary: dict) -> tuple[str, str]:
    """The README section of this claim from its summary.json: (verdict, markdown text); a
    summary written by the earlier protocol gets a section saying so."""
    r, st = summary["results"], summary["settings"]
    if "modes" not in r:
        return "not run (outdated summary)", OUTDATED.format(claim=CLAIM, title=TITLE, name=NAME)
    v, _ = verdict(r)
    z = st["zoo"]
    bd = r["models"]["backdoor"]
    R, A = r["modes"]["relative"], r["modes"]["absolute"]
    trig = backdoor.Trigger.for_images(28 if z["data"] == "mnist5k" else 8)

    def choice(m):
        return f"{m['site_set']}, {m['sigma']:g} ({num(m['calibration']['auroc'], 2)})"

    def share_c(m):
        return f"{num(m['target_share_clean']['mean'])}; {num(m['target_share_clean_p95'])}"

    def by(spec):
        return ", ".join(f"{x:g}: {num(a, 2)}" for x, a in zip(summary["sigmas"]["relative"],
                                                                 R["auroc_max_share_by_sigma"][spec]))

    text = SECTION.format(
        verdict=v, lines="\n".join(x.line() for x in verdicts(r)), n_clean=len(r["models"]["clean"]), n_bd=len(bd),
        size=z["size"], n_train=z["n_train"], data=z["data"], trig=trig.size, margin=trig.margin,
        poison_pct=round(100 * z["poison_rate"]), targets=", ".join(str(t) for t in sorted(set(r["targets"]))),
        bd_acc=ci(r["clean_accuracy"]["backdoor"], "mean"), clean_acc=ci(r["clean_accuracy"]["clean"], "mean"),
        asr=ci(r["attack_success_rate"], "mean"), asrs=", ".join(num(m["attack_success_rate"]) for m in bd),
        clean_asr=num(float(np.mean(list(r["clean_models_trigger_to_target_rate"].values())))),
        n_inputs=r["n_inputs"], draws=st["draws"], sigmas=", ".join(f"{x:g}" for x in st["sigmas"]),
        abs_sigmas=", ".join(f"{x:g}" for x in st["abs_sigmas"]), rule=r["calibration_rule"],
        n_cal_c=r["n_calibration"]["clean"], n_cal_b=r["n_calibration"]["backdoor"],
        n_ev_c=r["n_evaluated"]["clean"], n_ev_b=r["n_evaluated"]["backdoor"],
        choice_r=choice(R), choice_a=choice(A),
        unk_r=_test_text(R["target_unknown"]), unk_a=_test_text(A["target_unknown"]),
        ts_bd_r=ci(R["target_share_backdoor"], "mean"), ts_bd_a=ci(A["target_share_backdoor"], "mean"),
        ts_c_r=share_c(R), ts_c_a=share_c(A),
        ex_r=ci(R["target_share_excess"], "mean"), ex_a=ci(A["target_share_excess"], "mean"),
        z_r=ci(R["target_share_z"], "mean"), z_a=ci(A["target_share_z"], "mean"),
        known_r=_test_text(R["target_known"]), known_a=_test_text(A["target_known"]),
        dom_r=f"{R['dominant_is_target']}/{R['n_backdoored']}", dom_a=f"{A['dominant_is_target']}/{A['n_backdoored']}",
        by_r=by("resid_post"), by_e=by("embed"), seconds=summary["timing"]["total_seconds"])
    return v, text
