"""apex-jax: probe transformer models by perturbing their hidden activations at scale.

The public API (everything a user needs, importable from the top):

- models: `load`, `create`, `Model`, `Output`, `Prefix`;
- interventions: `Add`, `Noise`, `Replace`, `Scale`, `neuron_mask`, `silence`;
- sites: `parse_sites`, `block_site`, `SITE_PRESETS`; grids: `parse_sigmas`, `check_sigmas`, `parse_k`, `K_LEVELS`;
- the sweep engine: `run_sweep`, `SweepResult`, `plan_sweep`, `SweepPlan` (the inspectable schedule),
  `enable_compile_cache`;
- errors: `ApexJaxError` (base), `InputError`, `MissingInputError`, `RunExistsError`, `CheckpointError`, `ResourceError`;
- training: `train`, `TrainConfig`, `evaluate`; resumable state: `Checkpoints` (orbax);
- run layers and their settings (one frozen dataclass per command, the same the command line is
  built from): `apex_run` / `ApexSettings`, `probe_run` / `ProbeSettings`, `silence_run` /
  `SilenceSettings`, `attack_run` / `AttackSettings`, `finetune_run` / `FinetuneSettings`;
- decoders: `verbalizer` (a causal LM read as a classifier through label tokens);
- APEX: `run_apex`, `adaptive_escape`, `calibrate_rms`, `ApexResult`, `AdaptiveEscape`, `apex_run`;
- SYNAPSE: `extract_cls`, `train_probes`, `ProbeConfig`, `ProbeSet`, the rankings
  (`global_ranking`, `class_ranking`, `attribution_ranking`, `top_k`, `bottom_k`, `random_k`),
  `mask_sweep`, `silencing_experiment` / `SilenceConfig`, `attack_experiment` / `AttackConfig`,
  and the run layers `probe_run`, `silence_run`, `attack_run`.

Importing apex_jax does not import matplotlib or torch (figures import matplotlib when drawn).
"""

from apex_jax.apex import AdaptiveEscape, ApexResult, adaptive_escape, apex_run, calibrate_rms, run_apex
from apex_jax.checkpoints import Checkpoints
from apex_jax.engine import SweepPlan, SweepResult, enable_compile_cache, plan_sweep, run_sweep
from apex_jax.errors import ApexJaxError, CheckpointError, InputError, MissingInputError, ResourceError, RunExistsError
from apex_jax.interventions import Add, Noise, Replace, Scale, neuron_mask, silence
from apex_jax.models import Model, Output, Prefix, create, load, verbalizer
from apex_jax.settings import (ApexSettings, AttackSettings, FinetuneSettings, ProbeSettings, Settings,
                               SilenceSettings)
from apex_jax.sites import SITE_PRESETS, block_site, parse_sites
from apex_jax.specs import K_LEVELS, check_sigmas, parse_k, parse_sigmas
from apex_jax.version import __version__
from apex_jax.synapse import (AttackConfig, ProbeConfig, ProbeSet, SilenceConfig, attack_experiment, attack_run,
                              attribution_ranking, bottom_k, class_ranking, extract_cls, global_ranking, mask_sweep,
                              probe_run, random_k, silence_run, silencing_experiment, top_k, train_probes)
from apex_jax.training import TrainConfig, evaluate, finetune_run, train

__all__ = [
    "ApexSettings", "AttackSettings", "FinetuneSettings", "ProbeSettings", "RunExistsError", "Settings",
    "SilenceSettings", "__version__", "finetune_run",
    "AdaptiveEscape", "Add", "ApexJaxError", "ApexResult", "AttackConfig", "CheckpointError", "InputError",
    "K_LEVELS", "MissingInputError", "ResourceError", "SweepPlan", "enable_compile_cache", "plan_sweep", "verbalizer", "Model", "Noise", "Output", "Prefix",
    "ProbeConfig", "ProbeSet", "Replace", "SITE_PRESETS", "Scale", "SilenceConfig", "SweepResult",
    "adaptive_escape", "apex_run", "attack_experiment", "attack_run", "attribution_ranking", "block_site",
    "bottom_k", "calibrate_rms", "class_ranking", "create", "extract_cls", "global_ranking", "load", "mask_sweep",
    "neuron_mask", "parse_k", "parse_sigmas", "parse_sites", "probe_run", "random_k", "run_apex", "run_sweep",
    "silence", "silence_run", "silencing_experiment", "top_k", "train_probes",
    "Checkpoints", "TrainConfig", "check_sigmas", "evaluate", "train",
]
