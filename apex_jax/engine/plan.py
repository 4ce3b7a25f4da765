"""The schedule of a sweep as a value: what `run_sweep` will execute, before it executes it.

    plan = plan_sweep(model, inputs, grid_size=8, draws=64, sites=sites)
    plan.draws_per_step, plan.units, plan.padded_tokens / plan.real_tokens, plan.flops

Work is cut into *units*: (input block, grid block, draw block). A unit runs one compiled kernel
of fixed shape — `grid_per_step` grid points × `draws_per_step` draws × `inputs_per_step` inputs ×
the block's padded length — so XLA's numerics never depend on how units are grouped (chunking,
devices, resumption). Inputs are bucketed by their own length (rounded up to a multiple of
`pad_multiple`, default `PAD_MULTIPLE` = 8), so an input's kernel shape does not depend on the
other inputs of the sweep. `pad_multiple=16` reproduces the rule (and so the counts) of kernel
versions 1 and 2 (`store.KERNEL_VERSION`); `pad_multiple=1` runs every input at its exact length (one compile per
distinct length). Benchmarks read this
plan instead of re-deriving the schedule.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax
import numpy as np

from apex_jax import sites as site_lib
from apex_jax.engine.mesh import model_parallel_of, sweep_devices_of
from apex_jax.engine.reprs import compact_repr, span
from apex_jax.models.encoder import ArchConfig

DEFAULT_MEMORY_BUDGET = 2**30  # bytes of live activations per device step (CPU / no memory stats)
DEVICE_MEMORY_FRACTION = 0.5  # share of a device's free memory a sweep step may use
# The engine's length buckets: an input runs at its length rounded up to a multiple of this.
# 8 (was 16, `apex_jax.batching.PAD_MULTIPLE`): at BERT-base size a 33-token sentence runs at 40
# instead of 48 tokens (~1.2x less work) for at most twice the length buckets (compiles).
PAD_MULTIPLE = 8


@dataclasses.dataclass(frozen=True)
class Block:
    """One input block: the inputs of one kernel call's input axis."""

    rows: np.ndarray  # [inputs_per_step] positions in the sweep's input arrays (-1 = filler)
    length: int  # padded sequence length (0 for images)

    @property
    def n_real(self) -> int:
        return int((self.rows >= 0).sum())


