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
* with several devices the chunk's unit axis is sharded over the mesh's "units" axis with
  `jax.shard_map`; with `model_parallel=N` the mesh also has a "model" axis of N devices that
  the parameters are split over (engine/mesh.py), left to XLA's partitioner (its counts equal
  one device's except at near-ties: split reductions change float summation order);
* a decoder's text is right-padded first (`positions.sweep_inputs`), so cropping keeps its
  real tokens, and an intervention at `positions=CLASSIFIER_TOKEN` is resolved per input block
  to each input's classifier token (`positions.resolve`): methods hand the engine examples and
  a perturbation, nothing architecture-specific;
* inputs are bucketed by their own length (rounded up to `pad_multiple` tokens, default 8), so an input's kernel shape
  does not depend on which other inputs are in the sweep or in what order;
* counts are integers summed on the host, so their order does not matter either;
* the continuous scores (margin and KL sums, see `SweepResult`) are float32 sums over a unit's
  draws (one fixed-shape reduction per unit), added on the host in float64 in draw-block order,
  which is the same for every chunking, device count and resumption (units of a block are run
  and restored in unit order; a resumed sum holds exactly the earlier draw blocks).

Results are therefore bitwise identical across chunk sizes, input order, device count on the
sweep axis and resumption (for a fixed micro-batch `grid_per_step` × `draws_per_step` ×
`inputs_per_step`).

Prefix caching: activations before the first perturbed site are computed once per input block
(`Model.prefix`) and reused by every grid point and draw.

Multi-host: after `jax.distributed.initialize`, every process runs the same call with the same
inputs; the mesh spans all processes' devices, units are spread over them and the counts are
all-gathered, so every process returns the full result.

Resumption: with `run_dir`, the counts, score sums and the set of finished units are
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
import json
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec as P

from apex_jax import locks
from apex_jax import sites as site_lib
from apex_jax.engine import kernels as kern
from apex_jax.engine.kernels import Perturb
from apex_jax.engine.keys import root_key_data
from apex_jax.engine.memory_maps import release_if_near_limit
from apex_jax.engine.mesh import check_mesh, model_parallel_of, shard_params, sweep_mesh
from apex_jax.engine.plan import PAD_MULTIPLE, Block, SweepPlan, plan_sweep
from apex_jax.engine.positions import classifier_index, per_example_sites, sweep_inputs
from apex_jax.engine.reprs import compact_repr
from apex_jax.engine.store import (Store, agree_on_step, arrays_digest, describe, numerics,
                                   same_on_every_process)
from apex_jax.data.dataset import ID_MAX  # ids key the noise as uint32
from apex_jax.errors import InputError
from apex_jax.models.common import stack_blocks
from apex_jax.models.model import Model
from apex_jax.progress import Progress, tracker


