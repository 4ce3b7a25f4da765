"""Claim 5 — SYNAPSE: the reference protocol's arm and today's layer-wise arm.

Reference-protocol arm (`synapse_reference`, which holds the verdict rules and cites the
reference code): one NeuroX-recipe probe on every block's [CLS] concatenated, a global ranking
over the concatenation, the top-k% zeroed at every block at once (and, for BERT, at the pooler
output too), 18 k levels, random controls; on vader-tweets (2 classes), vader-corpus (which of
the 4 VADER corpora a sentence is from; `corpora`), the zoo's first clean ViT (10 digits) and, at
full size only, SmolLM2-135M (a 30-block Llama) fine-tuned on 10 BANKING77 intents
(`lm_classifier`; its "[CLS]" is the last real token, where its score head reads).
The claim's verdict is decided there by three-valued sub-claim verdicts.

Layer-wise arm (today's protocol, reported next to it, not in the verdict), per domain (vader-movies and vader-tweets; each a MiniLM fine-tuned here,
`minilm.fine_tuned`):

- Probes: the [CLS] vector of the embedding output and of every block's output, one elastic-net
  logistic-regression probe per layer (SYNAPSE's λ1 = λ2 = 1e-3 on standardized features) plus
  the all-layers-concatenated probe and one on the classifier input (`head.hook_cls`), trained on
  fine-tuning training sentences and scored on held-out test sentences (`apex_jax.probe_run`).
- Silencing (`apex_jax.silence_run`): at each block's output, zero the probe's top-k% [CLS]
  neurons (global ranking Σ_c|W[c, j]|), the bottom-k%, each class's top-k% (|W[c, j]|), the
  activation × gradient top-k% (positive control) and `n_random` random k% selections per k
  (within the block: layer-matched by construction) on other held-out sentences; the same top,
  bottom, attribution and random selections again mean-ablated (each neuron set to its mean over
  the probe's training sentences). Each selection is scored by accuracy, weighted F1, the mean
  true-class margin and the mean KL(clean ‖ silenced), each against the random selections of its
  ablation (z-score, Laplace-smoothed one-sided p = (1 + #{random ≥ ranked}) / (1 + R)).
- Sensitivity check (not the paper's protocol): the same ranked / random neurons zeroed at every
  token position of the block's output, at a few k; tells whether a weak [CLS]-only effect
  comes from the position choice (later blocks rebuild [CLS] from the other tokens).
- Class asymmetry: the drop in each class's F1 when one class's own top-k% neurons are silenced.
- Manipulations (`apex_jax.attack_run`, toward each class in turn, on the probe test
  sentences): a bias on the target's logit, ±Δ on the classifier columns of the target's top
  neurons (balanced and not; sign-aware, each neuron's sign over the inputs the push must move;
  the reference code's unsigned, unbalanced push at Δ 0.2–0.3), exponent bit flips in those
  columns; and the smallest logit bias that redirects a given share of the other inputs.

The runs write into the work folder; their tables and figures are copied to `reports/synapse/
<domain>/`, and `summary.json` holds every number the report uses.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np

import apex_jax
from apex_jax import fileio
from apex_jax.synapse import ALL_LAYERS_POOLER, SilencingResult, short_site

from . import common, lm_classifier, minilm, provenance, zoo
from . import synapse_reference as ref
from .pieces import Pieces, content_digest
from .reporting import num
from .verdicts import Verdict
from .rules.synapse import (SubClaim, _has_attack, inversion_run, paper_text, stability,  # noqa: F401  (the rules)
                            stability_text, subclaims, verdict)

NAME = "synapse"
CLAIM = 5
TITLE = "SYNAPSE probes, silencing, manipulations (MiniLM, ViT)"
ALPHA = 0.05  # the random control's significance level
VIT_TASK = "digits-vit"  # the reference arm's image task: the zoo's first clean ViT, 10 digit classes
LM_TASK = "banking77-smollm2"  # the reference arm's decoder task: SmolLM2-135M on 10 BANKING77 intents


@dataclasses.dataclass(frozen=True)
class Settings:
    domains: tuple[str, ...] = ("vader-movies", "vader-tweets")
    n_probe_train: int = 1200  # fine-tuning training sentences the probes train on
    n_probe_test: int = 400  # held-out test sentences: probe scores and the manipulations
    n_silence: int = 96  # other held-out test sentences: the silencing sweeps
    k_levels: tuple[float, ...] = (5.0, 10.0, 20.0, 50.0)
    n_random: int = 20  # random selections per k: p can reach 1/21 < 0.05
    positions: str = "cls"
    # the layer-wise silencing's controls (`apex_jax.SilenceSettings.controls`): the attribution
    # top-k% and every selection also mean-ablated at the probe's training mean
    controls: str = "attribution,mean"
    asymmetry_k: float = 10.0
    attack_k: float = 10.0
    probe_steps: int = 400
    # sensitivity check beyond the paper's protocol: the same neurons zeroed at every token
    # position (not only [CLS]), at these k; () skips it
    all_positions_k: tuple[float, ...] = (10.0, 50.0)
    probe_layers: str = "all"  # apex_jax.parse_sites spec: the embedding output and every block
    silence_layers: str = "blocks"
    max_length: int = 64
    # the engine's length buckets (inputs run at their length rounded up to a multiple of this;
    # None: the engine's default, 8). Quick: max_length, one bucket, so every sweep of a site set
    # compiles once (a compile costs more than the padding at the quick sizes)
    pad_multiple: int | None = None
    # the reference arm's grid points per compiled step (None: the engine's choice per sweep). Quick: a
    # fixed size, so that its many small sweeps share compiled kernels (results do not depend on it)
    grid_per_step: int | None = None
    seed: int = 0
    # the reference-protocol arm (`synapse_reference`): tasks, evaluation sentences per text task
    # (the ViT task uses its whole test split) and its settings
    reference_tasks: tuple[str, ...] = ("vader-tweets", "vader-corpus", VIT_TASK, LM_TASK)
    # 150 (300 until the 244325a run): the paired margin tests barely lose power, and it halves the text
    # runs' silencing, the largest part of `make reproduce` on 2 cores; the detectable accuracy and F1
    # differences (5 inputs' worth) double
    n_ref_eval: int = 150
    n_lm_eval: int = 64  # the SmolLM2 task's evaluation inputs (one 135M-parameter forward per selection; 96 before)
    reference: ref.RefSettings = ref.RefSettings()

    @classmethod
    def quick(cls) -> "Settings":
        return cls(n_probe_train=64, n_probe_test=32, n_silence=12, k_levels=(10.0, 50.0), n_random=3,
                   probe_steps=50, probe_layers="hook_embed,0,5", silence_layers="0,5", all_positions_k=(50.0,),
                   max_length=32, pad_multiple=32, grid_per_step=8, reference_tasks=("vader-corpus", VIT_TASK),
                   n_ref_eval=12,
                   reference=ref.RefSettings.quick())


def main(argv=None) -> dict:
    args = common.parser(NAME, "Claim 5: SYNAPSE probes, silencing and manipulations on two MiniLM domains."
                         ).parse_args(argv)
    s = Settings.quick() if args.quick else Settings()
    return run(s, common.out_dir(args, NAME), Path(args.work), common.logger(args), quick=args.quick,
               progress=not args.quiet)


def run(s: Settings, out: Path, work: Path, log=print, quick: bool = False, progress: bool = True) -> dict:
    prov = provenance.stamp(NAME)  # the code and rules about to produce the numbers
    timer = common.Timer()
    # finished domains and reference runs are kept in the work folder: a stopped run resumes
    pieces = Pieces.for_claim(work, NAME, log)
    size = "quick" if quick else "full"
    settings = {"size": size, **dataclasses.asdict(s)}
    domains = {}
    for d in s.domains:
        domains[d] = pieces.get(f"{size}-domain-{d}", {**settings, "inputs": _domain_digest(s, d, work, log, quick)},
                                lambda folder, d=d: _domain(s, d, folder, work, log, quick, timer, progress),
                                files=out / d)
    results = {"domains": domains}
    results["pooled"] = _pooled(domains)
    runs = {t: _reference_task(s, t, out / "reference" / t, work, log, quick, timer, progress, pieces, settings)
            for t in s.reference_tasks}
    results["reference"] = {t: rs[0] for t, rs in runs.items()}  # the full (seed-0) run: the task's tables
    # every run (the first included, without its tables), as the verdicts over runs judge them
    results["reference_runs"] = {t: [{k: v for k, v in r.items() if k != "controls"} for r in rs]
                                 for t, rs in runs.items()}
    results["verdicts"] = [v.to_json() for v in ref.seeded_verdicts(results["reference_runs"], domains)]
    summary = {"claim": CLAIM, "name": NAME, "quick": quick, **prov, "settings": dataclasses.asdict(s),
               "results": results, "timing": {**timer.summary(), **pieces.timing()}, "versions": fileio.versions()}
    fileio.write_json(out / "summary.json", summary)
    log(f"[synapse] ({summary['timing']['total_seconds']} s)")
    return summary


def _subsets(s: Settings, cfg, n_eval: int | None = None, splits=minilm.splits):
    """(probe train, probe test, silencing) data: disjoint random samples of `splits(cfg)`; the
    silencing part has `n_eval` sentences (default `s.n_silence`; at most what the probe test leaves),
    the first of them the same for any `n_eval`."""
    sp = splits(cfg)
    rng = np.random.default_rng(s.seed)
    tr = rng.permutation(len(sp["train"]))[: s.n_probe_train]
    te = rng.permutation(len(sp["test"]))
    n_test = min(s.n_probe_test, len(te) // 2)
    n_sil = min(s.n_silence if n_eval is None else n_eval, len(te) - n_test)
    return (sp["train"].subset(np.sort(tr)), sp["test"].subset(np.sort(te[:n_test])),
            sp["test"].subset(np.sort(te[n_test:n_test + n_sil])))


def _reference_task(s: Settings, task: str, out: Path, work_root: Path, log, quick: bool, timer: common.Timer,
                    progress: bool, pieces: Pieces, settings: dict) -> list[dict]:
    """The reference protocol (`synapse_reference.run_task`) on a task, once per run: every model
    seed (a text task's fine-tune seeds, the image task's clean zoo members) × every probe seed;
    the first run is the full protocol and writes the task's tables into `out`. The SmolLM2 task
    (`LM_TASK`, full size only) has one fine-tune and one probe seed, on `n_lm_eval` inputs, each
    run the lighter protocol (a 135M-parameter forward per selection and input: the full
    protocol's ~500 selections on 150 inputs would take hours on 2 cores). Each run is a piece
    (`pieces`): restored when this code already finished it."""
    rs = s.reference
    runs = []
    loaded: dict = {}  # what the task's models share (the zoo group): loaded once
    sweep_kw = {**common.engine_kw(s.pad_multiple), **({"grid_per_step": s.grid_per_step} if s.grid_per_step else {})}
    lm = task == LM_TASK
    model_seeds = (0,) if lm else rs.vit_members if task == VIT_TASK else rs.fine_tune_seeds
    for model_seed in model_seeds:
        model, params, train, test, evaluation, info = _task_model(s, task, model_seed, work_root, log, quick, loaded)
        timer.mark(f"reference {task}: model {model_seed}")
        cache: dict = {}  # features, encoded inputs, attribution: shared by this model's probe seeds
        inputs = content_digest(params, train, test, evaluation)  # a replaced fine-tune or data set -> new pieces
        for probe_seed in (rs.probe_seeds[:1] if lm else rs.probe_seeds):
            first, full = not runs, not runs and not lm

            def compute(folder, model=model, params=params, train=train, test=test, evaluation=evaluation,
                        probe_seed=probe_seed, full=full, cache=cache):
                return ref.run_task(task, model, params, train, test, evaluation, folder, rs, s.max_length,
                                    progress, probe_seed=probe_seed, full=full, cache=cache, **sweep_kw)

            r = pieces.get(f"{settings['size']}-reference-{task}-model{model_seed}-probe{probe_seed}",
                           {**settings, "first": first, "inputs": inputs}, compute, files=out if first else None)
            timer.mark(f"reference {task}: model {model_seed}, probe {probe_seed}")
            log(f"[synapse] reference {task} (model {model_seed}, probe {probe_seed}): concat probe acc "
                f"{r['probe_accuracy']:.3f}, {r['perturbed_forwards']} forwards in {r['sweep_seconds']} s")
            runs.append({**info, "model_seed": model_seed, **r})
    return runs


def _task_model(s: Settings, task: str, seed: int, work_root: Path, log, quick: bool, loaded: dict) -> tuple:
    """(model, params, probe train, probe test, evaluation inputs, info) of one reference task:
    a text task's MiniLM fine-tuned with `seed`, the zoo's clean ViT member `seed` (digits), or
    SmolLM2 fine-tuned on BANKING77 intents (`LM_TASK`, seed 0 only); `loaded` keeps the zoo group
    across members."""
    if task == VIT_TASK:
        zc = zoo.ZooConfig.quick() if quick else zoo.ZooConfig()
        if "group" not in loaded:
            loaded["group"] = zoo.get_group(zc, "clean", work_root, log)
        group = loaded["group"]
        sp = zoo.splits(zc)
        model, params = group.model, group.params[seed]
        train, test = sp["train"], sp["test"]
        evaluation, info = test, {"model": f"zoo clean ViT {seed} ({zc.data}, {zc.size})",
                                  "test_accuracy": group.members[seed].get("test_accuracy")}
    elif task == LM_TASK:  # a pretrained decoder fine-tuned here (`lm_classifier`)
        if quick or seed != 0:
            raise ValueError(f"{LM_TASK} runs at full size and fine-tune seed 0 only (a 135M-parameter model); "
                             "drop it from quick settings.")
        cfg = lm_classifier.LmClassifierConfig()
        folder, ft = lm_classifier.fine_tuned(cfg, work_root, log)
        model = apex_jax.load(str(folder))
        params = model.params
        train, test, _ = _subsets(s, cfg, splits=lm_classifier.splits)
        evaluation = _subsets(s, cfg, n_eval=s.n_lm_eval, splits=lm_classifier.splits)[2]
        info = {"model": lm_classifier.describe(ft), "test_accuracy": ft["test_accuracy"]}
    else:
        cfg = dataclasses.replace(minilm.domain_config(task, quick), seed=seed)
        folder, ft = minilm.fine_tuned(cfg, work_root, log)
        model = apex_jax.load(str(folder))
        params = model.params
        train, test, _ = _subsets(s, cfg)
        evaluation = _subsets(s, cfg, n_eval=s.n_ref_eval)[2]  # test sentences the probe is not scored on
        info = {"model": f"MiniLM fine-tuned on {task} ({ft['n_train']} sentences, {ft['config']['mode']}, "
                         f"seed {seed})", "test_accuracy": ft["test_accuracy"]}
    return model, params, train, test, evaluation, info


def _domain_digest(s: Settings, data: str, work_root: Path, log, quick: bool) -> str:
    """`content_digest` of a domain's fine-tuned weights and its probe and silencing data (the
    fine-tune runs here if it is not cached yet, as `_domain` would run it)."""
    cfg = minilm.domain_config(data, quick)
    folder, _ = minilm.fine_tuned(cfg, work_root, log)
    return content_digest(apex_jax.load(str(folder)).params, *_subsets(s, cfg))


def _domain(s: Settings, data: str, out: Path, work_root: Path, log, quick: bool, timer: common.Timer,
            progress: bool) -> dict:
    """Probes, silencing and manipulations of one domain's fine-tuned MiniLM."""
    cfg = minilm.domain_config(data, quick)
    folder, ft = minilm.fine_tuned(cfg, work_root, log)
    work = work_root / NAME / ("quick" if quick else "full") / data
    timer.mark(f"{data}: fine-tune (cached after the first run)")
    model = apex_jax.load(str(folder))
    train, test, silence = _subsets(s, cfg)
    probe_dir = work / "probe"
    probe = apex_jax.probe_run(model, (train, test), probe_dir, layers=s.probe_layers, steps=s.probe_steps,
                               max_length=s.max_length, progress=progress, log=None)
    timer.mark(f"{data}: probes")
    sc = apex_jax.SilenceSettings(k=s.k_levels, random=s.n_random, positions=s.positions, asymmetry_k=s.asymmetry_k,
                                  seed=s.seed, layers=s.silence_layers, controls=s.controls, max_length=s.max_length,
                                  **common.engine_kw(s.pad_multiple))
    sil = apex_jax.silence_run(model, silence, probe_dir, work / "silence", sc, progress=progress, log=None)
    timer.mark(f"{data}: silencing")
    sil_all = None
    if s.all_positions_k:
        sa = sc.replace(positions="all", k=s.all_positions_k, per_class=False, controls="none")
        sil_all = apex_jax.silence_run(model, silence, probe_dir, work / "silence-all-positions", sa,
                                       progress=progress, log=None)
        timer.mark(f"{data}: silencing at all positions")
    attacks = {}
    for t in range(model.config.n_classes):
        a = apex_jax.attack_run(model, test, probe_dir, work / f"attack-{t}", target=t, k=s.attack_k,
                                max_length=s.max_length, log=None)
        attacks[model.label_names[t]] = a["results"]
    timer.mark(f"{data}: manipulations")
    _copy_outputs(work, out)
    log(f"[synapse] {data}: probe acc " + ", ".join(f"{short_site(r['site'])} {r['test_accuracy']:.3f}"
                                                 for r in probe["results"]["probes"]))
    return {"fine_tune": ft, "n_probe_train": len(train), "n_probe_test": len(test), "n_silence": len(silence),
            "label_names": list(model.label_names), "probes": probe["results"]["probes"],
            "ranking_agreement": probe["results"]["ranking_agreement"],
            "silencing": _silencing_summary(sil["result"]),
            "silencing_all_positions": _silencing_summary(sil_all["result"]) if sil_all else None,
            "attacks": attacks,
            "perturbed_forwards": sil["timing"]["perturbed_forwards"] + (
                sil_all["timing"]["perturbed_forwards"] if sil_all else 0),
            "sweep_seconds": round(sil["timing"]["sweep_seconds"] + (sil_all["timing"]["sweep_seconds"] if sil_all else 0), 1)}


