"""Claim 4 — large-σ backdoor bias: under large activation noise, a backdoored model's
predictions concentrate on its backdoor target class more than a clean model's do on that class.

Protocol (fixed in advance; no setting is chosen on the models it judges). The zoo's clean and
BadNets-backdoored ViTs (`zoo`; targets 0, 2, 4, ... over the seeds; every member is evaluated)
are probed with APEX on clean test images (no trigger), σ relative to each site's RMS on one
fixed grid, at these site sets, each reported:

- ``all blocks``: every block's output at once (APEX's default sites; the primary family);
- ``block i``: one block's output, for every block (one site set each);
- ``pixels``: the input-noise arm — the same σ grid as Gaussian noise on the normalized input
  pixels (× their RMS; `common.pixel_noise_class_shares`), the same inputs and draws.

Each model's class shares at a (site set, σ): the share of all draws over all inputs predicting
each class. Per cell the target-share excess: each backdoored model's share of its target class
minus the clean models' share of the same class, matched by target (`backdoor.target_shares`),
as a Welch difference of two independent groups of models (`stats.welch_difference`, models are
the units) with its 95% t interval; its placebo is the same difference at the class after the
target ((t + 1) mod C, never a target). Also per cell: how many backdoored models have a target
share above every clean model's share of that class, and the target-unknown AUROC of the
largest class share (exact Mann–Whitney; descriptive). Plus each model's clean accuracy and
attack success rate, and how often clean models send stamped images to the targets.

Verdicts (`rules.backdoor_bias`, pre-registered): per family of cells (all blocks: G tests;
single blocks: L × G; pixels: G), Holm-corrected one-sided tests of excess > 0, a smallest
excess of +0.1, simultaneous bounds for "not reproduced" and a placebo-class guard; the
all-blocks family decides the claim.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

import apex_jax
from apex_jax import check_sigmas, fileio
from . import backdoor, common, ensembles, provenance, stats, vit, zoo
from .reporting import ci, num
from .rules.backdoor_bias import FAMILIES, PRIMARY, SMALLEST_EXCESS, family_outcome, verdict, verdicts  # noqa: F401

NAME = "backdoor_bias"
CLAIM = 4
TITLE = "large-σ backdoor bias"
ALL_BLOCKS, PIXELS = "all blocks", "pixels"


@dataclasses.dataclass(frozen=True)
class Settings:
    zoo: zoo.ZooConfig = zoo.ZooConfig()  # 14 clean + 14 backdoored, all evaluated
    n_inputs: int = 64  # models are the units: 64 inputs × 16 draws = 1,024 predictions per model and cell
    sigmas: tuple = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)  # large σ (× site RMS): below 1 the input still decides
    draws: int = 16
    seed: int = 0

    @classmethod
    def quick(cls) -> "Settings":
        # 4 σ of the full grid, 8 draws on 32 inputs, the quick zoo (6 + 6 micro ViTs, 2 blocks): 4 site
        # sets (one compiled kernel each) in no more time than the earlier protocol's 2 × 2 sweeps
        return cls(zoo=zoo.ZooConfig.quick(), n_inputs=32, sigmas=(1.0, 4.0, 16.0, 64.0), draws=8)


def main(argv=None) -> dict:
    args = common.parser(NAME, "Claim 4: target-class shares at large σ in clean vs backdoored models.").parse_args(argv)
    s = Settings.quick() if args.quick else Settings()
    return run(s, common.out_dir(args, NAME), Path(args.work), common.logger(args), quick=args.quick)


def site_sets(model) -> dict[str, tuple[str, list[str] | None]]:
    """{site-set label: (family, APEX sites; None = the pixel arm)} in report order: all blocks,
    each block, pixels."""
    n = model.config.n_layers
    out = {ALL_BLOCKS: ("all_blocks", apex_jax.parse_sites(model, "resid_post"))}
    out.update({f"block {i}": ("single_block", apex_jax.parse_sites(model, str(i))) for i in range(n)})
    out[PIXELS] = ("input_noise", None)
    return out


def run(s: Settings, out: Path, work: Path, log=print, quick: bool = False) -> dict:
    prov = provenance.stamp(NAME)  # the code and rules about to produce the numbers
    timer = common.Timer()
    clean = zoo.get_group(s.zoo, "clean", work, log)
    bd = zoo.get_group(s.zoo, "backdoor", work, log)
    timer.mark("zoo")
    for g in (clean, bd):
        if len(g.params) < 2:
            raise ValueError(f"{g.kind} group has {len(g.params)} models; the tests over models need at least 2.")
    test = zoo.splits(s.zoo)["test"]
    model = clean.model
    targets = [int(t) for t in bd.targets]
    n_classes = test.n_classes
    # clean models on stamped test images: how often the trigger alone yields each target
    trigger = backdoor.Trigger(**bd.info["trigger"])
    stamped = ensembles.predict_stack(model, ensembles.stack(clean.params),
                                      vit.pixels(model, backdoor.stamp(test.inputs, trigger))).argmax(-1)
    clean_trigger_rate = {t: float(np.mean([(p[test.labels != t] == t).mean() for p in stamped]))
                          for t in sorted(set(targets))}
    inputs = test.subset(np.arange(min(s.n_inputs, len(test))))
    x = vit.pixels(model, inputs.inputs)
    grid = check_sigmas(s.sigmas)
    sets = site_sets(model)
    shares = {}  # site set -> kind -> [M, G, C]
    for label, (family, sites) in sets.items():
        shares[label] = {}
        for g in (clean, bd):
            if sites is None:
                shares[label][g.kind] = np.stack([common.pixel_noise_class_shares(model, p, x, inputs.ids, grid,
                                                                                  s.draws, s.seed)
                                                  for p in g.params])
            else:
                shares[label][g.kind] = np.stack([[r.class_shares(i) for i in range(len(grid))]
                                                  for r in common.apex_sweeps(model, g.params, x, inputs.ids, grid,
                                                                              sites, s.draws, s.seed)])
        timer.mark(f"sweep {label}")
    # draws with non-finite logits predict no class: their share is reported, never hidden
    lost = round(max(float(1 - v.sum(-1).min()) for sh in shares.values() for v in sh.values()), 9)  # float sums
    cells = [dict(analyse(shares[label]["clean"][:, gi], shares[label]["backdoor"][:, gi], targets),
                  family=family, site_set=label, sigma=float(sig))
             for label, (family, _) in sets.items() for gi, sig in enumerate(grid)]
    results = {
        "cells": cells,
        "families": {f: [label for label, (fam, _) in sets.items() if fam == f] for f in FAMILIES},
        "site_sets": {label: sites or "pixel values" for label, (_, sites) in sets.items()},
        "n_models": {"clean": len(clean.params), "backdoor": len(bd.params)},
        "models": {"clean": clean.members, "backdoor": bd.members},
        "attack_success_rate": stats.mean_ci([m["attack_success_rate"] for m in bd.members]),
        "clean_accuracy": {"clean": stats.mean_ci([m["test_accuracy"] for m in clean.members]),
                           "backdoor": stats.mean_ci([m["test_accuracy"] for m in bd.members])},
        "clean_models_trigger_to_target_rate": clean_trigger_rate,
        "nonfinite_share_max": lost,
        "n_inputs": len(inputs), "targets": targets, "n_classes": n_classes,
        "forwards": int((len(clean.params) + len(bd.params)) * len(inputs) * len(grid) * s.draws * len(sets)),
        "zoo_training_seconds": {g.kind: g.info["seconds"] for g in (clean, bd)},
    }
    timer.mark("statistics")
    rows = [(label, sets[label][0], float(sig), kind, m["seed"], m.get("target", ""), m["test_accuracy"],
             m.get("attack_success_rate", ""), *shares[label][kind][i, gi])
            for label in sets for gi, sig in enumerate(grid)
            for kind, group in (("clean", clean), ("backdoor", bd)) for i, m in enumerate(group.members)]
    fileio.write_rows(out / "class_shares.csv", ["site_set", "family", "sigma", "kind", "seed", "target",
                                             "clean_accuracy", "attack_success_rate",
                                             *[f"share_{n}" for n in test.label_names]], rows)
    fileio.write_rows(out / "excess.csv", ["family", "site_set", "sigma", "excess", "lo", "hi", "p_one_sided",
                                           "placebo_excess", "placebo_lo", "placebo_hi", "above_all_clean",
                                           "auroc_max_share"],
                      [(c["family"], c["site_set"], c["sigma"], c["excess"]["mean"], c["excess"]["lo"],
                        c["excess"]["hi"], c["excess"]["p"], c["placebo"]["mean"], c["placebo"]["lo"],
                        c["placebo"]["hi"], c["above_all_clean"], c["target_unknown"]["auroc"]) for c in cells])
    _plot(out, shares, cells, targets, grid, test.label_names)
    timer.mark("outputs")
    summary = {"claim": CLAIM, "name": NAME, "quick": quick, **prov, "settings": _settings(s),
               "sigmas": grid.tolist(), "results": results,
               "class_shares_by_sigma": {label: {k: v.tolist() for k, v in sh.items()} for label, sh in shares.items()},
               "timing": timer.summary(), "versions": fileio.versions()}
    fileio.write_json(out / "summary.json", summary)
    for v in verdicts(results):
        log(f"[backdoor_bias] {v.outcome}: {v.evidence}")
    log(f"[backdoor_bias] attack success {results['attack_success_rate']['mean']:.3f}; "
        f"{results['forwards']:,} forwards ({summary['timing']['total_seconds']} s)")
    return summary


def _settings(s) -> dict:
    d = dataclasses.asdict(s)
    d["zoo"]["key"] = s.zoo.key()
    return d


def analyse(clean: np.ndarray, bd: np.ndarray, targets: list[int]) -> dict:
    """One cell (site set, σ). clean [Mc, C], bd [Mb, C]: the models' class shares; targets
    [Mb]: each backdoored model's target.

    Returns:
        {excess, placebo (`stats.welch_difference` of the target's / the next class's share,
        backdoored vs clean, matched by target), target_share_backdoor, target_share_clean
        (means), above_all_clean (backdoored models whose target share exceeds every clean
        model's share of that class), target_unknown (`stats.mann_whitney_exact` of the largest
        class share, descriptive)}.
    """
    pos, neg = backdoor.target_shares(clean, bd, targets)
    placebo = [(t + 1) % bd.shape[1] for t in targets]
    return {
        "excess": stats.welch_difference(pos, neg),
        "placebo": stats.welch_difference(*backdoor.target_shares(clean, bd, placebo)),
        "target_share_backdoor": float(pos.mean()), "target_share_clean": float(neg.mean()),
        "above_all_clean": int(sum(p > clean[:, t].max() for p, t in zip(pos, targets))),
        "target_unknown": stats.mann_whitney_exact(bd.max(1), clean.max(1)),
    }


def _plot(out: Path, shares: dict, cells: list[dict], targets, grid, names) -> None:
    """Left: the excess (95% t interval) against σ per site set; right: the class shares of
    every model at the all-blocks cell the rules name best (smallest Holm p; targets boxed)."""
    plt = fileio.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1.2, 1]})
    ax = axes[0]
    labels = list(shares)
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(labels) - 2))
    styles = {ALL_BLOCKS: ("black", "-", 2.2), PIXELS: ("tab:red", "--", 1.8)}
    for k, label in enumerate(labels):
        row = [c for c in cells if c["site_set"] == label]
        color, ls, lw = styles.get(label, (colors[min(k - 1, len(colors) - 1)], ":", 1.2))
        mean = np.array([c["excess"]["mean"] for c in row], float)
        lo = np.array([np.nan if c["excess"]["lo"] is None else c["excess"]["lo"] for c in row], float)
        hi = np.array([np.nan if c["excess"]["hi"] is None else c["excess"]["hi"] for c in row], float)
        shift = grid * 1.04 ** (k - len(labels) / 2)  # side by side
        ax.errorbar(shift, mean, yerr=[mean - lo, hi - mean], color=color, ls=ls, lw=lw, marker="o", ms=3,
                    capsize=2, label=label)
    ax.axhline(0, color="gray", lw=1)
    ax.axhline(SMALLEST_EXCESS, color="gray", lw=1, ls="--")
    ax.set(xscale="log", xlabel="σ (× site RMS; pixels: × pixel RMS)", ylabel="target-share excess over clean",
           title="target-share excess, backdoored − clean (95% t interval)")
    ax.legend(fontsize=7)
    ax = axes[1]
    best = family_outcome([c for c in cells if c["site_set"] == ALL_BLOCKS])[1]["best"] or 0  # the rules' best cell
    mat = np.concatenate([shares[ALL_BLOCKS]["clean"][:, best], shares[ALL_BLOCKS]["backdoor"][:, best]])
    im = ax.imshow(mat, cmap="magma", vmin=0, vmax=max(float(mat.max()), 0.2), aspect="auto")
    nc = len(shares[ALL_BLOCKS]["clean"])
    for k, t in enumerate(targets):
        ax.add_patch(plt.Rectangle((t - 0.5, nc + k - 0.5), 1, 1, fill=False, ec="cyan", lw=1.5))
    ax.axhline(nc - 0.5, color="white", lw=1)
    ax.set(xticks=range(len(names)), xticklabels=names, yticks=range(len(mat)),
           yticklabels=[f"clean {i}" for i in range(nc)] + [f"backdoor→{t}" for t in targets],
           xlabel="predicted class", title=f"class shares, all blocks, σ = {grid[best]:g}")
    ax.tick_params(axis="y", labelsize=6)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fileio.save_figure(fig, out / "backdoor_bias.png", dpi=120)


# ------------------------------------------------------------------------------ report section

SECTION = """## Claim 4 — large-σ predictions reveal a backdoor's target class

