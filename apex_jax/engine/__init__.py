"""The sweep engine shared by APEX and SYNAPSE: deterministic keys, fixed micro-batches, sharded
and resumable streaming reductions."""

from apex_jax.engine.keys import draw_keys
from apex_jax.engine.sweep import SweepResult, run_sweep

__all__ = ["SweepResult", "draw_keys", "run_sweep"]
