"""The streaming sweep engine: K perturbed forward passes per (input, grid point), reduced on device.

`plan_sweep` (engine/plan.py) decides the schedule as a value (`SweepPlan`); this module
executes it. Work is cut into *units*: (input block b, grid block, draw block d). A unit runs one compiled
kernel of fixed shape — `grid_per_step` grid points × `draws_per_step` draws × `inputs_per_step`
inputs × the block's padded length — and returns class counts [grid_per_step, inputs_per_step,
n_classes]. Many draws per step suit noise sweeps; many grid points per step suit deterministic
sweeps (one draw, e.g. silencing masks), so both fill the micro-batch. Because every unit has the same
kernel shape, XLA's numerics cannot depend on how units are grouped:

* a *chunk* is `units_per_call` units of one input block, run by one jitted call with
  `lax.map` (sequentially on a device, so peak memory is that of one unit, not of the chunk);
* with several devices the chunk's unit axis is sharded over a 1-D `Mesh` with `jax.shard_map`;
* inputs are bucketed by their own length (rounded up to `pad_multiple` tokens, default 8), so an input's kernel shape
  does not depend on which other inputs are in the sweep or in what order;
* counts are integers summed on the host, so their order does not matter either.

Results are therefore bitwise identical across chunk sizes, input order, device count and
resumption (for a fixed micro-batch `grid_per_step` × `draws_per_step` × `inputs_per_step`).

Prefix caching: activations before the first perturbed site are computed once per input block
(`Model.prefix`) and reused by every grid point and draw.

Multi-host: after `jax.distributed.initialize`, every process runs the same call with the same
inputs; the mesh spans all processes' devices, units are spread over them and the counts are
all-gathered, so every process returns the full result.

Resumption: with `run_dir`, the counts and the set of finished units are
checkpointed with orbax after every chunk under a fingerprint of everything that determines the
result (engine/store.py); rerunning the same sweep skips finished units, a finished sweep is
marked complete and its rerun computes nothing. Multi-process sweeps save through orbax's
coordinated checkpoints (`run_dir` on storage every process sees) and resume with any process
count (counts do not depend on it).

Compilation: the kernels (engine/kernels.py) are module-level jitted functions with the
structure static and everything else an array, so a new seed, K, σ grid of the same length or
inputs of the same length bucket never recompile.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from apex_jax.engine import kernels as kern
from apex_jax.engine.kernels import Perturb
from apex_jax.engine.keys import root_key_data
from apex_jax.engine.plan import PAD_MULTIPLE, Block, SweepPlan, plan_sweep
from apex_jax.engine.store import Store, agree_on_step, describe
from apex_jax.models.blocks import stack_blocks
from apex_jax.models.model import Model


@dataclasses.dataclass
class SweepResult:
    counts: np.ndarray  # [n_inputs, n_grid, n_classes] int64: draws predicting each class
    clean: np.ndarray  # [n_inputs] clean predictions
    draws: int
    seconds: float
    perturbed_forwards: int  # computed in this run (resumed units excluded); a Python int
    settings: dict
    plan: SweepPlan | None = None  # the schedule that ran
    fingerprint: str = ""  # of the checkpointed sweep ("" without run_dir)

    @property
    def kept(self) -> np.ndarray:
        """Share of draws keeping the clean prediction, [n_inputs, n_grid]."""
        n = self.counts.shape[0]
        return self.counts[np.arange(n), :, self.clean] / self.draws


def run_sweep(
    model: Model,
    params: Any,
    inputs: dict[str, np.ndarray],
    ids: Sequence[int],
    perturb: Perturb,
    grid: Any,
    *,
    sites: Sequence[str],
    draws: int,
    seed: int = 0,
    draws_per_step: int | None = None,
    inputs_per_step: int = 1,
    units_per_call: int | None = None,
    memory_budget: float | None = None,
    mesh: jax.sharding.Mesh | None = None,
    pad_multiple: int = PAD_MULTIPLE,
    run_dir: str | Path | None = None,
    progress: bool = True,
    tag: str = "",
    common_noise: bool = False,
    per_input_grid: bool = False,
    draw_offset: int = 0,
    grid_per_step: int | None = None,
) -> SweepResult:
    """Runs K perturbed forwards per (input, grid point) and counts predicted classes.

    Args:
        model, params: a classifier.
        inputs: encoded inputs (`model.encode`), n examples; text may be padded to any length.
        ids: a stable integer id per input (keys its noise).
        perturb: `(grid point, keys) -> {site: intervention}`; the grid point is `grid` indexed at
            one grid index, `keys` are typed PRNG keys [inputs_per_step] (one per input). It is
            a static argument of the compiled kernel: pass the same function object (not a new
            lambda per call) to reuse a compilation.
        grid: pytree of arrays with a leading grid axis G (e.g. σ values [G]).
        sites: the sites `perturb` touches (decides the cached prefix).
        draws: K, draws per (input, grid point).
        draws_per_step, inputs_per_step, grid_per_step: the fixed micro-batch (kernel shape).
            By default draws_per_step is the largest power of two <= draws that fits
            `memory_budget` bytes, and grid_per_step fills what the budget leaves (the grid is
            cut into equal parts of at most that size). One input per step (the default) never
            computes filler rows: the micro-batch is filled with draws and grid points instead.
        units_per_call: units per jitted call (default: ~2 per device, at least 1 draw block).
        memory_budget: bytes one unit may hold live per device (default: from the device's
            memory statistics when it has them, `DEFAULT_MEMORY_BUDGET` on CPU; plan.py).
        mesh: 1-D mesh (axis "units") to shard units over (default: all devices).
        pad_multiple: inputs run at their length rounded up to a multiple of this (default 8;
            16 reproduces the counts of engines before 2026-11-30; 1 = exact lengths).
        run_dir: folder for resumable checkpoints (orbax; see engine/store.py).
        tag: extra text mixed into the checkpoint fingerprint (e.g. what `perturb` does).
        common_noise: use the same keys at every grid point (common random numbers): draw d of
            an input sees the same noise direction at every σ, so curves over the grid vary
            only through σ (lower variance; escape points of single draws are well defined).
        draw_offset: the sweep's draws are draw indices draw_offset .. draw_offset + draws - 1,
            so a later sweep can add draws to an earlier one (sequential stopping).
        per_input_grid: grid leaves are [G, n, ...], one value per input; the grid point given
            to `perturb` is then [inputs_per_step, ...] (e.g. a σ per input for bisection).

    Returns:
        SweepResult with counts [n, G, n_classes] and the plan that ran.
    """
    ids, G = _validate(model, inputs, ids, grid, draws, per_input_grid)
    mesh = mesh or jax.make_mesh((jax.device_count(),), (kern.UNIT_AXIS,))
    plan = plan_sweep(model, inputs, G, draws, sites, draws_per_step=draws_per_step,
                      inputs_per_step=inputs_per_step, grid_per_step=grid_per_step,
                      units_per_call=units_per_call, memory_budget=memory_budget, mesh=mesh,
                      pad_multiple=pad_multiple)
    settings = _settings(plan, seed, sites, model.config.n_classes, tag, common_noise,
                         per_input_grid, draw_offset)
    store = _open_store(run_dir, settings, model, params, perturb, ids, inputs, grid)
    counts = np.zeros((plan.n_inputs, G, model.config.n_classes), np.int64)
    done = np.zeros(plan.units, bool)
    if store is not None:
        counts, done = _resume(store, counts, done)

    # the blocks' parameters stacked once per sweep, not inside every unit of the kernel's loop
    params = stack_blocks(params, model.config.n_layers)
    traces_before = kern.TRACES["chunk"]
    kernel = functools.partial(  # the compiled chunk kernel with this sweep's static structure
        kern.run_chunk, config=model.config, perturb=perturb, draws_per_step=plan.draws_per_step,
        n_classes=model.config.n_classes, common_noise=common_noise, mesh=mesh)
    scalars = (root_key_data(seed), np.int32(draw_offset), np.int32(draws))
    unit_sharding = jax.sharding.NamedSharding(mesh, P(kern.UNIT_AXIS))
    clean = np.zeros(plan.n_inputs, np.int64)
    t0 = time.perf_counter()
    computed = 0
    bar = _progress(int((~done).sum()) * plan.rows_per_step, progress)
    for bi, block in enumerate(plan.blocks):
        prefix, block_clean = _prefix(model, params, inputs, block, sites)
        real = block.rows >= 0
        clean[block.rows[real]] = block_clean[real]
        block_ids = np.where(real, ids[np.maximum(block.rows, 0)], 0)
        first = bi * plan.units_per_block
        todo = [u for u in range(first, first + plan.units_per_block) if not done[u]]
        for s in range(0, len(todo), plan.units_per_call):
            chunk = todo[s : s + plan.units_per_call]
            g_idx, d_idx = _unit_indices(plan, np.asarray(chunk) - first)
            points = _grid_points(grid, g_idx, block, per_input_grid)
            per_unit = jax.tree.map(lambda a: _global_array(a, unit_sharding), (points, g_idx, d_idx))
            out = _to_host(kernel(params, prefix, block_ids, *scalars, *per_unit))
            computed += _accumulate(counts, out, block, g_idx, d_idx, plan)
            done[chunk] = True
            if store is not None:
                store.save(counts, done)
            bar.update(len(chunk) * plan.rows_per_step)
    bar.close()
    if store is not None:
        store.mark_complete()
    return SweepResult(counts, clean, draws, time.perf_counter() - t0, computed,
                       {**settings, "units_per_call": plan.units_per_call, "devices": plan.devices,
                        "blocks": len(plan.blocks), "compiles": kern.TRACES["chunk"] - traces_before},
                       plan, store.fingerprint if store is not None else "")


def _validate(model: Model, inputs: dict, ids: Sequence[int], grid: Any, draws: int,
              per_input_grid: bool) -> tuple[np.ndarray, int]:
    """Checks the sweep's arguments; returns (ids [n] int64, grid size G)."""
    if model.config.n_classes is None:
        raise ValueError("a sweep needs a classifier; load the model with num_labels=N.")
    ids = np.asarray(ids, np.int64)
    n = len(ids)
    if n == 0:
        raise ValueError("the sweep got no inputs.")
    if len(np.unique(ids)) != n:
        raise ValueError("input ids must be unique (they key the noise).")
    if draws < 1:
        raise ValueError(f"draws must be >= 1; got {draws}.")
    leaves = jax.tree.leaves(grid)
    if not leaves:
        raise ValueError("the grid has no array leaves.")
    G = int(np.shape(leaves[0])[0])
    if any(np.shape(l)[:1] != (G,) for l in leaves):
        raise ValueError(f"every grid leaf needs the same leading grid axis; got {[np.shape(l) for l in leaves]}.")
    if per_input_grid and any(np.shape(l)[1:2] != (n,) for l in leaves):
        raise ValueError(f"per_input_grid needs grid leaves of shape [G, {n}, ...]; got {[np.shape(l) for l in leaves]}.")
    return ids, G


