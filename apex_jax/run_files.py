"""The layout of a run folder: its file names and what each command's files mean.

Both the writer (`apex_jax.runs`) and the page (`apex_jax.run_page`) read these names, so a
run folder is described in one place:

    RUN/run.json             the manifest: command, settings, versions, status, files written
    RUN/summary.json         settings, label space, versions and results (every command)
    RUN/timing.json          seconds and throughput (kept apart so summary.json is deterministic)
    RUN/index.html           the run's page
    RUN/sweep-checkpoints/   the engine's resumable progress
    RUN/*.csv, RUN/*.png     the command's tables and figures (below)
"""

from __future__ import annotations

MANIFEST = "run.json"
SUMMARY = "summary.json"
TIMING = "timing.json"
PAGE = "index.html"
CHECKPOINTS = "sweep-checkpoints"
COMMANDS = ("finetune", "apex", "probe", "silence", "attack")

# The order and one-line meaning of the files each command writes; others follow alphabetically.
TABLES = {
    "sigmas.csv": "One row per σ: the share of draws keeping the clean prediction, the flip rate, the share "
                  "of inputs escaped by then, the class the predictions collapse onto, and the share of draws whose logits "
                  "were not finite.",
    "samples.csv": "One row per input: label, the input text (first 120 characters), clean prediction, escape σ (grid estimator; inf: never escapes), "
                   "most likely other class, and the share of draws kept at each σ.",
    "probes.csv": "One linear probe per site on the [CLS] vector: test accuracy, macro- and weighted-F1, "
                  "per-class F1, train accuracy, non-zero weights.",
    "ranking_agreement.csv": "Spearman correlation of each probe's neuron ranking with activation × gradient "
                             "(and with a random ranking, the floor).",
    "rankings.csv": "The top 20 neurons of each site, globally and per class, and how many neurons hold 50% "
                    "and 90% of the ranking's mass.",
    "controls.csv": "Silencing the top-/bottom-ranked k% of [CLS] neurons against random k%, per score (accuracy, "
                    "weighted F1, true-class margin, KL): score drop, z-score (inf where the random drops are all "
                    "equal: no spread to scale by, the page shows n/a) and empirical p-value (at least 1/(1 + random "
                    "draws)); layer_* compare the top-k% with layer-matched random draws where there are any.",
    "curves.csv": "Per site and selection: area under the score-drop curve and k_at_half_score, the smallest k at "
                  "which the score falls to half its clean value (interpolated; empty where it never does on the "
                  "k grid, as usual for accuracy and F1: half a two-class accuracy is below chance).",
    "asymmetry.csv": "Drop in each class's F1 when one class's own top neurons are silenced.",
    "silencing.csv": "Every grid point of the silencing sweep: scores, per-class F1 and prediction shares.",
    "attacks.csv": "Each manipulation toward the target class at each magnitude: share redirected to the target, "
                   "accuracy, target share.",
}
FIGURES = {
    "consistency_curves.png": "Share of draws keeping the clean prediction against σ (thin: inputs; black: mean).",
    "escape_sigma_hist.png": "Escape σ of the inputs that escape on the grid.",
    "transitions.png": "Where predictions move (clean class → noisy class, row shares) at the smallest σ at which "
                       "at least 10% of the draws flip (below it the matrix is almost the identity).",
    "large_sigma_shares.png": "Class shares of all draws at the largest σ (the model's large-noise bias).",
    "probe_accuracy.png": "[CLS] probe test scores per layer.",
    "silencing_curves.png": "Accuracy as the top-, bottom- and random-k% [CLS] neurons are silenced, per layer "
                            "(one y axis for all panels, scaled to the data).",
    "class_asymmetry.png": "F1 drop per class when one class's top neurons are silenced, in the layer with the "
                           "largest drop.",
    "attack_curves.png": "Share of inputs redirected to the target class against each manipulation's magnitude.",
}
RUN_ORDER = COMMANDS  # a folder of runs lists them in this order

# Every entry a command writes at the top of its folder. Manifests of format 1 (before runs
# claimed their entries) listed every entry of the folder, foreign ones too: of those lists only
# these names are trusted as a run's own.
OUTPUTS = frozenset({*TABLES, *FIGURES, SUMMARY, TIMING, PAGE, "metrics.json", "probes", "head_probe", "model",
                     "checkpoints"})