CELL_KEYS = ("site", "selection", "ablation", "class", "k_percent", "score", "clean", "drop", "z", "p", "random_mean",
             "random_std")


def _significant(cells: list[dict], selection: str, score: str, ablation: str = "zero") -> int:
    return sum(c["p"] <= ALPHA for c in cells
               if c["selection"] == selection and c["score"] == score and c["ablation"] == ablation)


def _silencing_summary(res: SilencingResult) -> dict:
    """The numbers the report uses: per (layer, k) every ranked selection's drop against the
    random control — `cells` on accuracy and weighted F1, `continuous_cells` on the mean
    true-class margin and the mean KL (zeroed and, where run, mean-ablated; top, bottom, class,
    attribution) — top vs bottom, curves, the asymmetry and the counts of cells with p ≤ ALPHA."""
    cells, continuous = [], []
    for score in ("accuracy", "weighted_f1", "margin", "kl"):
        for r in res.controls(score):
            (cells if score in ("accuracy", "weighted_f1") else continuous).append({k: r[k] for k in CELL_KEYS})
    zero = [c for c in cells if c["ablation"] == "zero"]
    top = [c for c in zero if c["selection"] == "top" and c["score"] == "accuracy"]
    bottom = {(c["site"], c["k_percent"]): c for c in zero if c["selection"] == "bottom" and c["score"] == "accuracy"}
    cls = [c for c in zero if c["selection"] == "class" and c["score"] == "accuracy"]
    m_top = [c for c in continuous if c["selection"] == "top" and c["score"] == "margin" and c["ablation"] == "zero"]
    m_bottom = {(c["site"], c["k_percent"]): c for c in continuous
                if c["selection"] == "bottom" and c["score"] == "margin" and c["ablation"] == "zero"}
    return {
        "clean": {**res.clean.row(0), "margin": res.clean_value("margin")},
        "cells": cells,
        "continuous_cells": continuous,
        "curves": res.curves("accuracy") + res.curves("weighted_f1") + res.curves("margin"),
        "asymmetry": ({lr.site: res.asymmetry(lr.site).tolist() for lr in res.layers}
                      if res.config.per_class else None),
        "n_cells": len(top),
        "top_significant": sum(c["p"] <= ALPHA for c in top),
        "class_cells": len(cls),
        "class_significant": sum(c["p"] <= ALPHA for c in cls),
        "top_beats_bottom": sum(c["drop"] > bottom[(c["site"], c["k_percent"])]["drop"] for c in top),
        "top_ties_bottom": sum(c["drop"] == bottom[(c["site"], c["k_percent"])]["drop"] for c in top),
        "max_top_drop": max((c["drop"] for c in top), default=0.0),
        "max_random_drop": max((c["random_mean"] for c in top), default=0.0),
        # the continuous scores: how many (layer × k) cells beat random at p <= ALPHA
        "top_significant_margin": _significant(continuous, "top", "margin"),
        "top_significant_kl": _significant(continuous, "top", "kl"),
        "class_significant_margin": _significant(continuous, "class", "margin"),
        "bottom_significant_margin": _significant(continuous, "bottom", "margin"),
        "attribution_cells": sum(c["selection"] == "attribution" and c["score"] == "margin" and c["ablation"] == "zero"
                                 for c in continuous),
        "attribution_significant_margin": _significant(continuous, "attribution", "margin"),
        "mean_cells": sum(c["selection"] == "top" and c["score"] == "margin" and c["ablation"] == "mean"
                          for c in continuous),
        "mean_top_significant_margin": _significant(continuous, "top", "margin", "mean"),
        "top_beats_bottom_margin": sum(c["drop"] > m_bottom[(c["site"], c["k_percent"])]["drop"] for c in m_top),
    }