@dataclasses.dataclass
class SweepResult:
    """What a sweep reduced: class counts and two continuous scores per (input, grid point).

    Scores (`engine.kernels.scores`), summed over the K draws like the counts:
      * margin = logit[r] − max_{c≠r} logit[c] of the perturbed logits, r = the *reference*
        class: the input's label when the sweep got `labels`, else its clean prediction
        (`margin_reference` says which). Positive while r is predicted; with labels, the clean
        margin is negative for misclassified inputs.
      * KL(clean ‖ perturbed) of the softmax distributions (nats, float32 log-softmax).
    `mean_margin` and `mean_kl` divide the sums by K. They move with every perturbation, also
    where no prediction flips, so small effects are visible that counts cannot show. The clean
    logits come from a forward batched [inputs], the draws from one batched [draws, inputs],
    so an identity perturbation (σ = 0) gives KL 0 and the clean margin up to float32 rounding
    (KL < 1e-6 nats on the test models; exactly 0 where the two forwards agree bit for bit).
    """

    counts: np.ndarray  # [n_inputs, n_grid, n_classes] int64: draws predicting each class
    clean: np.ndarray  # [n_inputs] clean predictions
    draws: int
    seconds: float
    perturbed_forwards: int  # computed in this run (resumed units excluded); a Python int
    settings: dict
    plan: SweepPlan | None = None  # the schedule that ran
    fingerprint: str = ""  # of the checkpointed sweep ("" without run_dir)
    margin_sum: np.ndarray | None = None  # [n_inputs, n_grid] float64: Σ over draws of the margin
    kl_sum: np.ndarray | None = None  # [n_inputs, n_grid] float64: Σ over draws of KL(clean ‖ perturbed)
    clean_logits: np.ndarray | None = None  # [n_inputs, n_classes] float32
    reference: np.ndarray | None = None  # [n_inputs] int64: the margin's class per input
    margin_reference: str = "clean"  # "label" (the sweep got labels) or "clean" (clean prediction)

    def __repr__(self) -> str:
        n, G, C = self.counts.shape
        return compact_repr("SweepResult", inputs=n, grid=G, classes=C, draws=self.draws,
                            share_kept=float(self.kept.mean()) if self.counts.size else None,
                            margin_reference=self.margin_reference, perturbed_forwards=self.perturbed_forwards,
                            seconds=self.seconds)

    @property
    def kept(self) -> np.ndarray:
        """Share of draws keeping the clean prediction, [n_inputs, n_grid] (a draw with
        non-finite logits keeps nothing)."""
        n = self.counts.shape[0]
        return self.counts[np.arange(n), :, self.clean] / self.draws

    @property
    def finite_draws(self) -> np.ndarray:
        """Draws whose perturbed logits were finite, [n_inputs, n_grid] (the counts' total)."""
        return self.counts.sum(-1)

    @property
    def nonfinite(self) -> np.ndarray:
        """Share of draws whose perturbed logits were not finite (NaN or inf: counted in no
        class, left out of the margin and KL means), [n_inputs, n_grid]."""
        return (self.draws - self.finite_draws) / self.draws

    @property
    def mean_margin(self) -> np.ndarray:
        """Mean over the finite draws of the reference class's logit margin, [n_inputs, n_grid]
        (NaN where no draw was finite)."""
        return self._finite_mean(self._need("margin_sum"))

    @property
    def mean_kl(self) -> np.ndarray:
        """Mean over the finite draws of KL(clean ‖ perturbed) in nats, [n_inputs, n_grid]."""
        return self._finite_mean(self._need("kl_sum"))

    def _finite_mean(self, total: np.ndarray) -> np.ndarray:
        n = self.finite_draws
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, total / np.maximum(n, 1), np.nan)

    @property
    def clean_margin(self) -> np.ndarray:
        """The reference class's logit margin of the clean forward, [n_inputs] float64 (the
        confidence baseline; computed like the perturbed margins, in float32)."""
        logits = self._need("clean_logits")
        return np.asarray(_margin(logits, self._need("reference")), np.float64)

    def _need(self, name: str) -> np.ndarray:
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"this SweepResult has no {name} (it was built without scores).")
        return value


def _one_writer(sweep):
    """A sweep with `run_dir` holds that folder's lock (`apex_jax.locks`) for its whole life: on
    process 0 only, so a multi-process job takes it once; a run layer's own folder is joined."""

    @functools.wraps(sweep)
    def locked(*args, run_dir=None, **kwargs):
        if run_dir is None or jax.process_index() != 0:
            return sweep(*args, run_dir=run_dir, **kwargs)
        with locks.hold(run_dir, within=True):
            return sweep(*args, run_dir=run_dir, **kwargs)

    return locked


