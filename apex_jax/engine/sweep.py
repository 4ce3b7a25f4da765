"""The streaming sweep engine: K perturbed forward passes per (input, grid point), reduced on device.

Work is cut into *units*: (input block b, grid block, draw block d). A unit runs one compiled
kernel of fixed shape — `grid_per_step` grid points × `draws_per_step` draws × `inputs_per_step`
inputs × the block's padded length — and returns class counts [grid_per_step, inputs_per_step,
n_classes]. Many draws per step suit noise sweeps; many grid points per step suit deterministic
sweeps (one draw, e.g. silencing masks), so both fill the micro-batch. Because every unit has the same
kernel shape, XLA's numerics cannot depend on how units are grouped:

* a *chunk* is `units_per_call` units of one input block, run by one jitted call with
  `lax.map` (sequentially on a device, so peak memory is that of one unit, not of the chunk);
* with several devices the chunk's unit axis is sharded over a 1-D `Mesh` with `jax.shard_map`;
* inputs are bucketed by their own length (rounded up to 16 tokens), so an input's kernel shape
  does not depend on which other inputs are in the sweep or in what order;
* counts are integers summed on the host, so their order does not matter either.

Results are therefore bitwise identical across chunk sizes, input order, device count and
resumption (for a fixed micro-batch `grid_per_step` × `draws_per_step` × `inputs_per_step`).

Prefix caching: activations before the first perturbed site are computed once per input block
(`Model.prefix`) and reused by every grid point and draw.

Multi-host: after `jax.distributed.initialize`, every process runs the same call with the same
inputs; the mesh spans all processes' devices, units are spread over them and the counts are
all-gathered, so every process returns the full result.

Resumption (single process): with `run_dir`, the counts and the set of finished units are checkpointed with orbax
after every chunk; rerunning the same sweep skips finished units.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from apex_jax.engine.keys import draw_keys
from apex_jax.models.model import Model

from apex_jax.batching import PAD_MULTIPLE  # noqa: E402  (one padding rule: apex_jax.batching)
Perturb = Callable[[Any, jax.Array], dict]  # (grid point pytree, keys [inputs]) -> perturbations


@dataclasses.dataclass
class SweepResult:
    counts: np.ndarray  # [n_inputs, n_grid, n_classes] int64: draws predicting each class
    clean: np.ndarray  # [n_inputs] clean predictions
    draws: int
    seconds: float
    perturbed_forwards: int  # computed in this run (resumed units excluded)
    settings: dict

    @property
    def kept(self) -> np.ndarray:
        """Share of draws keeping the clean prediction, [n_inputs, n_grid]."""
        n = self.counts.shape[0]
        return self.counts[np.arange(n), :, self.clean] / self.draws


@dataclasses.dataclass(frozen=True)
class Block:
    rows: np.ndarray  # positions of the block's inputs in the sweep's input arrays (-1 = filler)
    length: int  # padded sequence length (0 for images)


def plan_blocks(lengths: np.ndarray | None, n: int, inputs_per_step: int) -> list[Block]:
    """Input blocks: inputs grouped by padded length bucket, in input order within a bucket."""
    if lengths is None:
        buckets = {0: np.arange(n)}
    else:
        padded = np.ceil(np.maximum(lengths, 1) / PAD_MULTIPLE).astype(int) * PAD_MULTIPLE
        buckets = {int(L): np.flatnonzero(padded == L) for L in np.unique(padded)}
    blocks = []
    for L, rows in sorted(buckets.items()):
        for s in range(0, len(rows), inputs_per_step):
            part = rows[s : s + inputs_per_step]
            filler = np.full(inputs_per_step - len(part), -1)
            blocks.append(Block(np.concatenate([part, filler]).astype(int), L))
    return blocks


def _block_inputs(inputs: dict[str, np.ndarray], block: Block, pad_id: int) -> dict[str, np.ndarray]:
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


def default_micro_batch(model: Model, length: int, draws: int, memory_budget: float) -> int:
    """Largest power-of-two rows per step (up to `draws`) whose activations fit the memory
    budget (bytes)."""
    c = model.config
    tokens = max(length, (c.n_patches + 1) if not c.is_text else 1)
    # live float32 activations of one layer of one draw (q,k,v,z,residuals, MLP, attention)
    per_draw = tokens * (8 * c.d_model + 2 * c.d_mlp + 2 * c.n_heads * tokens) * 4
    d = 1
    while d * 2 <= draws and d * 2 * per_draw <= memory_budget:
        d *= 2
    return d


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
    memory_budget: float = 2**30,
    mesh: jax.sharding.Mesh | None = None,
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
            one grid index, `keys` are typed PRNG keys [inputs_per_step] (one per input).
        grid: pytree of arrays with a leading grid axis G (e.g. σ values [G]).
        sites: the sites `perturb` touches (decides the cached prefix).
        draws: K, draws per (input, grid point).
        draws_per_step, inputs_per_step, grid_per_step: the fixed micro-batch (kernel shape).
            By default draws_per_step is the largest power of two <= draws that fits
            `memory_budget` bytes, and grid_per_step fills what the budget leaves (the grid is
            cut into equal parts of at most that size). One input per step (the default) never
            computes filler rows: the micro-batch is filled with draws and grid points instead.
        units_per_call: units per jitted call (default: ~2 per device, at least 1 draw block).
        mesh: 1-D mesh to shard units over (default: all local devices).
        run_dir: folder for resumable checkpoints (orbax).
        tag: extra text mixed into the checkpoint fingerprint (e.g. what `perturb` does).
        common_noise: use the same keys at every grid point (common random numbers): draw d of
            an input sees the same noise direction at every σ, so curves over the grid vary
            only through σ (lower variance; escape points of single draws are well defined).
        draw_offset: the sweep's draws are draw indices draw_offset .. draw_offset + draws - 1,
            so a later sweep can add draws to an earlier one (sequential stopping).
        per_input_grid: grid leaves are [G, n, ...], one value per input; the grid point given
            to `perturb` is then [inputs_per_step, ...] (e.g. a σ per input for bisection).

    Returns:
        SweepResult with counts [n, G, n_classes].
    """
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
    C = model.config.n_classes
    text = model.config.is_text
    lengths = np.asarray(inputs["attention_mask"]).sum(1) if text else None
    blocks = plan_blocks(lengths, n, inputs_per_step)
    longest = max(b.length for b in blocks)
    if draws_per_step is None:
        draws_per_step = default_micro_batch(model, longest, draws, memory_budget / inputs_per_step)
    if grid_per_step is None:
        most = default_micro_batch(model, longest, 1 << max(0, G - 1).bit_length(),
                                   memory_budget / (inputs_per_step * draws_per_step))
        grid_per_step = math.ceil(G / math.ceil(G / most))  # as few filler grid slots as possible
    if draws_per_step < 1 or grid_per_step < 1 or inputs_per_step < 1:
        raise ValueError("draws_per_step, grid_per_step and inputs_per_step must be >= 1.")
    n_draw_blocks = math.ceil(draws / draws_per_step)
    n_grid_blocks = math.ceil(G / grid_per_step)
    mesh = mesh or jax.make_mesh((jax.device_count(),), ("units",))
    n_dev = mesh.devices.size
    if units_per_call is None:
        units_per_call = 2 * n_dev
    units_per_call = max(n_dev, math.ceil(units_per_call / n_dev) * n_dev)

    settings = {
        "n_inputs": n, "grid_size": G, "draws": draws, "seed": seed, "sites": list(sites),
        "draws_per_step": draws_per_step, "inputs_per_step": inputs_per_step,
        "grid_per_step": grid_per_step,
        "n_classes": C, "tag": tag, "common_noise": common_noise, "per_input_grid": per_input_grid,
        "draw_offset": draw_offset,
    }
    fingerprint = _fingerprint(settings, ids, inputs, grid)
    if run_dir is not None and jax.process_count() > 1:
        raise ValueError("resumable sweeps (run_dir) are single-process for now; drop run_dir.")
    store = _Store(run_dir, fingerprint) if run_dir is not None else None
    counts = np.zeros((n, G, C), np.int64)
    # unit u = (block, grid block, draw block), block-major so a block's prefix is built once
    units_per_block = n_grid_blocks * n_draw_blocks
    done = np.zeros(len(blocks) * units_per_block, bool)
    if store is not None and store.exists():
        counts, done = store.restore(counts, done)

    if per_input_grid and any(np.shape(l)[1:2] != (n,) for l in leaves):
        raise ValueError(f"per_input_grid needs grid leaves of shape [G, {n}, ...]; got {[np.shape(l) for l in leaves]}.")
    kernel = _kernels(model, mesh, perturb, seed, draws_per_step, C, common_noise)
    Gs = grid_per_step
    clean = np.zeros(n, np.int64)
    t0 = time.perf_counter()
    computed = 0
    bar = _progress(int((~done).sum()) * Gs * draws_per_step * inputs_per_step, progress)
    for bi, block in enumerate(blocks):
        batch = _block_inputs(inputs, block, model.config.pad_token_id)
        real = block.rows >= 0
        prefix, logits = kernel.prefix(params, batch, tuple(sites))
        if jax.process_count() > 1:  # each process computed the same prefix locally: pass it as
            prefix = jax.device_get(prefix)  # host data, which every process holds in full
        clean[block.rows[real]] = np.asarray(logits)[real].argmax(-1)
        todo = [u for u in range(bi * units_per_block, (bi + 1) * units_per_block) if not done[u]]
        if not todo:
            continue
        block_ids = np.where(real, ids[np.maximum(block.rows, 0)], 0)
        for s in range(0, len(todo), units_per_call):
            chunk = todo[s : s + units_per_call]
            local = np.asarray(chunk) - bi * units_per_block
            # grid indices per unit [units, Gs]; -1 marks filler grid slots and filler units
            g_idx = np.full((units_per_call, Gs), -1, np.int32)
            d_idx = np.zeros(units_per_call, np.int32)
            g_first = (local // n_draw_blocks) * Gs
            g_idx[: len(chunk)] = g_first[:, None] + np.arange(Gs)
            g_idx[g_idx >= G] = -1
            d_idx[: len(chunk)] = local % n_draw_blocks
            take = np.maximum(g_idx, 0)
            if per_input_grid:  # [G, n, ...] -> [units, Gs, inputs_per_step, ...]
                rows = np.maximum(block.rows, 0)
                points = jax.tree.map(lambda a: np.asarray(a)[take][:, :, rows], grid)
            else:
                points = jax.tree.map(lambda a: np.asarray(a)[take], grid)
            per_unit = jax.tree.map(lambda a: _global_array(a, kernel.unit_sharding), (points, g_idx, d_idx))
            out = _to_host(kernel.chunk(params, prefix, block_ids, np.int32(draw_offset), np.int32(draws), *per_unit))
            n_real = int(real.sum())
            for j, u in enumerate(chunk):
                for gi_local, gi in enumerate(g_idx[j]):
                    if gi >= 0:
                        counts[block.rows[real], gi] += out[j, gi_local][real]
                        computed += min(draws_per_step, draws - d_idx[j] * draws_per_step) * n_real
                done[u] = True
            if store is not None:
                store.save(counts, done)
            bar.update(len(chunk) * Gs * draws_per_step * inputs_per_step)
    bar.close()
    return SweepResult(counts, clean, draws, time.perf_counter() - t0, computed,
                       {**settings, "units_per_call": units_per_call, "devices": n_dev,
                        "blocks": len(blocks), "compiles": len(kernel.traces)})


@dataclasses.dataclass
class _Kernels:
    prefix: Callable  # (params, batch, sites) -> (Prefix, clean logits)
    chunk: Callable
    unit_sharding: jax.sharding.NamedSharding  # the unit axis spread over the mesh
    traces: list  # one entry per trace of the chunk kernel (a compile counter for tests)


_KERNEL_CACHE: dict = {}
_KERNEL_CACHE_SIZE = 16


def _kernels(model: Model, mesh, perturb: Perturb, seed: int, D: int, C: int, common_noise: bool) -> _Kernels:
    """Compiled kernels, cached so repeated sweeps with the same perturb function (e.g. the
    rounds of a bisection, or another draw count) reuse one compilation per kernel shape."""
    # keyed on the architecture, not the loaded model: every checkpoint of it shares the kernels
    key = (model.skeleton, mesh, perturb, seed, D, C, common_noise)
    if key not in _KERNEL_CACHE:
        if len(_KERNEL_CACHE) >= _KERNEL_CACHE_SIZE:
            _KERNEL_CACHE.pop(next(iter(_KERNEL_CACHE)))
        _KERNEL_CACHE[key] = _build_kernels(model.skeleton, mesh, perturb, seed, D, C, common_noise)
    return _KERNEL_CACHE[key]


def _build_kernels(model: Model, mesh, perturb: Perturb, seed: int, D: int, C: int,
                   common_noise: bool) -> _Kernels:
    traces: list = []

    def one_point(params, prefix, block_ids, offset, draws, grid_point, g, d):
        draw_index = d * D + jnp.arange(D)
        keys = draw_keys(seed, block_ids, 0 if common_noise else jnp.maximum(g, 0), offset + draw_index)
        logits = jax.vmap(lambda k: model.apply(params, prefix, perturb(grid_point, k), head_only=True).logits)(keys)
        hits = jax.nn.one_hot(jnp.argmax(logits, -1), C, dtype=jnp.int32)  # [D, inputs, C]
        valid = (draw_index < draws) & (g >= 0)
        return jnp.sum(hits * valid[:, None, None], axis=0)

    def unit(params, prefix, block_ids, offset, draws, grid_points, g, d):  # Gs grid points at once
        run = lambda: jax.vmap(lambda p, gi: one_point(params, prefix, block_ids, offset, draws, p, gi, d))(grid_points, g)
        # filler units (a chunk's tail) skip the forward entirely: lax.map runs units one by
        # one, so this is a real branch, not a select
        skip = lambda: jax.lax.pcast(jnp.zeros((g.shape[0], len(block_ids), C), jnp.int32), ("units",), to="varying")
        return jax.lax.cond(jnp.any(g >= 0), run, skip)

    def local_chunk(params, prefix, block_ids, offset, draws, grid_points, g_idx, d_idx):
        traces.append(1)
        return jax.lax.map(lambda a: unit(params, prefix, block_ids, offset, draws, *a), (grid_points, g_idx, d_idx))

    sharded = jax.shard_map(
        local_chunk, mesh=mesh,
        in_specs=(P(), P(), P(), P(), P(), P("units"), P("units"), P("units")), out_specs=P("units"),
    )
    def prefix_and_clean(params, batch, sites):
        prefix = model.prefix(params, batch, sites)
        return prefix, model.apply(params, prefix).logits  # clean logits from the cached prefix

    return _Kernels(jax.jit(prefix_and_clean, static_argnums=2), jax.jit(sharded),
                    jax.sharding.NamedSharding(mesh, P("units")), traces)


def _global_array(a: np.ndarray, sharding) -> jax.Array:
    """A host array every process holds in full -> a global array sharded over the mesh."""
    a = np.asarray(a)
    return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])


