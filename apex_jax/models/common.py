"""Parts every model family shares: hooks, activations, precision, config helpers, the block runner.

  * `Hooks`: applies interventions and records captures at named sites during one forward pass.
    Modules never keep state: interventions and captures travel through a `Hooks` object passed
    down the call, so a model's `apply` stays a pure function of (params, inputs, perturbations).
  * `ACT` / `ACTIVATIONS`: the activation functions HF configs name (`hidden_act` and friends).
  * `DTYPES` / `compute_dtype`: the precision settings and their JAX dtypes.
  * `hf_get` / `first`: reading HF config dicts.
  * `run_blocks` / `stack_blocks`: the block stack as scans over stacked layers, so compile time
    does not grow with depth.

The block runner. A *step* `i` of the stack is `x = hooks(boundary_site(i), x)` followed by block
`i` (which applies its own inner sites; its `hook_resid_post` is the boundary of step `i + 1`).
`run_blocks` groups consecutive steps whose hook structure is the same (the same intervention
kinds at the same local sites with leaves of the same shapes, the same captured local sites, the
same block kind: e.g. Mistral's windowed layers) and runs each group of two or more as one
`jax.lax.scan`:

  * the blocks' parameters are stacked along a leading layer axis: once, outside any loop, when
    the caller passes them stacked (`stack_blocks`: the sweep engine does so once per sweep, so
    the stacking copy is not repeated inside its per-unit `lax.map`/`cond`), else inside the
    traced function at every call;
  * the interventions' leaves are stacked the same way (APEX's noise on every block's
    `hook_resid_post` is one scan over all blocks), and the site id each `Noise` folds into its
    key is a scanned value, so the draw for (input, grid point, draw, site) is the unrolled one;
  * captures are scan outputs, unstacked into per-site arrays afterwards.

Every layer runs the same operations as the unrolled loop, in the same order, so float32 results
are bitwise those of the unrolled loop. A group of one step runs unrolled with the real `Hooks`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from apex_jax import interventions as iv_lib
from apex_jax import sites as site_lib

Array = Any

# ------------------------------------------------------------------------------ activations
ACT: dict[str, Callable[[Array], Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}
ACTIVATIONS = tuple(ACT)  # the activation names a config may give

# -------------------------------------------------------------------------------- precision
# "float32" | "bfloat16": parameters and activations in that type; softmax, norm statistics and
# the logits stay float32 either way.
DTYPES = ("float32", "bfloat16")


def compute_dtype(name: str) -> Any:
    """The JAX dtype of parameters and activations for a precision setting (one of `DTYPES`)."""
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


# --------------------------------------------------------------------------- config helpers
def hf_get(cfg: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    """The value of the first of `names` that `cfg` (an HF config dict) holds and is not None."""
    for n in names:
        if n in cfg and cfg[n] is not None:
            return cfg[n]
    return default


def first(v: Any) -> Any:
    """The first item of a list or tuple (HF configs may list several eos ids), else `v`."""
    return v[0] if isinstance(v, (list, tuple)) else v


# ------------------------------------------------------------------------------------ hooks
class Hooks:
    """Applies interventions and records captures at named sites during one forward pass.

    Args:
        perturbations: {site: intervention or tuple of interventions} (validated).
        capture: site names whose activations (after interventions) to record in `captured`.
        site_ids: site name -> its index among the model's sites (folded into noise keys).
    """

    def __init__(self, perturbations: dict, capture: frozenset, site_ids: dict[str, int]):
        self.perturbations = perturbations
        self.capture = capture
        self.site_ids = site_ids
        self.captured: dict[str, Array] = {}

    def __call__(self, site: str, x: Array) -> Array:
        iv = self.perturbations.get(site)
        if iv is not None:
            x = iv_lib.apply_intervention(
                iv, x, site, self.site_ids[site], site_lib.position_axis(site)
            )
        if site in self.capture:
            self.captured[site] = x
        return x


# ---------------------------------------------------------------------------- block runner
STACKED = "stacked_blocks"  # params key of `stack_blocks`: every block's tree, [n_layers, ...] leaves
BOUNDARY = "<boundary>"  # the local name of a step's boundary site (hook_embed / previous resid_post)
_STEP_LOCALS = (BOUNDARY,) + tuple(s for s in site_lib.BLOCK_SITES if s != "hook_resid_post")


def _site(i: int, local: str) -> str:
    return site_lib.boundary_site(i) if local == BOUNDARY else site_lib.block_site(i, local)


def _step_perturbations(hooks, i: int) -> dict:
    out = {}
    for local in _STEP_LOCALS:
        iv = hooks.perturbations.get(_site(i, local))
        if iv is not None:
            out[local] = iv
    return out


def _leaf_sig(leaf) -> tuple:
    return (tuple(np.shape(leaf)), str(jnp.result_type(leaf) if not hasattr(leaf, "dtype") else leaf.dtype))


def _signature(hooks, i: int, kind: Any) -> tuple:
    pert = _step_perturbations(hooks, i)
    leaves, treedef = jax.tree.flatten(pert)
    captured = tuple(local for local in _STEP_LOCALS if _site(i, local) in hooks.capture)
    return (kind, treedef, tuple(_leaf_sig(l) for l in leaves), captured)


class _LayerHooks:
    """The hooks of one layer inside a scan body: per-layer slices of the stacked interventions,
    the layer's site ids as scanned values, captures returned as scan outputs."""

    def __init__(self, perturbations: dict, site_ids: dict, capture: tuple, checks: dict):
        self.perturbations = perturbations
        self.site_ids = site_ids
        self.capture = capture
        self.checks = checks  # local -> [(site, iv)] with host values to check once
        self.captured: dict[str, Array] = {}

    def __call__(self, site: str, x: Array, local: str | None = None) -> Array:
        local = local or site_lib.parse(site)[1]
        iv = self.perturbations.get(local)
        if iv is not None:
            pos_axis = site_lib.position_axis(site)
            for name, host_iv in self.checks.get(local, ()):
                # the unrolled loop's checks of host values (σ, positions), naming the layer's site
                jax.eval_shape(lambda v: iv_lib.apply_intervention(host_iv, v, name, 0, pos_axis),
                               jax.ShapeDtypeStruct(x.shape, x.dtype))
            x = iv_lib.apply_intervention(iv, x, site, self.site_ids[local], pos_axis)
        if local in self.capture:
            self.captured[local] = x
        return x


