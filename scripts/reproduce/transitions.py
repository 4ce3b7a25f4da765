"""Claim 3 — transitions: at small σ, predictions move to semantically related classes, the same
ones the model confuses on clean inputs.

Protocol. Each clean zoo ViT is probed with APEX (noise on every block's output, σ relative to
each site's RMS) on the first `n_inputs` test images. Its *small σ* is the smallest grid σ at
which the mean flip rate over the inputs (share of draws leaving the clean prediction) reaches
`flip_rate`. The transition matrix counts, over inputs and draws at that σ, clean class ->
noisy class; the confusion matrix counts true class -> clean prediction on *other* inputs (the
validation split and the rest of the test split: disjoint from the transition inputs, so the
two matrices share no input-level noise); both are summed over the models. The earlier protocol
(confusions on the transition inputs themselves) is reported beside it.

Independence null. Part of any agreement comes from the class margins alone (classes that
noise moves predictions to often are also often predicted in error). The margins-only
expectation of a matrix is outer(row sums, column sums) / total (off-diagonal cells); its ρ with
the confusions is the agreement margins alone give, and the partial Spearman ρ of transitions
and confusions given both matrices' margins-only expectations is the agreement beyond them.

Reported: the top class pairs of the transition matrix (with their rank in the confusion
matrix), Spearman ρ between the two matrices' off-diagonal entries and the partial ρ, each with
a delete-a-group jackknife interval over inputs (transition and confusion inputs left out
together), the independence null's ρ, the same per model (mean and t interval), and the overlap
of the top-10 pairs.

Verdicts (`rules.transitions`): reproduced if the jackknife interval of ρ (disjoint
confusions) lies above the independence null's ρ, and if the interval of the partial ρ lies
above 0 (not reproduced if below 0.1); else inconclusive.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from scipy import stats as sps

import apex_jax
from apex_jax import fileio
from . import common, ensembles, provenance, stats, vit, zoo
from .reporting import ci, num, span
from .rules.transitions import SMALLEST_RHO, verdict, verdicts  # noqa: F401  (the claim's rules)

NAME = "transitions"
CLAIM = 3
TITLE = "transitions"
TOP = 10


@dataclasses.dataclass(frozen=True)
class Settings:
    zoo: zoo.ZooConfig = zoo.ZooConfig()
    n_inputs: int = 500  # transition inputs: the first n_inputs test images
    sigma_lo: float = 0.1
    sigma_hi: float = 2.0
    n_sigmas: int = 8
    draws: int = 16
    flip_rate: float = 0.1
    seed: int = 0
    jackknife_groups: int = 20

    @classmethod
    def quick(cls) -> "Settings":
        return cls(zoo=zoo.ZooConfig.quick(), n_inputs=48, sigma_lo=0.02, n_sigmas=8, draws=8, jackknife_groups=12)


def main(argv=None) -> dict:
    args = common.parser(NAME, "Claim 3: small-σ transitions vs the confusion matrix.").parse_args(argv)
    s = Settings.quick() if args.quick else Settings()
    return run(s, common.out_dir(args, NAME), Path(args.work), common.logger(args), quick=args.quick)


def run(s: Settings, out: Path, work: Path, log=print, quick: bool = False) -> dict:
    prov = provenance.stamp(NAME)  # the code and rules about to produce the numbers
    timer = common.Timer()
    clean = zoo.get_group(s.zoo, "clean", work, log)
    timer.mark("zoo")
    parts = zoo.splits(s.zoo)
    full_test = parts["test"]
    test = full_test.subset(np.arange(min(s.n_inputs, len(full_test))))
    model, C, n = clean.model, test.n_classes, len(test)
    # confusion inputs: the validation split and the rest of the test split (disjoint)
    rest = full_test.subset(np.arange(len(test), len(full_test)))
    stack = ensembles.stack(clean.params)
    conf_labels = np.concatenate([parts["val"].labels, rest.labels])
    conf_pred = np.concatenate(
        [ensembles.predict_stack(model, stack, vit.pixels(model, d.inputs)).argmax(-1) for d in (parts["val"], rest)
         if len(d)], axis=1)  # [M, n_conf]
    sigmas = common.sigma_grid(s.sigma_lo, s.sigma_hi, s.n_sigmas)
    sites = apex_jax.parse_sites(model, "resid_post")
    res = common.apex_sweeps(model, clean.params, vit.pixels(model, test.inputs), test.ids, sigmas, sites,
                             s.draws, s.seed)
    timer.mark("apex")
    # per model and input: noisy-class counts at the model's small σ, clean prediction
    chosen, trans_rows, clean_pred = [], [], []
    for r in res:
        flip = 1 - r.consistency.mean(0)
        g = int(np.argmax(flip >= s.flip_rate)) if (flip >= s.flip_rate).any() else len(sigmas) - 1
        chosen.append(g)
        trans_rows.append(r.sweep.counts[:, g])  # [n, C]
        clean_pred.append(r.clean)
    trans_rows, clean_pred = np.stack(trans_rows), np.stack(clean_pred)  # [M, n, C], [M, n]
    labels = test.labels
    T, K_same = _matrices(trans_rows, clean_pred, labels, np.arange(n), C)
    K = _confusions(conf_pred, conf_labels, np.arange(len(conf_labels)), C)
    off = ~np.eye(C, dtype=bool)
    boot = _interval_rho(trans_rows, clean_pred, labels, C, s.jackknife_groups, s.seed)
    disjoint = _interval_disjoint(trans_rows, clean_pred, conf_pred, conf_labels, C, s.jackknife_groups, s.seed)
    per_model = [_rho(_matrices(trans_rows[m:m + 1], clean_pred[m:m + 1], labels, np.arange(n), C)[0],
                      _confusions(conf_pred[m:m + 1], conf_labels, np.arange(len(conf_labels)), C))
                 for m in range(len(res))]
    top_t = _top_pairs(T, TOP)
    top_k = _top_pairs(K, TOP)
    names = test.label_names
    k_rank = _ranks(K)
    results = {
        "spearman_offdiagonal": {"rho": _rho(T, K), **disjoint["rho"], "n_cells": int(off.sum()),
                                 "confusions": "disjoint inputs"},
        "partial_spearman_given_margins": {"rho": _partial(T, K), **disjoint["partial"], "n_cells": int(off.sum())},
        "independence_null_rho": _rho(_independence(T), K),
        "independence_null_rho_interval": disjoint["null"],
        "spearman_same_inputs": {"rho": _rho(T, K_same), **boot, "n_cells": int(off.sum()),
                                 "confusions": "the transition inputs"},
        "n_confusion_inputs": int(len(conf_labels)),
        "spearman_per_model": per_model,
        "spearman_per_model_mean": stats.mean_ci(per_model, bounds=(-1.0, 1.0)),
        "spearman_symmetrized": _rho(T + T.T, K + K.T, upper=True),
        "top_pairs": [{"from": names[a], "to": names[b], "share_of_transitions": float(T[a, b] / T[off].sum()),
                       "confusions": int(K[a, b]), "confusion_rank": int(k_rank[a, b])} for a, b in top_t],
        "top_overlap": len({tuple(p) for p in top_t} & {tuple(p) for p in top_k}),
        "top_k": TOP,
        "small_sigma": [float(sigmas[g]) for g in chosen],
        "flip_rate_at_small_sigma": [float(1 - r.consistency.mean(0)[g]) for r, g in zip(res, chosen)],
        "clean_accuracy": [float((p == labels).mean()) for p in clean_pred],
        "n_inputs": int(n), "n_models": len(res),
        "zoo_training_seconds": {"clean": clean.info["seconds"]},
        "n_transitions": int(T[off].sum()), "n_confusions": int(K[off].sum()),
        "n_confusions_same_inputs": int(K_same[off].sum()),
    }
    timer.mark("statistics")
    fileio.write_rows(out / "pairs.csv", ["from", "to", "transitions", "transition_share", "confusions",
                                         "confusion_share"],
                     [(names[a], names[b], int(T[a, b]), T[a, b] / max(T[off].sum(), 1), int(K[a, b]),
                       K[a, b] / max(K[off].sum(), 1)) for a in range(C) for b in range(C) if a != b])
    _plot(out, T, K, names, results)
    timer.mark("outputs")
    summary = {"claim": CLAIM, "name": NAME, "quick": quick, **prov, "settings": _settings(s), "sigmas": sigmas.tolist(),
               "sites": sites, "results": results, "transition_matrix": T.tolist(), "confusion_matrix": K.tolist(),
               "label_names": list(names), "timing": timer.summary(), "versions": fileio.versions()}
    fileio.write_json(out / "summary.json", summary)
    r = results["spearman_offdiagonal"]
    pairs = ", ".join(f"{p['from']}→{p['to']}" for p in results["top_pairs"][:5])
    log(f"[transitions] top pairs {pairs}; Spearman(transitions, confusions) = {r['rho']:.3f} "
        f"[{r['lo']:.3f}, {r['hi']:.3f}] ({summary['timing']['total_seconds']} s)")
    return summary


def _settings(s) -> dict:
    d = dataclasses.asdict(s)
    d["zoo"]["key"] = s.zoo.key()
    return d


def _matrices(trans_rows, clean_pred, labels, idx, C):
    """Transition matrix (clean class -> noisy class draw counts) and confusion matrix (true ->
    predicted) over the inputs `idx` (with repeats) and all models, diagonals zeroed."""
    T = np.zeros((C, C))
    K = np.zeros((C, C))
    for m in range(trans_rows.shape[0]):
        np.add.at(T, clean_pred[m, idx], trans_rows[m, idx])
        np.add.at(K, (labels[idx], clean_pred[m, idx]), 1)
    np.fill_diagonal(T, 0)
    np.fill_diagonal(K, 0)
    return T, K


def _confusions(pred, labels, idx, C):
    """Confusion matrix (true -> predicted) over the inputs `idx` (with repeats) and all models
    (pred [M, n]), diagonal zeroed."""
    K = np.zeros((C, C))
    for m in range(pred.shape[0]):
        np.add.at(K, (labels[idx], pred[m, idx]), 1)
    np.fill_diagonal(K, 0)
    return K


def _independence(M):
    """The margins-only (independence) expectation of an off-diagonal count matrix:
    outer(row sums, column sums) / total, diagonal zeroed."""
    total = M.sum()
    E = np.outer(M.sum(1), M.sum(0)) / max(total, 1e-12)
    np.fill_diagonal(E, 0)
    return E


def _partial(T, K) -> float:
    """Partial Spearman ρ of the off-diagonal cells of T and K given both matrices'
    margins-only expectations (`_independence`)."""
    off = ~np.eye(len(T), dtype=bool)
    if np.ptp(T[off]) == 0 or np.ptp(K[off]) == 0:
        return float("nan")
    r = stats.partial_spearman(T[off], K[off], [_independence(T)[off], _independence(K)[off]], n_boot=0)["rho"]
    return float("nan") if r is None else float(r)


def _interval_disjoint(trans_rows, clean_pred, conf_pred, conf_labels, C, groups, seed) -> dict:
    """Delete-a-group jackknife intervals (clipped to [-1, 1]) of ρ, of the partial ρ and of the
    independence null's ρ, with transition and confusion inputs shuffled into the same groups
    (units 0..n_t−1: transition inputs; n_t..: confusion inputs)."""
    n_t = trans_rows.shape[1]
    out = {}
    for name in ("rho", "partial", "null"):
        def stat(idx, name=name):
            t_idx, k_idx = idx[idx < n_t], idx[idx >= n_t] - n_t
            T = _matrices(trans_rows, clean_pred, np.zeros(n_t, int), t_idx, C)[0]
            K = _confusions(conf_pred, conf_labels, k_idx, C)
            v = {"rho": lambda: _rho(T, K), "partial": lambda: _partial(T, K),
                 "null": lambda: _rho(_independence(T), K)}[name]()
            return 0.0 if not np.isfinite(v) else v

        j = stats.jackknife_groups(stat, n_t + len(conf_labels), groups, seed)
        out[name] = {"lo": max(-1.0, j["lo"]), "hi": min(1.0, j["hi"]), "interval": f"jackknife, {j['groups']} groups"}
    return out


def _rho(T, K, upper: bool = False) -> float:
    C = len(T)
    cells = np.triu(np.ones((C, C), bool), 1) if upper else ~np.eye(C, dtype=bool)
    a, b = T[cells], K[cells]
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(sps.spearmanr(a, b).statistic)


def _interval_rho(trans_rows, clean_pred, labels, C, groups, seed) -> dict:
    """Delete-a-group jackknife interval of ρ over the inputs (the same inputs left out for
    every model and for both matrices; see `stats.jackknife_groups` for why not a bootstrap),
    clipped to [-1, 1]."""
    def rho(idx):
        v = _rho(*_matrices(trans_rows, clean_pred, labels, idx, C))
        return 0.0 if not np.isfinite(v) else v

    j = stats.jackknife_groups(rho, len(labels), groups, seed)
    return {"lo": max(-1.0, j["lo"]), "hi": min(1.0, j["hi"]), "interval": f"jackknife, {j['groups']} groups"}


def _top_pairs(M, k):
    C = len(M)
    flat = [(M[a, b], a, b) for a in range(C) for b in range(C) if a != b]
    flat.sort(key=lambda t: (-t[0], t[1], t[2]))
    return [(a, b) for v, a, b in flat[:k] if v > 0]


def _ranks(M):
    """Rank (1 = largest, ties share the best rank) of every off-diagonal cell."""
    C = len(M)
    off = ~np.eye(C, dtype=bool)
    r = np.zeros((C, C), int)
    r[off] = sps.rankdata(-M[off], method="min").astype(int)
    return r


def _plot(out: Path, T, K, names, results) -> None:
    plt = fileio.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, M, title in ((axes[0], T, "noise transitions at small σ"), (axes[1], K, "clean confusions")):
        share = M / max(M.sum(), 1)
        im = ax.imshow(share, cmap="viridis")
        ax.set(xticks=range(len(names)), yticks=range(len(names)), xticklabels=names, yticklabels=names,
               xlabel="to (noisy / predicted class)", ylabel="from (clean / true class)", title=title)
        fig.colorbar(im, ax=ax, fraction=0.046, label="share of off-diagonal mass")
    r = results["spearman_offdiagonal"]
    fig.suptitle(f"Spearman ρ over off-diagonal cells = {r['rho']:.2f} "
                 f"[{r['lo'] if r['lo'] is None else round(r['lo'], 2)}, "
                 f"{r['hi'] if r['hi'] is None else round(r['hi'], 2)}]")
    fileio.save_figure(fig, out / "transitions.png", dpi=120)


# ------------------------------------------------------------------------------ report section

SECTION = """## Claim 3 — small-σ transitions follow the confusion structure