def _settings(plan: SweepPlan, seed: int, sites: Sequence[str], n_classes: int, tag: str,
              common_noise: bool, per_input_grid: bool, draw_offset: int) -> dict:
    """The sweep's settings as recorded in SweepResult.settings (and fingerprinted)."""
    return {
        "n_inputs": plan.n_inputs, "grid_size": plan.grid_size, "draws": plan.draws, "seed": seed,
        "sites": list(sites), "draws_per_step": plan.draws_per_step,
        "inputs_per_step": plan.inputs_per_step, "grid_per_step": plan.grid_per_step,
        "n_classes": n_classes, "tag": tag, "common_noise": common_noise,
        "per_input_grid": per_input_grid, "draw_offset": draw_offset,
        "pad_multiple": plan.pad_multiple,
    }


def _open_store(run_dir, settings: dict, model: Model, params, perturb, ids, inputs, grid) -> Store | None:
    if run_dir is None:
        return None
    return Store(run_dir, describe(settings, config=model.config, params=params, perturb=perturb,
                                   ids=ids, inputs=inputs, grid=grid), jax.process_index())


def _resume(store: Store, counts: np.ndarray, done: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The checkpointed (counts, done) every process agrees on, or the fresh ones."""
    step, highest = agree_on_step(store)
    store.step = highest  # later saves get new step numbers on every process
    if step == 0:
        return counts, done
    return store.restore(counts, done, step=step)


def _prefix(model: Model, params: Any, inputs: dict, block: Block, sites: Sequence[str]):
    """The block's cached prefix (hidden [inputs, pos, d_model]) and clean predictions [inputs]."""
    batch = _block_inputs(inputs, block, model.config.pad_token_id)
    prefix, logits = kern.prefix_and_clean(model.config, params, batch, sites=tuple(sites))
    if jax.process_count() > 1:  # each process computed the same prefix locally: pass it as
        prefix = jax.device_get(prefix)  # host data, which every process holds in full
    return prefix, np.asarray(logits).argmax(-1)


def _block_inputs(inputs: dict[str, np.ndarray], block: Block, pad_id: int) -> dict[str, np.ndarray]:
    """The block's rows of `inputs`, text cropped or padded to the block length."""
    rows = np.where(block.rows >= 0, block.rows, block.rows[0])  # filler repeats a real input
    out = {}
    for k, v in inputs.items():
        v = np.asarray(v)[rows]
        if block.length:  # text: crop (or pad) to the bucket length
            w = v.shape[1]
            fill = pad_id if k == "input_ids" else 0
            v = v[:, : block.length] if w >= block.length else np.pad(
                v, ((0, 0), (0, block.length - w)), constant_values=fill)
        out[k] = v
    return out


def _unit_indices(plan: SweepPlan, local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grid indices [units_per_call, grid_per_step] (-1 = filler slot or filler unit) and draw
    blocks [units_per_call] of a chunk's units (`local`: unit numbers within the block)."""
    Gs = plan.grid_per_step
    g_idx = np.full((plan.units_per_call, Gs), -1, np.int32)
    d_idx = np.zeros(plan.units_per_call, np.int32)
    g_idx[: len(local)] = ((local // plan.n_draw_blocks) * Gs)[:, None] + np.arange(Gs)
    g_idx[g_idx >= plan.grid_size] = -1
    d_idx[: len(local)] = local % plan.n_draw_blocks
    return g_idx, d_idx


def _grid_points(grid: Any, g_idx: np.ndarray, block: Block, per_input_grid: bool) -> Any:
    """Grid leaves at the chunk's grid indices: [units, Gs, ...] ([units, Gs, inputs, ...] per input)."""
    take = np.maximum(g_idx, 0)
    if per_input_grid:  # [G, n, ...] -> [units, Gs, inputs_per_step, ...]
        rows = np.maximum(block.rows, 0)
        return jax.tree.map(lambda a: np.asarray(a)[take][:, :, rows], grid)
    return jax.tree.map(lambda a: np.asarray(a)[take], grid)


def _accumulate(counts: np.ndarray, out: np.ndarray, block: Block, g_idx: np.ndarray,
                d_idx: np.ndarray, plan: SweepPlan) -> int:
    """Adds a chunk's counts [units, Gs, inputs, C] into `counts` [n, G, C] (in place); returns
    the perturbed forwards it holds as a Python int (real inputs × real draws × real grid slots)."""
    real = block.rows >= 0
    n_real = int(real.sum())
    forwards = 0
    for j in range(len(g_idx)):
        # int(): numpy int32 arithmetic would overflow past 2**31 and is not JSON serializable
        real_draws = min(plan.draws_per_step, plan.draws - int(d_idx[j]) * plan.draws_per_step)
        for gi_local, gi in enumerate(g_idx[j]):
            if gi >= 0:
                counts[block.rows[real], gi] += out[j, gi_local][real]
                forwards += real_draws * n_real
    return forwards


def _global_array(a: np.ndarray, sharding) -> jax.Array:
    """A host array every process holds in full -> a global array sharded over the mesh."""
    a = np.asarray(a)
    return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])


def _to_host(x: jax.Array) -> np.ndarray:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit="fwd", unit_scale=True, smoothing=0.1,
                desc="perturbed forwards")
