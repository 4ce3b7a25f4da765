"""Claim 4 — large-σ backdoor bias: under large activation noise, a backdoored model's
predictions concentrate on its backdoor target class, so the class shares at large σ detect
backdoored models without any triggered input.

Protocol. The zoo's clean and BadNets-backdoored ViTs (`zoo`; targets 0, 2, 4, ... over the
seeds) are probed with APEX on clean test images (no trigger), σ relative to each site's RMS,
at two site sets: every block's output (`resid_post`) and the embedding output only
(`hook_embed`, input-only noise). The *large σ* of a site set is chosen without looking at
which models are backdoored: the smallest grid σ at which the mean share of draws keeping the
clean prediction, over all models and inputs, is at most `lost` (default 2/C: the inputs are
essentially forgotten). Far beyond it the noise passes the residual connections of these
pre-LN ViTs straight to the head and every model's shares become uniform, so the top of the
grid is no "large σ" in the claim's sense; the full σ curves are reported as well. At the large
σ the class shares (share of all draws over all inputs predicting each class) of every model are
compared:

- target share: the backdoored model's share of its target vs the clean models' share of the
  same class;
- AUROC (target known): positives = each backdoored model's share of its target, negatives =
  every clean model's share of every target in use;
- AUROC (target unknown): the largest class share of each model (backdoored vs clean);
- how often the dominant class at large σ is the backdoor target.

Intervals: percentile bootstrap over models (stratified). Also each model's clean accuracy and
attack success rate, and the clean models' rate of predicting each target on stamped images.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

import apex_jax
from apex_jax import io
from . import backdoor, common, ensembles, stats, vit, zoo
from apex_jax.specs import check_sigmas
from .reporting import above, ci, num

NAME = "backdoor_bias"
CLAIM = 4
TITLE = "large-σ backdoor bias"
SITE_SETS = ("resid_post", "embed")


@dataclasses.dataclass(frozen=True)
class Settings:
    zoo: zoo.ZooConfig = zoo.ZooConfig()
    n_inputs: int = 128
    sigmas: tuple = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
    draws: int = 32
    seed: int = 0
    lost: float | None = None  # consistency that defines the large σ (None: 2 / n_classes)

    @classmethod
    def quick(cls) -> "Settings":
        # 8 σ values and 8 draws on 48 inputs, like the other quick runs: one compiled kernel
        return cls(zoo=zoo.ZooConfig.quick(), n_inputs=48, sigmas=tuple(np.logspace(-0.5, 1.5, 8).round(4)),
                   draws=8)


def main(argv=None) -> dict:
    args = common.parser(NAME, "Claim 4: class shares at large σ in clean vs backdoored models.").parse_args(argv)
    s = Settings.quick() if args.quick else Settings()
    return run(s, common.out_dir(args, NAME), Path(args.work), common.logger(args), quick=args.quick)


def run(s: Settings, out: Path, work: Path, log=print, quick: bool = False) -> dict:
    timer = common.Timer()
    clean = zoo.get_group(s.zoo, "clean", work, log)
    bd = zoo.get_group(s.zoo, "backdoor", work, log)
    timer.mark("zoo")
    test = zoo.splits(s.zoo)["test"]
    model = clean.model
    targets = [int(t) for t in bd.targets]
    # clean models on stamped test images: how often the trigger alone yields each target
    trigger = backdoor.Trigger(**bd.info["trigger"])
    stamped = ensembles.predict_stack(model, ensembles.stack(clean.params),
                                      vit.pixels(model, backdoor.stamp(test.inputs, trigger))).argmax(-1)
    clean_trigger_rate = {t: float(np.mean([(p[test.labels != t] == t).mean() for p in stamped])) for t in targets}
    inputs = test.subset(np.arange(min(s.n_inputs, len(test))))
    x = vit.pixels(model, inputs.inputs)
    sigmas = check_sigmas(s.sigmas)
    lost = s.lost if s.lost is not None else 2 / test.n_classes
    shares, per_site, large = {}, {}, {}
    for spec in SITE_SETS:
        sites = apex_jax.parse_sites(model, spec)
        sh, kept = {}, []
        for g in (clean, bd):
            res = common.apex_sweeps(model, g.params, x, inputs.ids, sigmas, sites, s.draws, s.seed)
            sh[g.kind] = np.stack([[r.class_shares(i) for i in range(len(sigmas))] for r in res])  # [M, G, C]
            kept += [r.consistency.mean(0) for r in res]
        kept = np.mean(kept, axis=0)  # [G], all models pooled: no use of which is backdoored
        gi = int(np.argmax(kept <= lost)) if (kept <= lost).any() else len(sigmas) - 1
        large[spec] = gi
        shares[spec] = sh
        per_site[spec] = _analyse(sh["clean"][:, gi], sh["backdoor"][:, gi], targets)
        per_site[spec]["large_sigma"] = float(sigmas[gi])
        per_site[spec]["consistency_at_large_sigma"] = float(kept[gi])
        per_site[spec]["consistency_by_sigma"] = kept.tolist()
        per_site[spec]["auroc_target_known_by_sigma"] = [
            _analyse(sh["clean"][:, g], sh["backdoor"][:, g], targets, n_boot=0)["auroc_target_known"]["auroc"]
            for g in range(len(sigmas))]
        per_site[spec]["target_share_by_sigma"] = {
            "backdoor": [float(np.mean([sh["backdoor"][i, g, t] for i, t in enumerate(targets)]))
                         for g in range(len(sigmas))],
            "clean": [float(np.mean([sh["clean"][:, g, t].mean() for t in targets])) for g in range(len(sigmas))],
        }
        timer.mark(f"apex_{spec}")
    results = {
        "large_sigma_rule": f"smallest grid σ with mean consistency <= {lost:g} (all models pooled)",
        "sites": per_site,
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
    for spec in SITE_SETS:
        for g, group in (("clean", clean), ("backdoor", bd)):
            for i, m in enumerate(group.members):
                rows.append((spec, float(sigmas[large[spec]]), g, m["seed"], m.get("target", ""), m["test_accuracy"],
                             m.get("attack_success_rate", ""), *shares[spec][g][i, large[spec]]))
    io.write_rows(out / "class_shares.csv", ["sites", "sigma", "kind", "seed", "target", "clean_accuracy",
                                                "attack_success_rate", *[f"share_{n}" for n in test.label_names]], rows)
    _plot(out, shares, targets, sigmas, test.label_names, per_site, large)
    timer.mark("outputs")
    summary = {"claim": CLAIM, "name": NAME, "quick": quick, "settings": _settings(s), "sigmas": sigmas.tolist(),
               "results": results,
               "class_shares_large_sigma": {spec: {k: v[:, large[spec]].tolist() for k, v in sh.items()}
                                            for spec, sh in shares.items()},
               "class_shares_by_sigma": {spec: {k: v.tolist() for k, v in sh.items()} for spec, sh in shares.items()},
               "timing": timer.summary(), "versions": io.versions()}
    io.write_json(out / "summary.json", summary)
    for spec in SITE_SETS:
        r = per_site[spec]
        log(f"[backdoor_bias] {spec}: target share at σ={r['large_sigma']:g}: backdoored "
            f"{r['target_share_backdoor']['mean']:.3f} vs clean {r['target_share_clean']['mean']:.3f}; AUROC "
            f"(target known) {r['auroc_target_known']['auroc']:.3f}, (unknown) {r['auroc_max_share']['auroc']:.3f}")
    log(f"[backdoor_bias] attack success {results['attack_success_rate']['mean']:.3f} "
        f"({summary['timing']['total_seconds']} s)")
    return summary


def _settings(s) -> dict:
    d = dataclasses.asdict(s)
    d["zoo"]["key"] = s.zoo.key()
    return d


def _analyse(clean: np.ndarray, bd: np.ndarray, targets: list[int], n_boot: int = stats.N_BOOT) -> dict:
    """clean [Mc, C], bd [Mb, C]: class shares at one σ."""
    pos = np.array([bd[i, t] for i, t in enumerate(targets)])
    neg = np.array([clean[j, t] for t in targets for j in range(len(clean))])
    return {
        "target_share_backdoor": stats.mean_ci(pos),
        "target_share_clean": stats.mean_ci([clean[:, t].mean() for t in targets]),
        "auroc_target_known": stats.auroc(pos, neg, n_boot=n_boot, seed=1),
        "auroc_max_share": stats.auroc(bd.max(1), clean.max(1), n_boot=n_boot, seed=2),
        "dominant_is_target": int(sum(int(bd[i].argmax() == t) for i, t in enumerate(targets))),
        "n_backdoored": len(targets),
        "dominant_share": {"backdoor": stats.mean_ci(bd.max(1)), "clean": stats.mean_ci(clean.max(1))},
        "dominant_class": {"backdoor": bd.argmax(1).tolist(), "clean": clean.argmax(1).tolist()},
    }


def _plot(out: Path, shares: dict, targets, sigmas, names, per_site, large) -> None:
    plt = io.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), gridspec_kw={"width_ratios": [1, 1, 1.1]})
    for ax, spec in zip(axes[:2], SITE_SETS):
        sh = shares[spec]
        mat = np.concatenate([sh["clean"][:, large[spec]], sh["backdoor"][:, large[spec]]])
        im = ax.imshow(mat, cmap="magma", vmin=0, vmax=max(float(mat.max()), 0.2), aspect="auto")
        nc = len(sh["clean"])
        for i, t in enumerate(targets):
            ax.add_patch(plt.Rectangle((t - 0.5, nc + i - 0.5), 1, 1, fill=False, ec="cyan", lw=2))
        ax.axhline(nc - 0.5, color="white", lw=1)
        ax.set(xticks=range(len(names)), xticklabels=names,
               yticks=range(len(mat)), yticklabels=[f"clean {i}" for i in range(nc)]
               + [f"backdoor→{t}" for t in targets],
               xlabel="predicted class", title=f"class shares at σ={sigmas[large[spec]]:g} ({spec})")
        fig.colorbar(im, ax=ax, fraction=0.046)
    ax = axes[2]
    for spec, ls in zip(SITE_SETS, ("-", "--")):
        r = per_site[spec]["target_share_by_sigma"]
        ax.plot(sigmas, r["backdoor"], ls, color="tab:red", marker="o", label=f"backdoored, {spec}")
        ax.plot(sigmas, r["clean"], ls, color="tab:blue", marker="o", label=f"clean, {spec}")
        ax.axvline(sigmas[large[spec]], ls=ls, color="gray", lw=1)
    ax.set(xscale="log", xlabel="σ (× site RMS)", ylabel="mean share of the target class",
           ylim=(0, max(0.3, 1.1 * max(max(per_site[sp]["target_share_by_sigma"]["backdoor"]) for sp in SITE_SETS))),
           title="target-class share vs σ (gray: the large σ)")
    ax.legend(fontsize=8)
    io.save_figure(fig, out / "backdoor_bias.png", dpi=120)


# ------------------------------------------------------------------------------ report section

SECTION = """## Claim 4 — large-σ predictions reveal a backdoor's target class