def _to_host(x: jax.Array) -> np.ndarray:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def _fingerprint(settings: dict, ids, inputs, grid) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for a in (ids, *(inputs[k] for k in sorted(inputs)), *jax.tree.leaves(grid)):
        h.update(np.ascontiguousarray(np.asarray(a)).tobytes())
    return h.hexdigest()[:16]


class _Store:
    """orbax checkpoints of (counts, done units) keyed by the sweep's fingerprint."""

    def __init__(self, run_dir, fingerprint: str):
        import orbax.checkpoint as ocp

        self.ocp = ocp
        self.dir = Path(run_dir).absolute() / "sweep-checkpoints" / fingerprint
        self.manager = ocp.CheckpointManager(self.dir, options=ocp.CheckpointManagerOptions(max_to_keep=1))
        self.step = self.manager.latest_step() or 0

    def exists(self) -> bool:
        return self.manager.latest_step() is not None

    def restore(self, counts, done):
        ocp = self.ocp
        target = {"counts": counts, "done": done}
        try:
            got = self.manager.restore(self.manager.latest_step(), args=ocp.args.StandardRestore(
                jax.tree.map(ocp.utils.to_shape_dtype_struct, target)))
        except Exception as e:
            raise RuntimeError(f"sweep checkpoint in {self.dir} is corrupt ({e}); delete it to start over.") from e
        return np.asarray(got["counts"]), np.asarray(got["done"])

    def save(self, counts, done):
        self.step += 1
        self.manager.save(self.step, args=self.ocp.args.StandardSave({"counts": counts, "done": done}))
        self.manager.wait_until_finished()


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit="fwd", unit_scale=True, smoothing=0.1,
                desc="perturbed forwards")