@_one_writer
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
    progress: Progress = None,
    desc: str = "perturbed forwards",
    tag: str = "",
    common_noise: bool = False,
    per_input_grid: bool = False,
    draw_offset: int = 0,
    grid_per_step: int | None = None,
    model_parallel: int | None = None,
    labels: Sequence[int] | None = None,
) -> SweepResult:
    """Runs K perturbed forwards per (input, grid point): counts predicted classes and sums
    the reference class's logit margin and KL(clean ‖ perturbed) over draws (`SweepResult`).

    Args:
        model, params: a classifier.
        inputs: encoded inputs (`model.encode`), n examples; text may be padded to any length,
            on either side (a decoder's batch is right-padded here).
        ids: a stable integer id per input (keys its noise).
        perturb: `(grid point, keys) -> {site: intervention}`; the grid point is `grid` indexed at
            one grid index, `keys` are typed PRNG keys [inputs_per_step] (one per input). It is
            a static argument of the compiled kernel: pass the same function object (not a new
            lambda per call) to reuse a compilation. An intervention with
            `positions=CLASSIFIER_TOKEN` (engine/positions.py) acts at each input's classifier
            token ([CLS] for encoders, the last real token for decoders), resolved by the engine.
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
        mesh: the mesh (engine/mesh.py `sweep_mesh`): axis "units" to shard units over, and
            optionally "model" to split the parameters over (default: all devices, 1-D, or
            `sweep_mesh(model_parallel)`).
        model_parallel: devices each model replica is split over (tensor parallel, for models
            bigger than one device; default 1, or the mesh's "model" axis). Counts then equal
            the one-device ones except where a draw's top two logits are within rounding.
        pad_multiple: inputs run at their length rounded up to a multiple of this (default 8;
            16 reproduces the counts of kernel versions 1 and 2; 1 = exact lengths).
        run_dir: folder for resumable checkpoints (orbax; see engine/store.py). The sweep holds
            its lock (`apex_jax.locks`; process 0 for a multi-process job): a second sweep into
            it meanwhile is refused with the holder's pid and command.
        progress: perturbed forwards done, with rate and ETA (`apex_jax.progress`: None = a bar
            on a terminal only, True = bar or log lines, False = silent, or a callable).
        desc: the progress report's label.
        tag: extra text mixed into the checkpoint fingerprint (e.g. what `perturb` does).
        common_noise: use the same keys at every grid point (common random numbers): draw d of
            an input sees the same noise direction at every σ, so curves over the grid vary
            only through σ (lower variance; escape points of single draws are well defined).
        draw_offset: the sweep's draws are draw indices draw_offset .. draw_offset + draws - 1,
            so a later sweep can add draws to an earlier one (sequential stopping).
        per_input_grid: grid leaves are [G, n, ...], one value per input; the grid point given
            to `perturb` is then [inputs_per_step, ...] (e.g. a σ per input for bisection).
        labels: true classes [n]: the margin is then the label's (negative where the clean
            model is already wrong); without labels it is the clean prediction's.

    Returns:
        SweepResult with counts [n, G, n_classes], margin and KL sums [n, G] and the plan.
    """
    inputs = sweep_inputs(model, inputs)  # a decoder's text right-padded: crops keep real tokens
    ids, G = _validate(model, inputs, ids, grid, draws, per_input_grid)
    labels = _check_labels(labels, len(ids), model.config.n_classes)
    release_if_near_limit()  # a compile past the process's memory-map limit would crash it
    mesh = _mesh(mesh, model_parallel)
    # the blocks' parameters stacked once per sweep, not inside every unit of the kernel's loop,
    # then placed (split over a model axis) before the plan reads free memory
    store_params, params = params, shard_params(stack_blocks(params, model.config.n_layers), mesh)
    plan = plan_sweep(model, inputs, G, draws, sites, draws_per_step=draws_per_step,
                      inputs_per_step=inputs_per_step, grid_per_step=grid_per_step,
                      units_per_call=units_per_call, memory_budget=memory_budget, mesh=mesh,
                      pad_multiple=pad_multiple)
    # processes computing under other float numerics (e.g. XLA_FLAGS) must not gather their counts
    num = numerics()
    same_on_every_process(json.dumps(num, sort_keys=True), "numerics (XLA_FLAGS, backend, "
                          "matmul precision; see engine.store.numerics)", "XLA_FLAGS and JAX settings")
    settings = _settings(plan, seed, sites, model.config.n_classes, tag, common_noise,
                         per_input_grid, draw_offset, model_parallel_of(mesh), num)
    settings["margin_reference"] = "clean" if labels is None else "label"
    if labels is not None:  # the margins depend on them: part of the checkpoint fingerprint
        settings["labels_sha256"] = arrays_digest(labels)
    store = _open_store(run_dir, settings, model, store_params, perturb, ids, inputs, grid)
    state = {"counts": np.zeros((plan.n_inputs, G, model.config.n_classes), np.int64),
             "margin": np.zeros((plan.n_inputs, G), np.float64),
             "kl": np.zeros((plan.n_inputs, G), np.float64),
             "done": np.zeros(plan.units, bool)}
    if store is not None:
        state = _resume(store, state)
    counts, done = state["counts"], state["done"]

    traces_before = kern.TRACES["chunk"]
    kernel = functools.partial(  # the compiled chunk kernel with this sweep's static structure
        kern.run_chunk, config=model.config, perturb=perturb, draws_per_step=plan.draws_per_step,
        n_classes=model.config.n_classes, common_noise=common_noise, mesh=mesh,
        token_sites=per_example_sites(model.config, sites))
    scalars = (root_key_data(seed), np.int32(draw_offset), np.int32(draws))
    unit_sharding = jax.sharding.NamedSharding(mesh, P(kern.UNIT_AXIS))
    clean = np.zeros(plan.n_inputs, np.int64)
    clean_logits = np.zeros((plan.n_inputs, model.config.n_classes), np.float32)
    t0 = time.perf_counter()
    computed = 0
    bar = tracker(int((~done).sum()) * plan.rows_per_step, desc, "forwards",
                  progress if jax.process_index() == 0 else False)  # one report per run, not per host
    for bi, block in enumerate(plan.blocks):
        batch = _block_inputs(inputs, block, model.config.pad_token_id)
        prefix, block_logits = _prefix(model, params, batch, sites)
        token_index = classifier_index(model.config, batch, len(block.rows))
        real = block.rows >= 0
        _check_finite(np.asarray(block_logits)[real], ids[block.rows[real]])
        clean_logits[block.rows[real]] = block_logits[real]
        clean[block.rows[real]] = block_logits[real].argmax(-1)
        block_ids = np.where(real, ids[np.maximum(block.rows, 0)], 0)
        # the margin's class per row: the label, or the clean prediction (filler rows: any)
        reference = (block_logits.argmax(-1) if labels is None
                     else labels[np.maximum(block.rows, 0)]).astype(np.int32)
        first = bi * plan.units_per_block
        todo = [u for u in range(first, first + plan.units_per_block) if not done[u]]
        for s in range(0, len(todo), plan.units_per_call):
            chunk = todo[s : s + plan.units_per_call]
            g_idx, d_idx = _unit_indices(plan, np.asarray(chunk) - first)
            points = _grid_points(grid, g_idx, block, per_input_grid)
            per_unit = jax.tree.map(lambda a: _global_array(a, unit_sharding), (points, g_idx, d_idx))
            out = _to_host(kernel(params, prefix, block_ids, token_index, reference, block_logits, *scalars, *per_unit))
            computed += _accumulate(state, out, block, g_idx, d_idx, plan)
            done[chunk] = True
            if store is not None:
                store.save(state)
            bar.update(len(chunk) * plan.rows_per_step)
    bar.close()
    if store is not None:
        store.mark_complete()
    return SweepResult(counts, clean, draws, time.perf_counter() - t0, computed,
                       {**settings, "units_per_call": plan.units_per_call, "devices": plan.devices,
                        "blocks": len(plan.blocks), "compiles": kern.TRACES["chunk"] - traces_before},
                       plan, store.fingerprint if store is not None else "",
                       state["margin"], state["kl"], clean_logits,
                       clean if labels is None else labels.astype(np.int64), settings["margin_reference"])


