"""APEX: Gaussian noise on hidden activations, K Monte-Carlo forwards per σ, and what the counts
say (consistency curves, escape σ, transitions, large-σ bias).

- `analysis`: `run_apex`, `adaptive_escape`, `calibrate_rms`, `calibrate_scale` (the noise units,
  `NOISE_UNITS`), `ApexResult`, `AdaptiveEscape`.
- `run`: `apex_run`, data + model + settings -> a run folder (samples.csv, summary.json,
  timing.json, plots).
- `plots`: the run's figures.
"""

from apex_jax.apex.analysis import (NOISE_UNITS, AdaptiveEscape, ApexResult, DimNoisePerturbation,
                                    NoisePerturbation, adaptive_escape, calibrate_rms, calibrate_scale, run_apex)
from apex_jax.apex.run import apex_run

__all__ = ["NOISE_UNITS", "AdaptiveEscape", "ApexResult", "DimNoisePerturbation", "NoisePerturbation",
           "adaptive_escape", "apex_run", "calibrate_rms", "calibrate_scale", "run_apex"]