def _varying(x: Array) -> Array:
    """Inside `shard_map`, `x` marked as varying over every manual mesh axis: a scan's carry must
    have one type in and out, and the layers' noise (keyed per unit) makes the output vary."""
    manual = getattr(jax.sharding.get_abstract_mesh(), "manual_axes", ())
    mat = getattr(jax.typeof(x), "manual_axis_type", None)
    varying = getattr(mat, "varying", None)
    if varying is None:  # older JAX: `aval.vma`
        varying = getattr(jax.typeof(x), "vma", frozenset())
    missing = tuple(a for a in manual if a not in varying)
    return jax.lax.pcast(x, missing, to="varying") if missing else x


def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *leaves: jnp.stack([jnp.asarray(l) for l in leaves]), *trees)


def stack_blocks(params: dict, n_layers: int) -> dict:
    """`params` plus, under `STACKED`, every block's parameters stacked along a leading layer axis.

    A scanned group then reads its layers from this one stack (a dynamic index per layer)
    instead of stacking its blocks inside the traced function, so a caller that runs the model
    many times inside one compiled loop (the sweep kernel's `lax.map` over units) pays the copy
    once. The per-layer entries stay (unrolled steps and the `head_only` last block read them);
    the stack costs one more copy of the blocks' parameters while it lives. Results are those of
    the unstacked params bit for bit (the same layer values enter the same scan body).

    Args:
        params: a model's parameter tree with entries `blocks_0` .. `blocks_{n_layers-1}`.
        n_layers: the number of blocks.

    Returns:
        A new dict (the input is not modified); `params` unchanged if it is already stacked, or
        if its blocks' trees differ in structure.
    """
    if STACKED in params:
        return params
    missing = [f"blocks_{i}" for i in range(n_layers) if f"blocks_{i}" not in params]
    if missing:
        raise ValueError(f"stack_blocks: params lack {missing[:3]} (expected blocks_0 .. blocks_{n_layers - 1}).")
    blocks = [params[f"blocks_{i}"] for i in range(n_layers)]
    if len({jax.tree.structure(b) for b in blocks}) > 1:
        # Blocks of different parameter trees (ModernBERT's first block has no attention norm)
        # cannot share one stack: returned unstacked, each scanned group stacks its own blocks.
        return params
    return {**params, STACKED: _stack(blocks)}