@dataclasses.dataclass(frozen=True)
class SweepPlan:
    """The schedule of one sweep (see the module docstring). Pure data: building it runs nothing.

    Token and FLOP counts cover the perturbed part only (the blocks after the cached prefix),
    summed over the whole sweep; `executed_*` includes filler rows, grid slots and draw slots.
    """

    blocks: tuple[Block, ...]
    n_inputs: int
    grid_size: int  # G
    draws: int  # K
    draws_per_step: int
    grid_per_step: int
    inputs_per_step: int
    n_draw_blocks: int
    n_grid_blocks: int
    units_per_call: int
    devices: int
    start_block: int  # first block the perturbed run computes (the prefix ends before it)
    head_only: bool  # the last block computes the classifier token only
    real_tokens: int  # Σ over inputs of (real length × G × K)
    padded_tokens: int  # Σ over executed rows of the padded length (filler included)
    flops: float  # matmul FLOPs of the executed perturbed forwards (benchmarks/flops.py formula)
    prefix_flops: float  # matmul FLOPs of the cached prefixes and the clean logits from them
    peak_activation_bytes: int  # estimated live activations of one unit (one device)
    pad_multiple: int = PAD_MULTIPLE  # length bucket rounding
    memory_budget: float = DEFAULT_MEMORY_BUDGET  # bytes the micro-batch was sized for
    model_parallel: int = 1  # devices each model replica is split over (the mesh's "model" axis)

    def __repr__(self) -> str:
        return compact_repr(
            "SweepPlan", inputs=self.n_inputs, grid=self.grid_size, draws=self.draws,
            blocks=span(sorted(b.length for b in self.blocks)),
            micro_batch=(self.grid_per_step, self.draws_per_step, self.inputs_per_step), units=self.units,
            units_per_call=self.units_per_call, devices=self.devices, start_block=self.start_block,
            head_only=self.head_only, padding=self.padded_tokens / max(self.real_tokens, 1), flops=self.flops)

    @property
    def units_per_block(self) -> int:
        return self.n_grid_blocks * self.n_draw_blocks

    @property
    def units(self) -> int:
        """Units of the whole sweep (before resumption skips finished ones)."""
        return len(self.blocks) * self.units_per_block

    @property
    def rows_per_step(self) -> int:
        """Forwards batched in one unit: grid_per_step × draws_per_step × inputs_per_step."""
        return self.grid_per_step * self.draws_per_step * self.inputs_per_step

    @property
    def forwards(self) -> int:
        """Useful perturbed forwards: n × G × K."""
        return self.n_inputs * self.grid_size * self.draws

    def summary(self) -> dict:
        """JSON-ready description (block lengths instead of rows)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "blocks"}
        out.update(block_lengths=[b.length for b in self.blocks], units=self.units,
                   filler_rows=int(sum(len(b.rows) - b.n_real for b in self.blocks)))
        return out


def bucket_length(length: Any, pad_multiple: int = PAD_MULTIPLE) -> Any:
    """The padded length an input of `length` real tokens runs at (its own length only)."""
    return np.ceil(np.maximum(length, 1) / pad_multiple).astype(int) * pad_multiple


def plan_blocks(lengths: np.ndarray | None, n: int, inputs_per_step: int,
                pad_multiple: int = PAD_MULTIPLE) -> list[Block]:
    """Input blocks: inputs grouped by padded length bucket, in input order within a bucket.

    Args:
        lengths: real token count per input [n], or None for images (one bucket of length 0).
        pad_multiple: lengths are rounded up to a multiple of this (1 = exact lengths).
    """
    if lengths is None:
        buckets = {0: np.arange(n)}
    else:
        padded = bucket_length(np.asarray(lengths), pad_multiple)
        buckets = {int(L): np.flatnonzero(padded == L) for L in np.unique(padded)}
    blocks = []
    for L, rows in sorted(buckets.items()):
        for s in range(0, len(rows), inputs_per_step):
            part = rows[s : s + inputs_per_step]
            filler = np.full(inputs_per_step - len(part), -1)
            blocks.append(Block(np.concatenate([part, filler]).astype(int), L))
    return blocks


def _tokens(c: ArchConfig, length: int) -> int:
    return max(length, (c.n_patches + 1) if not c.is_text else 1)


def _itemsize(c: ArchConfig) -> int:
    dtype = getattr(c, "dtype", None) or "float32"  # bf16 activations when the config has them
    try:
        return int(np.dtype(jax.numpy.dtype(dtype)).itemsize)
    except TypeError:
        return 4


def activation_bytes_per_row(c: ArchConfig, length: int, model_parallel: int = 1) -> int:
    """Live activations of one layer of one forward on one device (q, k, v, z, residuals, MLP,
    attention probabilities in float32, the rest in the activation dtype) at `length` tokens.

    With the parameters split over `model_parallel` devices (engine/mesh.py: q/k/v and the
    MLP's input projections split by output features), each device holds 1/model_parallel of
    q, k, v, z, the MLP's hidden activations and the attention probabilities (its heads);
    the residual stream, attention and MLP outputs and norms (4 × d_model) stay whole.
    """
    tokens = _tokens(c, length)
    mp = max(int(model_parallel), 1)
    split = (4 * c.d_model + 2 * c.d_mlp) * _itemsize(c) + 2 * c.n_heads * tokens * 4
    return tokens * (4 * c.d_model * _itemsize(c) + math.ceil(split / mp))


def device_memory_budget(device: Any = None, *, fraction: float = DEVICE_MEMORY_FRACTION,
                         default: float = DEFAULT_MEMORY_BUDGET) -> float:
    """Bytes a sweep step may hold live on `device` (default: the first local device).

    From the device's own memory statistics when it reports them (GPUs, TPUs):
    `fraction` × (bytes_limit − bytes_in_use), so parameters already placed on it count; else
    (CPU, whose `memory_stats()` is None) the fixed `default`.
    """
    device = device if device is not None else jax.local_devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without the call
        stats = None
    if not stats or not stats.get("bytes_limit"):
        return float(default)
    free = float(stats["bytes_limit"]) - float(stats.get("bytes_in_use", 0))
    return max(fraction * free, 0.0)


def default_micro_batch(model: Any, length: int, draws: int, memory_budget: float,
                        model_parallel: int = 1) -> int:
    """Largest power-of-two rows per step (up to `draws`) whose activations fit the memory
    budget (bytes per device). `model` is a `Model` or an `ArchConfig`."""
    per_row = activation_bytes_per_row(getattr(model, "config", model), length, model_parallel)
    d = 1
    while d * 2 <= draws and d * 2 * per_row <= memory_budget:
        d *= 2
    return d


def layer_flops(c: ArchConfig, L: int, q: int) -> float:
    """Matmul FLOPs of one block: K, V on L tokens, Q, O and the MLP on q tokens, attention of q
    queries over L keys."""
    d, dm = c.d_model, c.d_mlp
    return 2.0 * d * d * (2 * L + 2 * q) + 4.0 * d * dm * q + 4.0 * q * L * d


def suffix_flops(c: ArchConfig, L: int, start: int, head_only: bool) -> float:
    """One perturbed forward: blocks start..n-1 at length L (last one [CLS]-only with
    head_only) plus the pooler and classifier."""
    n = c.n_layers
    L = _tokens(c, L)
    f = sum(layer_flops(c, L, 1 if (head_only and i == n - 1) else L) for i in range(start, n))
    return f + 2.0 * c.d_model * c.d_model + 2.0 * c.d_model * (c.n_classes or 0)


def prefix_flops(c: ArchConfig, L: int, start: int) -> float:
    """Per input: blocks 0..start-1 (the cached prefix) and a full suffix for the clean logits."""
    return start * layer_flops(c, _tokens(c, L), _tokens(c, L)) + suffix_flops(c, L, start, False)


def plan_sweep(
    model: Any,
    inputs: dict[str, np.ndarray],
    grid_size: int,
    draws: int,
    sites: Sequence[str],
    *,
    draws_per_step: int | None = None,
    inputs_per_step: int = 1,
    grid_per_step: int | None = None,
    units_per_call: int | None = None,
    memory_budget: float | None = None,
    mesh: jax.sharding.Mesh | None = None,
    pad_multiple: int = PAD_MULTIPLE,
) -> SweepPlan:
    """The schedule `run_sweep` executes for these inputs and settings.

    Args:
        model: an `apex_jax.Model` (only its `config` is read).
        inputs: encoded inputs (`model.encode`); text needs "attention_mask" [n, pos].
        grid_size: G, grid points per input.
        draws: K, draws per (input, grid point).
        sites: the perturbed sites (decide the cached prefix).
        draws_per_step, inputs_per_step, grid_per_step: the fixed micro-batch (kernel shape).
            By default draws_per_step is the largest power of two <= draws that fits
            `memory_budget` bytes, and grid_per_step fills what the budget leaves (the grid is
            cut into equal parts of at most that size).
        units_per_call: units per jitted call (default: 2 per device of the sweep axis, rounded to them).
        memory_budget: bytes of live activations one unit may use on one device (default:
            `device_memory_budget` of the mesh's first local device: a share of its free memory
            on GPUs/TPUs, `DEFAULT_MEMORY_BUDGET` on CPU).
        mesh: the mesh units are sharded over (its "units" axis; default: all devices) and,
            with a "model" axis, the parameters are split over (engine/mesh.py): the
            micro-batch is then sized for each device's share of the activations.
        pad_multiple: length bucket rounding (default `PAD_MULTIPLE`; 16 = the rule of kernel
            versions 1 and 2, 1 = exact lengths).

    Raises:
        ValueError: a setting below 1.
    """
    c: ArchConfig = model.config
    if draws < 1:
        raise ValueError(f"draws must be >= 1; got {draws}.")
    if grid_size < 1:
        raise ValueError(f"the grid needs at least one point; got {grid_size}.")
    if inputs_per_step < 1:
        raise ValueError(f"inputs_per_step must be >= 1; got {inputs_per_step}.")
    if int(pad_multiple) != pad_multiple or pad_multiple < 1:
        raise ValueError(f"pad_multiple must be an integer >= 1; got {pad_multiple}.")
    if memory_budget is None:
        local = [d for d in (mesh.devices.flat if mesh is not None else jax.local_devices())
                 if d.process_index == jax.process_index()]
        memory_budget = device_memory_budget(local[0] if local else None)
    if c.is_text:
        lengths = np.asarray(inputs["attention_mask"]).sum(1)
        n = len(lengths)
    else:
        lengths, n = None, len(inputs["pixel_values"])
    blocks = plan_blocks(lengths, n, inputs_per_step, int(pad_multiple))
    longest = max(b.length for b in blocks)
    mp = model_parallel_of(mesh)
    if draws_per_step is None:
        draws_per_step = default_micro_batch(c, longest, draws, memory_budget / inputs_per_step, mp)
    if grid_per_step is None:
        most = default_micro_batch(c, longest, 1 << max(0, grid_size - 1).bit_length(),
                                   memory_budget / (inputs_per_step * draws_per_step), mp)
        grid_per_step = math.ceil(grid_size / math.ceil(grid_size / most))  # fewest filler slots
    if draws_per_step < 1 or grid_per_step < 1:
        raise ValueError("draws_per_step, grid_per_step and inputs_per_step must be >= 1.")
    n_dev = sweep_devices_of(mesh)  # units run side by side over the sweep axis only
    if units_per_call is None:
        units_per_call = 2 * n_dev
    units_per_call = max(n_dev, math.ceil(units_per_call / n_dev) * n_dev)
    n_draw_blocks = math.ceil(draws / draws_per_step)
    n_grid_blocks = math.ceil(grid_size / grid_per_step)
    start = min((site_lib.resume_block(s, c.n_layers) for s in sites), default=c.n_layers)
    head_only = c.n_classes is not None
    # executed rows per block: every unit's full kernel (filler grid/draw slots and filler
    # inputs included); filler units of a chunk's tail are skipped by the kernel
    rows_per_block = n_grid_blocks * n_draw_blocks * grid_per_step * draws_per_step * inputs_per_step
    padded = sum(rows_per_block * _tokens(c, b.length) for b in blocks)
    real = int(grid_size * draws * (lengths.sum() if lengths is not None else n * _tokens(c, 0)))
    flops = sum(rows_per_block * suffix_flops(c, b.length, start, head_only) for b in blocks)
    pre = sum(inputs_per_step * prefix_flops(c, b.length, start) for b in blocks)
    rows_per_step = grid_per_step * draws_per_step * inputs_per_step
    return SweepPlan(
        blocks=tuple(blocks), n_inputs=n, grid_size=grid_size, draws=draws,
        draws_per_step=draws_per_step, grid_per_step=grid_per_step, inputs_per_step=inputs_per_step,
        n_draw_blocks=n_draw_blocks, n_grid_blocks=n_grid_blocks, units_per_call=units_per_call,
        devices=n_dev * mp, start_block=start, head_only=head_only, real_tokens=real,
        padded_tokens=int(padded), flops=float(flops), prefix_flops=float(pre),
        peak_activation_bytes=int(rows_per_step * activation_bytes_per_row(c, longest, mp)),
        pad_multiple=int(pad_multiple), memory_budget=float(memory_budget), model_parallel=mp,
    )