**Verdict: {verdict}.** {reason}

Setup: {n_clean} clean and {n_bd} BadNets-backdoored ViTs ({size}) on {n_train} `{data}` training
images; backdoor: a {trig}×{trig} white square {margin} px from the bottom-right corner on
{poison_pct}% of the images, relabelled to the target (targets {targets}). Backdoored models: clean
test accuracy {bd_acc} (clean models {clean_acc}), attack success rate {asr} (per model {asrs});
clean models send stamped images to those targets at a rate of {clean_asr}. APEX on {n_inputs}
clean (untriggered) test images, {draws} draws, σ ∈ {{{sigmas}}}. Large σ: the {rule}, chosen
without knowing which models are backdoored.

| | every block's output (`resid_post`) | input only (`hook_embed`) |
|---|---|---|
| large σ (mean share keeping the clean prediction there) | {large_r} ({kept_r}) | {large_e} ({kept_e}) |
| target-class share, backdoored models (mean [t-CI]) | {ts_bd_r} | {ts_bd_e} |
| share of the same classes, clean models | {ts_c_r} | {ts_c_e} |
| AUROC backdoored vs clean, target known (share of the target) | {auc_k_r} | {auc_k_e} |
| AUROC backdoored vs clean, target unknown (largest class share) | {auc_u_r} | {auc_u_e} |
| backdoored models whose dominant class is the target | {dom_r} | {dom_e} |
| verdict | {v_r} | {v_e} |