def _check_labels(labels: Sequence[int] | None, n: int, n_classes: int) -> np.ndarray | None:
    """Labels as int64 [n], or None; raises InputError naming what is wrong."""
    if labels is None:
        return None
    a = np.asarray(labels)
    if a.shape != (n,) or (a.size and a.dtype.kind not in "iu"):
        raise InputError(f"labels must be {n} integer classes (one per input); got {a.dtype} {a.shape}.")
    bad = np.unique(a[(a < 0) | (a >= n_classes)])
    if bad.size:
        raise InputError(f"labels {bad[:10].tolist()} are outside the model's classes 0..{n_classes - 1}.")
    return a.astype(np.int64)


def _margin(logits: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Host twin of the kernel's margin: logit[r] − max_{c≠r} logit[c] in float32, [n]."""
    logits = np.asarray(logits, np.float32)
    n = len(logits)
    other = logits.copy()
    other[np.arange(n), reference] = -np.inf
    return logits[np.arange(n), reference] - other.max(-1)




def _check_finite(logits: np.ndarray, ids: np.ndarray) -> None:
    """InputError when clean logits are not finite: a broken model or input is an error, never a
    result (non-finite logits would count as class 0)."""
    bad = ~np.isfinite(logits).all(-1)
    if bad.any():
        raise InputError(f"the model's clean logits are not finite (NaN or inf) for {int(bad.sum())} input(s), ids "
                         f"{ids[bad][:5].tolist()}: the model is broken (non-finite weights, e.g. a diverged "
                         "training) or cannot read these inputs; check the model with model.apply on them")


def _validate(model: Model, inputs: dict, ids: Sequence[int], grid: Any, draws: int,
              per_input_grid: bool) -> tuple[np.ndarray, int]:
    """Checks the sweep's arguments; returns (ids [n] int64, grid size G)."""
    if model.config.n_classes is None:
        raise ValueError("a sweep needs a classifier; load the model with num_labels=N.")
    try:
        ids = np.asarray(ids, np.int64)
    except OverflowError:
        raise InputError(f"input ids must be integers in [0, {ID_MAX}] (they key the noise)") from None
    n = len(ids)
    if n == 0:
        raise ValueError("the sweep got no inputs.")
    if n != len(jax.tree.leaves(inputs)[0]):
        raise InputError(f"the sweep got {n} ids for {len(jax.tree.leaves(inputs)[0])} inputs; give one id per input")
    if ids.min() < 0 or ids.max() > ID_MAX:
        raise InputError(f"input ids must lie in [0, {ID_MAX}] (they key the noise as 32-bit values: others would "
                         f"collide); got {ids.min()}..{ids.max()}")
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


def _mesh(mesh: jax.sharding.Mesh | None, model_parallel: int | None) -> jax.sharding.Mesh:
    """The sweep's mesh: `mesh` checked against `model_parallel`, or `sweep_mesh(model_parallel)`."""
    if mesh is None:
        return sweep_mesh(1 if model_parallel is None else model_parallel)
    check_mesh(mesh)
    if model_parallel is not None and model_parallel != model_parallel_of(mesh):
        raise InputError(
            f"model_parallel={model_parallel} disagrees with the mesh's model axis of "
            f"{model_parallel_of(mesh)} devices; pass one of them (sweep_mesh(model_parallel=N) builds the mesh).")
    return mesh


def _settings(plan: SweepPlan, seed: int, sites: Sequence[str], n_classes: int, tag: str,
              common_noise: bool, per_input_grid: bool, draw_offset: int,
              model_parallel: int = 1, num: dict | None = None) -> dict:
    """The sweep's settings as recorded in SweepResult.settings (and fingerprinted).

    `model_parallel` (above 1) and the non-default numerics `num` (`store.numerics`) enter only
    when set (their counts may differ at near-ties), so default sweeps keep the fingerprints of
    earlier versions."""
    extra = {"model_parallel": model_parallel} if model_parallel > 1 else {}
    extra |= {"numerics": num} if num else {}
    return {**extra,
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


def _resume(store: Store, state: dict) -> dict:
    """The checkpointed state (counts, margin, kl, done) every process agrees on, or `state`."""
    step, highest = agree_on_step(store)
    store.step = highest  # later saves get new step numbers on every process
    if step == 0:
        return state
    return store.restore(state, step=step)


def _prefix(model: Model, params: Any, batch: dict, sites: Sequence[str]):
    """The cached prefix of an input block's `batch` (`_block_inputs`; hidden [inputs, pos,
    d_model]) and its clean logits [inputs, C] float32."""
    # the prefix depends only on the block it ends before: key the kernel on that block's boundary
    # site, so sweeps of other site sets with the same first perturbed block (e.g. every block's
    # output, with or without the head) share one compilation
    until = (site_lib.boundary_site(model.resume_block(sites)),)
    prefix, logits = kern.prefix_and_clean(model.config, params, batch, sites=until)
    if jax.process_count() > 1:  # each process computed the same prefix: pass it as host
        prefix = _to_host(prefix)  # data, which every process holds in full
    return prefix, _to_host(logits).astype(np.float32)


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


def _accumulate(state: dict, out: tuple, block: Block, g_idx: np.ndarray,
                d_idx: np.ndarray, plan: SweepPlan) -> int:
    """Adds a chunk's counts [units, Gs, inputs, C] and margin / KL sums [units, Gs, inputs]
    into `state` (counts [n, G, C], margin and kl [n, G] float64; in place), unit by unit in the
    chunk's order (ascending draw block: the fixed order that keeps float sums reproducible);
    returns the perturbed forwards it holds as a Python int (real inputs × real draws × real
    grid slots)."""
    counts, margins, kls = out
    real = block.rows >= 0
    rows = block.rows[real]
    n_real = int(real.sum())
    forwards = 0
    for j in range(len(g_idx)):
        # int(): numpy int32 arithmetic would overflow past 2**31 and is not JSON serializable
        real_draws = min(plan.draws_per_step, plan.draws - int(d_idx[j]) * plan.draws_per_step)
        for gi_local, gi in enumerate(g_idx[j]):
            if gi >= 0:
                state["counts"][rows, gi] += counts[j, gi_local][real]
                state["margin"][rows, gi] += margins[j, gi_local][real].astype(np.float64)
                state["kl"][rows, gi] += kls[j, gi_local][real].astype(np.float64)
                forwards += real_draws * n_real
    return forwards


def _global_array(a: np.ndarray, sharding) -> jax.Array:
    """A host array every process holds in full -> a global array sharded over the mesh."""
    a = np.asarray(a)
    return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])


def _to_host(x: Any) -> Any:
    """A pytree of arrays -> host numpy arrays; global arrays that this process does not hold
    in full are all-gathered across processes."""
    def one(a):
        if jax.process_count() > 1 and isinstance(a, jax.Array) and not a.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return np.asarray(a)

    return jax.tree.map(one, x)