**Verdict: {verdict}.** The all-blocks family decides; single blocks and input noise are reported
beside it (rules pre-registered in `scripts/reproduce/rules/backdoor_bias.py`).

{lines}

Setup: {n_clean} clean and {n_bd} BadNets-backdoored ViTs ({size}, {n_layers} blocks) on {n_train}
`{data}` training images, every one evaluated (no calibration models: sites and σ grid fixed in
advance); backdoor: a {trig}×{trig} white square {margin} px from the bottom-right corner on
{poison_pct}% of the images, relabelled to the target (targets {targets}). Backdoored models: clean
test accuracy {bd_acc} (clean models {clean_acc}), attack success rate {asr}; clean models send
stamped images to those targets at a rate of {clean_asr}. APEX on {n_inputs} clean (untriggered)
test images, {draws} draws per input and σ, σ ∈ {{{sigmas}}} × the site's RMS (pixels: × the
pixel RMS); {forwards} noisy forwards; draws lost to non-finite logits: {lost}.

Target-share excess (backdoored models' share of perturbed predictions on their target minus the
clean models' share of the same class; mean [95% Welch t interval over models]); **bold**: rejected
by Holm within its family (all blocks: {m_all} tests; single blocks: {m_single}; pixels: {m_pix}):

{table}

Placebo class (target + 1), same difference: {placebo}. Target-unknown AUROC of the largest class
share (descriptive), all blocks: {auroc_all}; pixels: {auroc_pix}.

Run time {seconds} s. Files: `backdoor_bias/excess.csv`, `backdoor_bias/class_shares.csv`,
`backdoor_bias/summary.json`.

![target-share excess by site set and σ](backdoor_bias/backdoor_bias.png)
"""


OUTDATED = """## Claim {claim} — {title}

**Verdict: not run (the summary predates this protocol).** `{name}/summary.json` was written
by an earlier protocol (site set and σ chosen on calibration models); rerun `scripts/{name}.py`
(its numbers are not shown: they come from the earlier protocol).
"""


def excess_table(r: dict, sigmas: list[float]) -> str:
    """The markdown table of the excess per site set (rows) × σ (columns), Holm rejections bold."""
    rejected = {}
    for family in FAMILIES:
        cells = [c for c in r["cells"] if c["family"] == family]
        if cells:
            _, target, _ = family_outcome(cells)
            for c, rej in zip(cells, target["rejected"] or [False] * len(cells)):
                rejected[(c["site_set"], c["sigma"])] = rej
    head = "| site set | " + " | ".join(f"σ = {x:g}" for x in sigmas) + " |"
    lines = [head, "|---|" + "---|" * len(sigmas)]
    for label in r["site_sets"]:
        row = {c["sigma"]: c for c in r["cells"] if c["site_set"] == label}
        cells = []
        for x in sigmas:
            e = row[x]["excess"]
            text = f"{num(e['mean'])} [{num(e['lo'])}, {num(e['hi'])}]"
            cells.append(f"**{text}**" if rejected.get((label, x)) else text)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def section(summary: dict) -> tuple[str, str]:
    """The README section of this claim from its summary.json: (verdict, markdown text); a
    summary written by an earlier protocol gets a section saying so."""
    r, st = summary["results"], summary["settings"]
    if "cells" not in r:
        return "not run (outdated summary)", OUTDATED.format(claim=CLAIM, title=TITLE, name=NAME)
    v, _ = verdict(r)
    z = st["zoo"]
    trig = backdoor.Trigger.for_images(28 if z["data"] == "mnist5k" else 8)
    sig = summary["sigmas"]
    fam = r["families"]

    def auroc(label):
        return ", ".join(f"{c['sigma']:g}: {num(c['target_unknown']['auroc'], 2)}" for c in r["cells"]
                         if c["site_set"] == label)

    def count(family):
        return sum(c["family"] == family for c in r["cells"])

    placebo = [c["placebo"]["mean"] for c in r["cells"] if c["placebo"]["mean"] is not None]
    text = SECTION.format(
        verdict=v, lines="\n".join(x.line() for x in verdicts(r)), n_clean=r["n_models"]["clean"],
        n_bd=r["n_models"]["backdoor"], size=z["size"], n_layers=len(fam["single_block"]), n_train=z["n_train"],
        data=z["data"], trig=trig.size, margin=trig.margin, poison_pct=round(100 * z["poison_rate"]),
        targets=", ".join(str(t) for t in sorted(set(r["targets"]))),
        bd_acc=ci(r["clean_accuracy"]["backdoor"], "mean"), clean_acc=ci(r["clean_accuracy"]["clean"], "mean"),
        asr=ci(r["attack_success_rate"], "mean"),
        clean_asr=num(float(np.mean(list(r["clean_models_trigger_to_target_rate"].values())))),
        n_inputs=r["n_inputs"], draws=st["draws"], sigmas=", ".join(f"{x:g}" for x in sig),
        forwards=f"{r['forwards']:,}", lost=num(r["nonfinite_share_max"]),
        m_all=count("all_blocks"), m_single=count("single_block"), m_pix=count("input_noise"),
        table=excess_table(r, sig),
        placebo=f"from {num(min(placebo))} to {num(max(placebo))} over all cells" if placebo else "n/a",
        auroc_all=auroc(ALL_BLOCKS), auroc_pix=auroc(PIXELS), seconds=summary["timing"]["total_seconds"])
    return v, text