POOLED = ("n_cells", "top_significant", "class_cells", "class_significant", "top_beats_bottom", "top_ties_bottom",
          "top_significant_margin", "top_significant_kl", "class_significant_margin", "bottom_significant_margin",
          "attribution_cells", "attribution_significant_margin", "mean_cells", "mean_top_significant_margin",
          "top_beats_bottom_margin")


def _pooled(domains: dict) -> dict:
    """Counts over both domains (what the sub-claims use); a count a summary lacks is left out."""
    sil = [d["silencing"] for d in domains.values()]
    return {k: int(sum(x[k] for x in sil)) for k in POOLED if all(k in x for x in sil)}


def _copy_outputs(work: Path, out: Path) -> None:
    """Tables and figures of the runs into the report folder (not the probe checkpoints)."""
    out.mkdir(parents=True, exist_ok=True)
    for run in sorted(p for p in work.iterdir() if p.is_dir()):
        for f in sorted(run.iterdir()):
            if f.suffix in (".csv", ".png"):
                shutil.copyfile(f, out / f"{run.name}-{f.name}")


# ------------------------------------------------------------------------------ report section

SECTION = """## Claim 5 — SYNAPSE: [CLS] probes, neuron silencing and head manipulations (MiniLM, ViT)

**Verdict: {verdict}.** {reason}

Sub-claims, each decided by a rule in `scripts/reproduce/rules/synapse.py` (its rules commit is
named above); "paper" = a claim the SYNAPSE paper makes (its figures here are unsourced: not found
in the paper's text, shown for comparison only), "reference code" = what its code
(kikaymusic/Neuron-Level-Interpretability-and-Robustness-in-LLMs) does, "extension" = ours:

{verdict_lines}

{reference}
### Layer-wise arm (today's protocol, not the reference's; not in the verdict)

Setup, per domain: MiniLM (6 blocks, d_model 384) fine-tuned here (full fine-tuning, AdamW,
early stopping on the validation split). Linear probes (elastic net, λ1 = λ2 = 1e-3, standardized
features) on the [CLS] vector of the embedding output, of every block's output, of all of them
concatenated and of the classifier input (`head.hook_cls`), trained on {n_probe_train} of the
fine-tuning sentences and scored on {n_probe_test} held-out test sentences. Silencing: zero the
top-k% [CLS] neurons of a block's output (global ranking Σ_c|W[c, j]| of that block's probe), the
bottom-k%, each class's own top-k% (|W[c, j]|), and {n_random} random k% selections per k (the
control; drawn within the block, so layer-matched by construction), k ∈ {{{k_levels}}}%, at the
[CLS] position only, on {n_silence} other held-out sentences; p = (1 + #random drops ≥ the ranked
drop) / (1 + {n_random}), the smallest possible p is {p_min}.{controls_text} Scores: accuracy,
weighted F1, the mean true-class margin (the label's logit minus the largest other; it moves
where no prediction flips) and the mean KL(clean ‖ silenced), each with its own z and p.
Manipulations of the classifier toward each class in turn on the probe test sentences:
a bias on the target logit, +Δ on the target's column and −Δ/(C−1) on the others' for the
target's top {attack_k:g}% neurons of the `head.hook_cls` probe ("column push"{push_text}),
exponent bit {bit} flipped in those weights.

**What differs from the paper.** Two-class sentiment (VADER) on a 6-block MiniLM fine-tuned here
for 2 epochs; {n_k} of the reference protocol's 18 k levels; accuracy on {n_silence} sentences moves in
steps of {step} (one sentence), so drops below that are invisible (the margin and KL are not);
zeroing (mean-ablation only as a control), no Gaussian-noise silencing; the manipulations act on the classifier input (`head.hook_cls`, BERT's pooler output).
A drop of 0 means that no prediction changed (the logits may still have moved).

| domain | fine-tuned on | test accuracy | silencing sentences: clean accuracy |
|---|---|---|---|
{models}

Probe test accuracy per layer:

| domain | {probe_head} |
|---|{probe_sep}
{probe_rows}

| layer-wise sub-claim (rule) | {domain_head} | holds here? |
|---|{domain_sep}---|
{subclaims}

Accuracy drop when a block's top-k% [CLS] neurons are zeroed — ranked drop / mean of the random
drops (p of the ranked drop against the random ones); bottom-k% drop after the bar:

{silencing_tables}
{margin_tables}
{sensitivity}
Manipulations toward each target class (flip-to-target rate = share of the inputs not predicted as
the target before that are after; the sub-claims above use the weaker target):

| domain | target | logit bias {biases} | column push Δ {deltas} | {push_heads}bit flips {flips} | smallest logit bias redirecting 90% |
|---|---|---|---|{push_seps}---|---|
{attack_rows}

Run time {seconds} s; fine-tuning the two models (wall clock, possibly in an earlier run): {ft_seconds}.
Files per domain in `synapse/<domain>/`: `probe-probes.csv`, `probe-rankings.csv`,
`probe-ranking_agreement.csv`, `silence-controls.csv` (every ranked selection against its random
control: accuracy, weighted F1, true-class margin, KL; zeroed and mean-ablated),
`silence-curves.csv`, `silence-asymmetry.csv`,
`attack-<target>-attacks.csv`; `synapse/summary.json`.

{figures}
"""


