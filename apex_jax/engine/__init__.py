"""The sweep engine shared by APEX and SYNAPSE: an inspectable plan (`plan_sweep` -> `SweepPlan`),
deterministic keys, module-level jitted kernels, sharded and resumable streaming reductions; the
engine owns padding, length buckets and the classifier token of every architecture (positions.py)."""

from apex_jax.engine.compile_cache import enable_compile_cache
from apex_jax.engine.keys import draw_keys
from apex_jax.engine.mesh import shard_params, sweep_mesh
from apex_jax.engine.plan import PAD_MULTIPLE, SweepPlan, device_memory_budget, plan_sweep
from apex_jax.engine.positions import CLASSIFIER_TOKEN, sweep_inputs
from apex_jax.engine.store import KERNEL_VERSION, CheckpointInfo, checkpoints_in, differences
from apex_jax.engine.sweep import SweepResult, run_sweep

__all__ = ["CLASSIFIER_TOKEN", "KERNEL_VERSION", "PAD_MULTIPLE", "CheckpointInfo", "SweepPlan", "device_memory_budget", "SweepResult", "checkpoints_in",
           "differences", "draw_keys", "enable_compile_cache", "plan_sweep", "run_sweep",
           "shard_params", "sweep_inputs", "sweep_mesh"]
