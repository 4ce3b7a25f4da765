"""The sweep's device mesh: a sweep axis, and a model axis for models bigger than one device.

    mesh = sweep_mesh(model_parallel=2)          # [devices / 2 (sweep), 2 (model)]
    params = shard_params(model.params, mesh)    # big matrices split over the "model" axis
    run_sweep(model, params, ..., mesh=mesh)     # or simply run_sweep(..., model_parallel=2)

The sweep axis ("units") splits the sweep's units (grid blocks × draw blocks) as before; the
model axis ("model") splits the parameters tensor-parallel style (Megatron's layout):

* column-parallel (output features split): attention q / k / v (GPT-2's fused qkv), the MLP's
  input projections (fc_in, gate, up) and a language-model head, kernels and biases;
* row-parallel (input features split): the attention output `o` and the MLP's `fc_out`
  (their biases stay whole: they are added after the reduction);
* embedding tables split over their rows (vocabulary / positions);
* everything else (norms, pooler, classifier, patch embedding) is replicated.

The rules look at a leaf's last one or two axes only, so a stacked leaf with a leading layer
axis [layers, in, out] is split the same way (its layer axis stays whole). A leaf whose split
axis is not divisible by the model axis size is replicated (`unsplit_leaves` names them).

Nothing is hand-partitioned: the kernels run the unchanged model under `jax.jit`, the sweep axis
manual (`shard_map`) and the model axis automatic, so XLA's SPMD partitioner inserts the
all-reduces a split matmul needs. Splitting a reduction changes float summation order, so
model-parallel logits equal the one-device ones only to rounding (tests/test_engine_mesh.py
states the bound), while sharding over the sweep axis alone stays bitwise identical.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from apex_jax.errors import InputError

UNIT_AXIS = "units"  # the sweep axis: units are sharded over it (engine/kernels.py)
MODEL_AXIS = "model"  # the tensor-parallel axis parameters are split over

# module name (the parent of a kernel / bias leaf) -> which axis of the kernel is split
COLUMN_PARALLEL = frozenset({"q", "k", "v", "qkv", "fc_in", "gate", "up", "lm_head"})
ROW_PARALLEL = frozenset({"o", "fc_out"})
EMBEDDINGS = frozenset({"word", "position", "token_type", "embed"})  # nn.Embed modules


def sweep_mesh(model_parallel: int = 1, devices: Sequence[Any] | None = None) -> Mesh:
    """The engine's mesh over `devices` (default: every device of every process).

    Args:
        model_parallel: devices per model replica (size of the "model" axis). 1 gives the 1-D
            mesh ("units",) the engine always used; more gives ("units", "model") of shape
            [n_devices / model_parallel, model_parallel], each model replica on consecutive
            devices (so on several hosts a replica stays inside one host when it fits).

    Raises:
        InputError: model_parallel below 1 or not a divisor of the device count.
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if isinstance(model_parallel, bool) or int(model_parallel) != model_parallel or model_parallel < 1:
        raise InputError(f"model_parallel must be a positive integer; got {model_parallel!r}.")
    if n % model_parallel:
        divisors = [d for d in range(1, n + 1) if n % d == 0]
        raise InputError(
            f"model_parallel={model_parallel} does not divide the {n} devices; choose one of {divisors}.")
    if model_parallel == 1:  # the engine's 1-D mesh, exactly as before
        return jax.make_mesh((n,), (UNIT_AXIS,), devices=devices)
    # the model axis is Auto: XLA's partitioner splits the matmuls inside the kernels
    return jax.make_mesh((n // model_parallel, model_parallel), (UNIT_AXIS, MODEL_AXIS),
                         axis_types=(AxisType.Explicit, AxisType.Auto), devices=devices)


def model_parallel_of(mesh: Mesh | None) -> int:
    """Size of the mesh's model axis (1 without one)."""
    return int(dict(mesh.shape).get(MODEL_AXIS, 1)) if mesh is not None else 1


def sweep_devices_of(mesh: Mesh | None) -> int:
    """Size of the mesh's sweep axis: how many units run at once (all devices by default)."""
    if mesh is None:
        return jax.device_count()
    return int(dict(mesh.shape).get(UNIT_AXIS, mesh.devices.size))


def check_mesh(mesh: Mesh) -> None:
    """Raises InputError unless `mesh` has the engine's axes: ("units",) or ("units", "model")."""
    if tuple(mesh.axis_names) not in ((UNIT_AXIS,), (UNIT_AXIS, MODEL_AXIS)):
        raise InputError(
            f"the sweep mesh needs axes ({UNIT_AXIS!r},) or ({UNIT_AXIS!r}, {MODEL_AXIS!r}); got "
            f"{tuple(mesh.axis_names)}. Build one with apex_jax.engine.sweep_mesh(model_parallel=N).")


def _split_axis(path: tuple, shape: tuple) -> int | None:
    """The axis (negative, from the end) the rules split a leaf on, or None (replicated)."""
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    leaf = names[-1] if names else ""
    module = names[-2] if len(names) > 1 else ""
    if leaf == "embedding" and module in EMBEDDINGS and len(shape) >= 2:
        return -2  # [vocab, d_model]: rows
    if module in COLUMN_PARALLEL and leaf in ("kernel", "bias"):
        return -1  # [d_in, d_out] or [d_out]: output features
    if module in ROW_PARALLEL and leaf == "kernel" and len(shape) >= 2:
        return -2  # [d_in, d_out]: input features
    return None


def param_specs(params: Any, model_parallel: int) -> Any:
    """A PartitionSpec per parameter leaf (same tree as `params`) for a model axis of
    `model_parallel` devices; replicated (P()) where the rules split nothing or the split axis
    does not divide."""

    def spec(path, leaf):
        shape = tuple(np.shape(leaf))
        axis = _split_axis(path, shape)
        if model_parallel == 1 or axis is None or shape[axis] % model_parallel:
            return P()
        parts: list = [None] * len(shape)
        parts[len(shape) + axis] = MODEL_AXIS
        return P(*parts)

    return jax.tree_util.tree_map_with_path(spec, params)


def unsplit_leaves(params: Any, model_parallel: int) -> list[str]:
    """Leaves the rules would split but whose axis `model_parallel` does not divide (kept whole)."""
    out = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        axis = _split_axis(path, tuple(np.shape(leaf)))
        if axis is not None and np.shape(leaf)[axis] % model_parallel:
            out.append(jax.tree_util.keystr(path))
    return out


def shard_params(params: Any, mesh: Mesh) -> Any:
    """`params` placed on `mesh`: split over its model axis by `param_specs`, replicated over the
    sweep axis. On a mesh without a model axis, returns `params` unchanged (the kernels replicate
    them as before).

    Works across processes: every process passes the full parameters (host or local arrays) and
    each device receives only its own shard.
    """
    mp = model_parallel_of(mesh)
    if mp == 1:
        return params
    specs = param_specs(params, mp)

    def place(leaf, spec):
        sharding = NamedSharding(mesh, spec)
        if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
            return leaf  # already placed (a second sweep with the same params)
        host = np.asarray(jax.device_get(leaf))
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(place, params, specs)