AUROC (target known) at every σ of the grid — `resid_post`: {by_r}; `hook_embed`: {by_e}.

Run time {seconds} s. Files: `backdoor_bias/class_shares.csv`, `backdoor_bias/summary.json`.

![class shares at large σ](backdoor_bias/backdoor_bias.png)
"""


def site_verdict(r: dict) -> str:
    """The rule for one site set's results. Reproduced: AUROC (target known) has its interval
    above 0.5 and the backdoored models' mean target share exceeds the clean models'.
    Detectable without the target too: additionally the target-unknown AUROC interval is
    above 0.5. Otherwise not reproduced."""
    if above(r["auroc_target_known"], 0.5) and r["target_share_backdoor"]["mean"] > r["target_share_clean"]["mean"]:
        if above(r["auroc_max_share"], 0.5):
            return "reproduced (also without knowing the target)"
        return "reproduced (target known)"
    return "not reproduced"


def verdict(results: dict) -> tuple[str, str]:
    """Claim 4's rule: `site_verdict` of the activation-noise sites (every block's output,
    `resid_post`); input-only noise (`hook_embed`) is reported for comparison, not judged.

    Returns:
        (verdict, one-sentence reason naming both site sets' verdicts).
    """
    v = site_verdict(results["sites"]["resid_post"])
    e = site_verdict(results["sites"]["embed"])
    return v, f"With noise on every block's output: {v}; with input-only noise: {e}."


def section(summary: dict) -> tuple[str, str]:
    """The README section of this claim from its summary.json: (verdict, markdown text)."""
    r, st = summary["results"], summary["settings"]
    v, reason = verdict(r)
    z = st["zoo"]
    bd = r["models"]["backdoor"]
    R, E = r["sites"]["resid_post"], r["sites"]["embed"]
    trig = backdoor.Trigger.for_images(28 if z["data"] == "mnist5k" else 8)
    text = SECTION.format(
        verdict=v, reason=reason, n_clean=len(r["models"]["clean"]), n_bd=len(bd), size=z["size"],
        n_train=z["n_train"], data=z["data"], trig=trig.size, margin=trig.margin,
        poison_pct=round(100 * z["poison_rate"]), targets=", ".join(str(t) for t in r["targets"]),
        bd_acc=ci(r["clean_accuracy"]["backdoor"], "mean"), clean_acc=ci(r["clean_accuracy"]["clean"], "mean"),
        asr=ci(r["attack_success_rate"], "mean"), asrs=", ".join(num(m["attack_success_rate"]) for m in bd),
        clean_asr=num(float(np.mean(list(r["clean_models_trigger_to_target_rate"].values())))),
        n_inputs=r["n_inputs"], draws=st["draws"], sigmas=", ".join(f"{x:g}" for x in st["sigmas"]),
        rule=r["large_sigma_rule"], large_r=f"{R['large_sigma']:g}", large_e=f"{E['large_sigma']:g}",
        kept_r=num(R["consistency_at_large_sigma"]), kept_e=num(E["consistency_at_large_sigma"]),
        by_r=", ".join(f"{x:g}: {num(a, 2)}" for x, a in zip(summary["sigmas"], R["auroc_target_known_by_sigma"])),
        by_e=", ".join(f"{x:g}: {num(a, 2)}" for x, a in zip(summary["sigmas"], E["auroc_target_known_by_sigma"])),
        ts_bd_r=ci(R["target_share_backdoor"], "mean"), ts_bd_e=ci(E["target_share_backdoor"], "mean"),
        ts_c_r=ci(R["target_share_clean"], "mean"), ts_c_e=ci(E["target_share_clean"], "mean"),
        auc_k_r=ci(R["auroc_target_known"], "auroc"), auc_k_e=ci(E["auroc_target_known"], "auroc"),
        auc_u_r=ci(R["auroc_max_share"], "auroc"), auc_u_e=ci(E["auroc_max_share"], "auroc"),
        dom_r=f"{R['dominant_is_target']}/{R['n_backdoored']}", dom_e=f"{E['dominant_is_target']}/{E['n_backdoored']}",
        v_r=site_verdict(R), v_e=site_verdict(E), seconds=summary["timing"]["total_seconds"])
    return v, text