**Verdict: {verdict}.**

{lines}

Setup: the {n_models} clean ViTs on {n_inputs} test images (clean accuracy {acc}). Each model's
small σ is the smallest grid σ whose mean flip rate reaches {flip}: σ = {small}. Transition
matrix: clean class → noisy class over all draws ({n_trans} transitions); confusion matrix: true
class → clean prediction on {n_conf_inputs} other images (the validation split and the rest of the
test split; {n_conf} errors); both summed over the models, diagonals dropped ({cells} cells).

| | value |
|---|---|
| Spearman ρ, transitions vs confusions on disjoint images (off-diagonal cells) [95% CI over images, {how}] | {rho} |
| independence null: ρ of the margins-only transition matrix with the confusions | {null} |
| partial ρ given both matrices' margins-only expectations | {partial} |
| earlier protocol: confusions on the transition images themselves ({n_conf_same} errors) | {same} |
| Spearman ρ per model (disjoint confusions), mean [95% t-CI] | {per_model} |
| the same on symmetrized matrices (unordered pairs) | {sym} |
| top-{top} transition pairs that are also top-{top} confusion pairs | {overlap} |

Top transition pairs:

| from → to | share of transitions | confusions | confusion rank |
|---|---|---|---|
{pairs}

Run time {seconds} s. Files: `transitions/pairs.csv`, `transitions/summary.json`.

