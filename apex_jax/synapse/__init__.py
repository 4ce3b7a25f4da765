"""SYNAPSE: linear probes on every layer's [CLS] vector, neuron rankings from their weights, and
inference-time interventions on the ranked neurons.

- `features`: `extract_cls` ([CLS] vectors per site), `check_cls_sites`.
- `probes`: `ProbeConfig`, `train_probes`, `ProbeSet` (elastic-net logistic probes, orbax save/load;
  `ProbeConfig.neurox()`: the reference recipe).
- `rankings`: global / per-class / attribution rankings, k% masks (top, bottom, uniform random,
  layer-matched random), agreement (over a concatenation and per layer).
- `silencing`: `mask_sweep` (one engine sweep over a stack of neuron masks), its metrics and the
  silencing experiment (ranked vs random k%, class asymmetry), per layer or, as the reference
  protocol does, all layers at once from one concatenated probe (`concat_silencing_experiment`).
- `attacks`: classifier-head manipulations (logit bias, column push, bit flips) and the attack
  experiment toward a target class.
- `run`: `probe_run` (-> `ProbeResult`), `silence_run`, `attack_run` -> run folders (the latter two
  take a probe run folder or the probes in memory); `plots`: their figures.
"""

from apex_jax.synapse.attacks import AttackConfig, AttackResult, attack_experiment
from apex_jax.synapse.features import check_cls_sites, extract_cls
from apex_jax.synapse.plots import plot_silencing_curves
from apex_jax.synapse.plots import short as short_site
from apex_jax.synapse.probes import CONCAT, Probe, ProbeConfig, ProbeMetrics, ProbeSet, train_probes
from apex_jax.synapse.rankings import (Ranking, attribution_ranking, attribution_rankings, bottom_k, class_ranking, global_ranking,
                                       k_count, layer_counts, layer_matched_random, layerwise_spearman, mass_cover,
                                       random_k, rank, spearman, split_concat, top_k)
from apex_jax.synapse.run import ProbeResult, attack_run, load_probes, probe_run, probe_source, silence_run
from apex_jax.synapse.silencing import (ALL_LAYERS, ALL_LAYERS_POOLER, CONTROLS_FORMAT, MaskPerturbation, SilenceConfig,
                                        SilencingResult, concat_silencing_experiment, mask_sweep,
                                        selections_and_masks, silencing_experiment)

__all__ = [
    "ALL_LAYERS", "ALL_LAYERS_POOLER", "CONTROLS_FORMAT", "concat_silencing_experiment", "split_concat",
    "layer_counts", "layer_matched_random", "layerwise_spearman",
    "AttackConfig", "CONCAT", "MaskPerturbation", "Probe", "ProbeConfig", "ProbeMetrics", "ProbeResult", "ProbeSet",
    "Ranking", "probe_source",
    "SilenceConfig", "SilencingResult", "AttackResult", "attack_experiment", "attack_run", "attribution_ranking", "attribution_rankings", "bottom_k",
    "check_cls_sites", "class_ranking", "extract_cls", "global_ranking", "k_count", "load_probes", "mask_sweep",
    "mass_cover", "probe_run", "random_k", "rank", "silence_run", "silencing_experiment", "spearman", "top_k",
    "train_probes",
    "plot_silencing_curves", "selections_and_masks", "short_site",
]