def _silencing_table(name: str, d: dict, k_levels, key: str = "silencing") -> str:
    """One domain's ranked-vs-random silencing table (accuracy, zeroed): a row per block, a column per k."""
    cells = {(c["site"], c["selection"], c["k_percent"]): c for c in d[key]["cells"]
             if c["score"] == "accuracy" and c["selection"] in ("top", "bottom") and c.get("ablation", "zero") == "zero"}
    sites = sorted({c[0] for c in cells})
    head = "| " + name + " | " + " | ".join(f"k = {k:g}%" for k in k_levels) + " |"
    lines = [head, "|---" * (len(k_levels) + 1) + "|"]
    for site in sites:
        row = []
        for k in k_levels:
            t, b = cells[(site, "top", k)], cells[(site, "bottom", k)]
            row.append(f"{num(t['drop'])} / {num(t['random_mean'])} (p {num(t['p'], 2)}) ∣ {num(b['drop'])}")
        lines.append(f"| {site.replace('.hook_resid_post', '')} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _margin_tables(domains: dict, k_levels) -> str:
    """The true-class margin tables (summaries with `continuous_cells`): per block and k, the
    zeroed top-k% drop / random mean (p), then the bottom-k% and attribution top-k% drops and the
    mean-ablated top-k% drop (p against mean-ablated random)."""
    if any("continuous_cells" not in d["silencing"] for d in domains.values()):
        return ""
    out = ["Drop in the mean true-class margin (logit units) when a block's top-k% [CLS] neurons are zeroed — "
           "ranked drop / mean random drop (p); then bottom-k% drop, attribution top-k% drop (p), and the "
           "mean-ablated top-k% drop (p against mean-ablated random):\n"]
    for name, d in domains.items():
        cells = {(c["site"], c["selection"], c["ablation"], c["k_percent"]): c for c in d["silencing"]["continuous_cells"]
                 if c["score"] == "margin" and c["selection"] in ("top", "bottom", "attribution")}
        sites = sorted({c[0] for c in cells})
        lines = ["| " + name + " | " + " | ".join(f"k = {k:g}%" for k in k_levels) + " |",
                 "|---" * (len(k_levels) + 1) + "|"]
        for site in sites:
            row = []
            for k in k_levels:
                t = cells[(site, "top", "zero", k)]
                parts = [f"{num(t['drop'], 2)} / {num(t['random_mean'], 2)} (p {num(t['p'], 2)})"]
                b, a, m = (cells.get((site, "bottom", "zero", k)), cells.get((site, "attribution", "zero", k)),
                           cells.get((site, "top", "mean", k)))
                parts.append(num(b["drop"], 2) if b else "–")
                parts.append(f"{num(a['drop'], 2)} (p {num(a['p'], 2)})" if a else "–")
                parts.append(f"{num(m['drop'], 2)} (p {num(m['p'], 2)})" if m else "–")
                row.append(" ∣ ".join(parts))
            lines.append(f"| {site.replace('.hook_resid_post', '')} | " + " | ".join(row) + " |")
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def _sensitivity(domains: dict, st: dict) -> str:
    """The all-positions check (not part of the verdict): same table, its significant cells."""
    if not st.get("all_positions_k") or any(d.get("silencing_all_positions") is None for d in domains.values()):
        return ""
    counts = ", ".join(f"{n} {d['silencing_all_positions']['top_significant']}/{d['silencing_all_positions']['n_cells']}"
                       for n, d in domains.items())
    tables = "\n".join(_silencing_table(n, d, st["all_positions_k"], "silencing_all_positions")
                       for n, d in domains.items())
    return ("Sensitivity check, not the paper's protocol (not in the verdict): the same selections zeroed at "
            f"every token position of the block's output. Cells where top-k beats random at p ≤ 0.05: {counts}.\n\n"
            + tables)


def _probe_table(domains: dict) -> dict:
    """Header, separator and rows of the per-layer probe accuracy table."""
    names = list(domains)
    sites = [p["site"] for p in domains[names[0]]["probes"]]
    short_names = {"hook_embed": "embed", "concat": "all layers", "head.hook_cls": "head input"}
    rows = "\n".join(f"| {n} | " + " | ".join(num({p['site']: p['test_accuracy'] for p in domains[n]['probes']}[x])
                                              for x in sites) + " |" for n in names)
    return dict(probe_head=" | ".join(short_names.get(x, x.replace(".hook_resid_post", "")) for x in sites),
                probe_sep="---|" * len(sites), probe_rows=rows)


def _attack_cells(domains: dict) -> dict:
    """The manipulation table (flip-to-target curves per target) and its magnitude headers."""
    first = next(iter(next(iter(domains.values()))["attacks"].values()))
    mags: dict[str, list] = {}
    for row in first["rows"]:
        mags.setdefault(row["attack"], []).append(row["magnitude"])
    bit_kind = next(k for k in mags if k.startswith("bit_flip"))

    def curve(a, kind):
        return "/".join(num(row["flip_to_target"], 2) for row in a["rows"] if row["attack"] == kind)

    # the sign-aware and the reference code's pushes, in summaries that have them
    pushes = [(k, label) for k, label in (("column_push_signed", "sign-aware push Δ"),
                                          ("column_push_reference", "reference push Δ")) if k in mags]
    rows = "\n".join(
        f"| {n} | {t} | {curve(a, 'logit_bias')} | {curve(a, 'column_push')} | "
        + "".join(f"{curve(a, k)} | " for k, _ in pushes) + f"{curve(a, bit_kind)} | "
        f"{num(a['bias_to_redirect'].get('0.9'), 2)} |" for n, d in domains.items() for t, a in d["attacks"].items())
    return dict(bit=bit_kind.split("_")[-1], biases="/".join(f"{x:g}" for x in mags["logit_bias"]),
                deltas="/".join(f"{x:g}" for x in mags["column_push"]),
                push_heads="".join(f"{label} {'/'.join(f'{x:g}' for x in mags[k])} | " for k, label in pushes),
                push_seps="---|" * len(pushes),
                flips="/".join(f"{x:g}" for x in mags[bit_kind]), attack_rows=rows)


def _controls_text(st: dict) -> str:
    """The layer-wise silencing's controls in words (none in summaries written before them)."""
    c = set(str(st.get("controls", "none")).split(",")) - {"none"}
    words = (["the activation × gradient top-k% (positive control)"] if "attribution" in c else []) + (
        ["the top, bottom, attribution and random selections again mean-ablated (each neuron set to its mean over "
         "the probe's training sentences) against the mean-ablated random ones"] if "mean" in c else [])
    return (" Controls: " + "; ".join(words) + ".") if words else ""


def section(summary: dict) -> tuple[str, str]:
    """The README section of this claim from its summary.json: (verdict, markdown text)."""
    st, dom = summary["settings"], summary["results"]["domains"]
    names = list(dom)
    sub = subclaims(dom)
    refd = summary["results"].get("reference", {})
    vs = ([Verdict(**{**x, "paper": paper_text(x.get("paper"))}) for x in summary["results"]["verdicts"]]
          if "verdicts" in summary["results"]
          else ref.attack_verdicts(dom))  # a summary written before the reference arm existed
    v, reason = verdict(vs)
    first = dom[names[0]]
    models = "\n".join(
        f"| {n} | {d['fine_tune']['n_train']} sentences, {d['fine_tune']['epochs_run']} epochs | "
        f"{num(d['fine_tune']['test_accuracy'])} | {num(d['silencing']['clean']['accuracy'])} |" for n, d in dom.items())
    figures = "\n".join(
        f"![{n}: probe accuracy](synapse/{n}/probe-probe_accuracy.png) "
        f"![{n}: silencing curves](synapse/{n}/silence-silencing_curves.png)\n"
        f"![{n}: class asymmetry](synapse/{n}/silence-class_asymmetry.png) "
        f"![{n}: manipulations toward class 1](synapse/{n}/attack-1-attack_curves.png)\n" for n in names)
    ft = ", ".join(f"{n} {d['fine_tune']['seconds']} s" for n, d in dom.items())
    text = SECTION.format(
        verdict=v, reason=reason, verdict_lines="\n".join(x.line() for x in vs),
        reference=_reference_section(refd, st, summary["results"].get("reference_runs")), n_probe_train=first["n_probe_train"], n_probe_test=first["n_probe_test"],
        n_silence=first["n_silence"], n_random=st["n_random"], k_levels=", ".join(f"{k:g}" for k in st["k_levels"]),
        p_min=num(1 / (1 + st["n_random"])), n_k=len(st["k_levels"]), step=num(1 / first["n_silence"]),
        attack_k=st["attack_k"], models=models, **_probe_table(dom), **_attack_cells(dom),
        domain_head=" | ".join(names), domain_sep="---|" * len(names),
        subclaims="\n".join(f"| {label} | " + " | ".join(vals) + f" | {val} |" for label, vals, val in sub),
        silencing_tables="\n".join(_silencing_table(n, d, st["k_levels"]) for n, d in dom.items()),
        margin_tables=_margin_tables(dom, st["k_levels"]), controls_text=_controls_text(st),
        push_text=("; the sign-aware push multiplies each neuron's Δ by its majority sign over the inputs it must "
                   "move, those not predicted as the target; the reference code's push adds Δ on the target's column "
                   "only, unsigned, at the target's top 25%" if all(_has_attack(d, "column_push_reference")
                                                                    for d in dom.values()) else ""),
        sensitivity=_sensitivity(dom, st), seconds=summary["timing"]["total_seconds"], ft_seconds=ft or "none",
        figures=figures)
    return v, text


def _rho(t: dict) -> str:
    """The concatenated probe-vs-attribution ρ and, in parentheses, its per-layer values."""
    layers = t.get("spearman_attribution_layers") or []
    return num(t["spearman_attribution"]) + (" (" + ", ".join(num(r, 2) for r in layers) + ")" if layers else "")


# the rows of the reference arm's margin table: (selection, ablation, label, which control's z)
MARGIN_ROWS = (("top", "zero", "top-k% zeroed", "layer_"), ("top", "mean", "top-k% mean-ablated", "layer_"),
               ("bottom", "zero", "bottom-k% zeroed", ""), ("attribution", "zero", "act × grad top-k% zeroed", ""))


def _reference_margin(refd: dict, ks: list) -> str:
    """The reference arm's true-class margin table (summaries with `control_cells`): per task,
    variant and selection, the drop / the layer-matched random mean / the uniform random mean,
    with z against the layer-matched draws (the top-k%) or the uniform ones (the others)."""
    if not refd or any("control_cells" not in t for t in refd.values()):
        return ""
    lines = []
    for n, t in refd.items():
        for variant in dict.fromkeys(c["site"] for c in t["control_cells"]):
            for sel, ab, label, pre in MARGIN_ROWS:
                cells = {c["k_percent"]: c for c in t["control_cells"] if c["site"] == variant and c["selection"] == sel
                         and c["ablation"] == ab and c["score"] == "margin"}
                if not cells:
                    continue
                lines.append(f"| {n} | {variant} | {label} | " + " | ".join(
                    f"{num(ref._f(c['drop']), 2)} / {num(ref._f(c['layer_random_mean']), 2) if pre else '–'} / "
                    f"{num(ref._f(c['random_mean']), 2)} (z {num(ref._f(c[pre + 'z']), 1)}, p {num(ref._f(c[pre + 'p']), 2)})"
                    if (c := cells.get(k)) else "" for k in ks) + " |")
    return f"""
True-class margin (the label's logit minus the largest other, mean over the inputs): drop / mean
drop of the layer-matched random selections (same count per layer as the top-k%) / mean drop of
the uniform ones; z and p against the layer-matched draws for the top-k% and against the uniform
ones for the others (the "beats random" verdicts decide on the zeroed top-k% row):

| task | variant | selection | {' | '.join(f'k = {k:g}%' for k in ks)} |
|---|---|---|{'---|' * len(ks)}
{chr(10).join(lines)}
"""


def _reference_controls_text(refd: dict, rs: dict) -> str:
    """The reference arm's further controls in words (none in summaries written before them)."""
    if not refd or any("control_cells" not in t for t in refd.values()):
        return ""
    return (f", and as many layer-matched random selections (the top-k%'s count in every layer, drawn within "
            "each layer: the raw-feature ranking sits almost wholly in the last layer, which uniform draws mostly "
            "miss); the bottom-k%; the activation × gradient top-k% over the concatenation (positive control; "
            f"{rs.get('n_attribution', '?')} evaluation inputs)"
            + ("; and the top, bottom, attribution and random selections mean-ablated (each neuron set to its mean "
               "over the probe's training inputs)" if rs.get("mean_ablation") else "")
            + ". Each is scored by accuracy, weighted F1, the mean true-class margin and the mean KL(clean ‖ "
              "silenced)")


# the reference arm's sub-claims judged run by run: (label, one run's outcome (task, run), whether a task takes part)
RUN_JUDGES = (
    ("5.1 top-k% beats layer-matched random (margin)", lambda n, r: ref.beats_random({n: r}).outcome, lambda r: True),
    ("5.2 probe vs attribution ranking (per-layer ρ)", lambda n, r: ref.attribution_agreement({n: r}).outcome,
     lambda r: True),
    ("5.3 plateau then collapse", lambda n, r: ref.plateau_collapse({n: r}).outcome, lambda r: True),
    ("5.4 class asymmetry", lambda n, r: ref.class_asymmetry({n: r}).outcome, lambda r: r["asymmetry"] is not None),
    ("5.1 with the pooler (reference code)", lambda n, r: ref.beats_random({n: r}, ALL_LAYERS_POOLER).outcome,
     lambda r: r["pooler"]),
    ("last-block inversion (extension; zeroed margin)", lambda n, r: inversion_run(r)[0],
     lambda r: bool(r.get("inversion"))),
)


def _stability_table(runs: dict) -> str:
    """Per sub-claim and task: how many runs gave each outcome, and the task's outcome over its
    runs (`rules.synapse.stability`); '–' where the sub-claim does not apply to the task."""
    rows = []
    for label, judge, applies in RUN_JUDGES:
        cells = []
        for name, rs in runs.items():
            if not rs or not applies(rs[0]):
                cells.append("–")
                continue
            outs = [judge(name, r) for r in rs]
            cells.append(f"{stability_text(outs)} → **{stability(outs)}**")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _inversion_table(runs: dict) -> str:
    """Per task and run, at the last block alone, zeroed, on the true-class margin: top-k% /
    bottom-k% / mean of the within-block random draws / activation × gradient top-k% drops (z of
    the top-k% against the draws) at each k level, and the run's outcome (`inversion_run`)."""
    lines = []
    for name, rs in runs.items():
        for r in rs:
            if not r.get("inversion"):
                continue
            cells = {(c["selection"], float(c["k_percent"])): c for c in r["inversion"]
                     if c["ablation"] == "zero" and c["score"] == "margin"}
            ks = sorted({k for _, k in cells})
            o, n = inversion_run(r)
            parts = []
            for k in ks:
                t = cells[("top", k)]
                b, a = cells.get(("bottom", k)), cells.get(("attribution", k))
                parts.append(f"k {k:g}%: {num(ref._f(t['drop']), 2)} / {num(ref._f(b['drop']), 2) if b else '–'} / "
                             f"{num(ref._f(t['random_mean']), 2)} / {num(ref._f(a['drop']), 2) if a else '–'} "
                             f"(z {num(ref._f(t['z']), 1)})")
            mean_o = inversion_run(r, "mean")[0]
            lines.append(f"| {name} | {r.get('model_seed', 0)} / {r.get('probe_seed', 0)} | " + "; ".join(parts)
                         + f" | {n['inverted']} / {n['aligned']} / {n['unresolved']} | {o} | {mean_o} |")
    return "\n".join(lines)


def _runs_section(runs: dict | None, rs: dict) -> str:
    """The runs over seeds: stability of each sub-claim's outcome, and the last-block inversion test."""
    if not runs:
        return ""
    names = list(runs)
    counts = ", ".join(f"{n} {len(r)}" for n, r in runs.items())
    return f"""
#### Runs over seeds and verdict stability

Runs per task: {counts}; a text task runs once per MiniLM fine-tune seed ({', '.join(map(str, rs.get('fine_tune_seeds', [0])))})
× probe initialisation seed ({', '.join(map(str, rs.get('probe_seeds', [0])))}), the image task once per clean zoo
member ({', '.join(map(str, rs.get('vit_members', [0])))}) × probe seed. The first run of a task (seeds 0) is the
full protocol above; the others sweep what the verdicts decide on (the 18-level top-k% curve with 2
random draws, the class selections at k = {rs.get('asymmetry_k', 10):g}%, and the control k levels past the
plateau with the top-k%, the activation × gradient top-k% and {rs.get('n_random', '?')} uniform and
{rs.get('n_random', '?')} layer-matched draws, zeroed). Every run is judged alone by the rules above; a task's
outcome over its runs: reproduced if at least 2/3 of them reproduce and none gives not reproduced, not
reproduced if at least 2/3 give not reproduced, else inconclusive (a rule written before the runs).

| sub-claim | {' | '.join(names)} |
|---|{'---|' * len(names)}
{_stability_table(runs)}

Last-block inversion (an extension, not in the verdict): the concatenated probe's ranking restricted to
the last block's units; its top-k%, its bottom-k%, the block's activation × gradient top-k% and
{rs.get('n_inversion_random', '?')} random k% of the block, zeroed (and mean-ablated) at the last block's
[CLS] alone. Per run, true-class margin drop: top / bottom / random mean / act × grad (z of the top-k%
against the draws); k levels inverted / aligned / unresolved; the run's outcome (reproduced = inverted)
zeroed, and mean-ablated:

| task | model / probe seed | margin drops | inverted / aligned / unresolved | zeroed | mean-ablated |
|---|---|---|---|---|---|
{_inversion_table(runs)}
"""


def _reference_section(refd: dict, st: dict, runs: dict | None = None) -> str:
    """The reference-protocol arm's part of the section: setup, one row per task, the ranked
    curve over the k levels, the random controls, and (summaries with runs over seeds) the
    stability of each sub-claim over the runs and the last-block inversion test."""
    if not refd:
        return "The reference-protocol arm has not run for this summary (it predates it).\n"
    rs = st.get("reference", {})
    rows = "\n".join(
        f"| {n} | {t['model']} | {t['n_classes']} | {t['n_probe_train']} / {t['n_probe_test']} | "
        f"{num(t['probe_accuracy'])} | {t['n_eval']} | {num(t['clean']['accuracy'])} | {num(t['chance'])} | "
        f"{num(t['min_detectable_drop'])} | {_rho(t)} | "
        + ", ".join(f"{x:.0%}" for x in t["top10_layer_share"]) + " |" for n, t in refd.items())
    ks = [c["k_percent"] for c in next(iter(refd.values()))["curve"]]
    curve = "\n".join(f"| {n} | " + " | ".join(f"{num(c['top_drop'], 2)} ({num(c['random_drop'], 2)})"
                                              for c in t["curve"]) + " |" for n, t in refd.items())
    ctrl_k = sorted({c["k_percent"] for t in refd.values() for c in t["controls"]})
    ctrl = []
    for n, t in refd.items():
        for variant in dict.fromkeys(c["site"] for c in t["controls"]):
            cells = {c["k_percent"]: c for c in t["controls"] if c["site"] == variant}
            ctrl.append(f"| {n} | {variant} | " + " | ".join(
                f"{num(cells[k]['drop'], 2)} / {num(cells[k]['random_mean'], 2)} (z {num(cells[k]['z'], 1)})"
                if k in cells else "" for k in ctrl_k) + " |")
    return f"""### Reference-protocol arm

As SYNAPSE's reference code runs it: one probe on every block's [CLS] output concatenated (raw
features, NeuroX's penalty λ1 Σ|W| + λ2 ‖W‖_F with λ1 = λ2 = {rs.get('l1', 1e-3):g}, Adam lr 1e-3, 10 epochs,
batch 32), neurons ranked globally over the concatenation (Σ_c |W[c, g]|; per class |W[c, g]|),
the top-k% mapped back to (layer, unit) and zeroed at [CLS] of every block at once, in one
forward; for BERT also a variant that zeroes the last block's units at the pooler output. Curve:
the {len(ks)} k levels, ranked (and 2 random) selections; control: k ∈ {{{', '.join(f'{k:g}' for k in ctrl_k)}}}%,
{rs.get('n_random', '?')} random k% selections of the concatenation each (z = (ranked drop − random mean) /
random std){_reference_controls_text(refd, rs)}. Tasks: {'; '.join(ref.TASKS.get(n, n) for n in refd)}. "Detectable" = 5 inputs (a
one-sided sign test of 5 one-way flips gives p = 0.031).

| task | model | classes | probe train / test | concat probe accuracy | eval inputs | clean accuracy | chance (majority) | detectable drop | Spearman vs attribution: all layers (per layer) | layers of the global top 10% |
|---|---|---|---|---|---|---|---|---|---|---|
{rows}

Accuracy drop when the global top-k% are zeroed at every layer (mean drop of 2 random k% in
parentheses):

| task | {' | '.join(f'{k:g}%' for k in ks)} |
|---|{'---|' * len(ks)}
{curve}

Random control — ranked accuracy drop / mean random drop (z):

| task | variant | {' | '.join(f'k = {k:g}%' for k in ctrl_k)} |
|---|---|{'---|' * len(ctrl_k)}
{chr(10).join(ctrl)}
{_reference_margin(refd, ctrl_k)}
{_runs_section(runs, rs)}
Files: `synapse/reference/<task>/` (`controls.csv`, `control_cells.csv` (every ranked selection on
every score against both controls), `inversion_cells.csv` (the first run's last-block test), `curve.csv`,
`silencing.csv`, `asymmetry.csv`, `silencing_curves.png`).

"""