![transitions and confusions](transitions/transitions.png)
"""


OUTDATED = """## Claim 3 — small-σ transitions follow the confusion structure

**Verdict: not run (the summary predates this protocol).** `transitions/summary.json` was written
before the confusions came from disjoint inputs and before the independence null; rerun
`scripts/transitions.py` (its numbers are not shown: they come from the earlier protocol).
"""


def section(summary: dict) -> tuple[str, str]:
    """The README section of this claim from its summary.json: (verdict, markdown text); a
    summary written by the earlier protocol gets a section saying so."""
    r, st = summary["results"], summary["settings"]
    if "partial_spearman_given_margins" not in r:
        return "not run (outdated summary)", OUTDATED
    v, _ = verdict(r)
    pairs = "\n".join(f"| {p['from']} → {p['to']} | {num(p['share_of_transitions'])} | {p['confusions']} | "
                      f"{p['confusion_rank']} |" for p in r["top_pairs"])
    same = r.get("spearman_same_inputs", r["spearman_offdiagonal"])
    text = SECTION.format(
        verdict=v, lines="\n".join(x.line() for x in verdicts(r)), n_models=r["n_models"], n_inputs=r["n_inputs"],
        acc=span(r["clean_accuracy"]), flip=st["flip_rate"], small=", ".join(num(x) for x in r["small_sigma"]),
        n_trans=r["n_transitions"], n_conf=r["n_confusions"], n_conf_inputs=r.get("n_confusion_inputs", "n/a"),
        cells=r["spearman_offdiagonal"]["n_cells"],
        rho=ci(r["spearman_offdiagonal"], "rho"), how=r["spearman_offdiagonal"].get("interval", "bootstrap"),
        null=num(r.get("independence_null_rho")),
        partial=ci(r["partial_spearman_given_margins"], "rho") if "partial_spearman_given_margins" in r else "n/a",
        same=ci(same, "rho"), n_conf_same=r.get("n_confusions_same_inputs", r["n_confusions"]),
        per_model=ci(r["spearman_per_model_mean"], "mean"),
        sym=num(r["spearman_symmetrized"]), top=r["top_k"], overlap=r["top_overlap"], pairs=pairs,
        seconds=summary["timing"]["total_seconds"])
    return v, text