def run_blocks(
    x: Array,
    hooks,
    steps: Sequence[int],
    call_block: Callable[[int, Any, Array, Any], Array],
    params_of: Callable[[int], Any],
    kind_of: Callable[[int], Any] = lambda i: None,
    scan: bool = True,
    stacked: Any = None,
) -> Array:
    """Runs steps `steps` (consecutive block indices) on the residual `x`.

    Args:
        hooks: the forward pass's `Hooks` (perturbations, capture, site ids, captured).
        call_block: `(index, block params, x, hooks) -> x`, block `index` as a pure function
            (`index` names the block's sites; inside a scan it is the group's first block).
        params_of: block index -> that block's parameter tree.
        kind_of: block index -> a hashable block kind; only blocks of one kind share a scan.
        scan: False runs every step unrolled (the reference for the bitwise tests).
        stacked: every block's parameters stacked [n_layers, ...] (`stack_blocks`), or None to
            stack each scanned group's parameters here.
    """
    steps = list(steps)
    sigs = [_signature(hooks, i, kind_of(i)) for i in steps]
    a = 0
    while a < len(steps):
        b = a + 1
        while scan and b < len(steps) and sigs[b] == sigs[a]:
            b += 1
        group = steps[a:b]
        if len(group) == 1:
            i = group[0]
            x = hooks(site_lib.boundary_site(i), x)
            x = call_block(i, params_of(i), x, hooks)
        else:
            x = _scan_group(x, hooks, group, call_block, params_of, sigs[a][3], stacked)
        a = b
    return x


def _scan_group(x, hooks, group, call_block, params_of, captured: tuple, stacked=None) -> Array:
    first = group[0]
    perts = [_step_perturbations(hooks, i) for i in group]
    checks: dict[str, list] = {}
    for i, pert in zip(group, perts):
        for local, iv in pert.items():
            if any(not isinstance(l, jax.core.Tracer) for l in jax.tree.leaves(iv)):
                checks.setdefault(local, []).append((_site(i, local), iv))
    if stacked is None:
        layer_params = _stack([params_of(i) for i in group])
    else:  # the layer's index into the caller's stack; scan slices it the same way as its own xs
        layer_params = jnp.arange(first, first + len(group), dtype=jnp.int32)
    xs = (
        layer_params,
        _stack(perts),
        {local: jnp.asarray([hooks.site_ids[_site(i, local)] for i in group], jnp.int32)
         for local in perts[0]},
    )

    def body(h, layer):
        params, pert, ids = layer
        if stacked is not None:
            params = jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, params, keepdims=False), stacked)
        lh = _LayerHooks(pert, ids, captured, checks)
        h = lh(_site(first, BOUNDARY), h, local=BOUNDARY)
        h = call_block(first, params, h, lh)
        return _varying(h), lh.captured

    x, ys = jax.lax.scan(body, _varying(x), xs)
    for local in captured:
        for k, i in enumerate(group):
            hooks.captured[_site(i, local)] = ys[local][k]
    return x
