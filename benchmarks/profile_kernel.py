"""A bare replica of the engine's per-unit kernel, to split a sweep's time into parts.

The engine (apex_jax/engine/sweep.py) runs, per unit, `vmap` over D draw keys of
`model.apply(params, prefix, perturb(σ, keys), head_only=...)` for one input block
(inputs_per_step inputs at one padded length) and reduces to class counts; units are grouped
into chunks by `lax.map` inside `shard_map` inside `jit`, and driven by a Python loop. This
module jits only the unit (same shapes, same perturb function, same keys) so that

    engine time - Σ units x (replica unit time)  =  engine overhead (loop, lax.map, dispatch),

and a variant that replaces the Gaussian noise by a deterministic per-draw `Add` (same shapes,
no random numbers) gives the share of time spent drawing noise.
"""

from __future__ import annotations

import statistics
import time

import numpy as np


def block_batch(batch: dict, rows: np.ndarray, length: int, inputs_per_step: int, pad_id: int) -> dict:
    """inputs_per_step rows (filler repeats the first), cropped/padded to `length`: as the engine."""
    rows = np.asarray(rows)[:inputs_per_step]
    rows = np.concatenate([rows, np.full(inputs_per_step - len(rows), rows[0])])
    out = {}
    for k, v in batch.items():
        v = np.asarray(v)[rows]
        w = v.shape[1]
        fill = pad_id if k == "input_ids" else 0
        out[k] = v[:, :length] if w >= length else np.pad(v, ((0, 0), (0, length - w)), constant_values=fill)
    return out, rows


def make_unit(model, sites, perturb, D: int, C: int, mode: str, head_only: bool):
    import jax
    import jax.numpy as jnp

    from apex_jax.engine.keys import draw_keys
    from apex_jax.interventions import Add

    kw = {"head_only": True} if head_only else {}

    def unit(params, prefix, ids, sigma):
        keys = draw_keys(0, ids, 0, jnp.arange(D))  # [D, inputs]
        if mode == "noise":
            f = lambda k, c: model.apply(params, prefix, perturb(sigma, k), **kw).logits
        else:  # same arithmetic shape, no random numbers: a distinct constant per draw
            f = lambda k, c: model.apply(params, prefix, {s: Add(c * sigma) for s in sites}, **kw).logits
        logits = jax.vmap(f)(keys, jnp.arange(D, dtype=jnp.float32) / D)
        return jax.nn.one_hot(jnp.argmax(logits, -1), C, dtype=jnp.int32).sum(0)

    return jax.jit(unit)


def profile_bucket(model, params, sites, perturb, batch, ids, rows, length: int, D: int,
                   inputs_per_step: int, head_only: bool, reps: int = 3) -> dict:
    """Times the replica unit (noise and no-noise variants, interleaved) for one length bucket."""
    import jax

    b, rows = block_batch(batch, rows, length, inputs_per_step, model.config.pad_token_id)
    prefix = jax.jit(lambda p, x: model.prefix(p, x, sites))(params, b)
    jax.block_until_ready(prefix)
    ids = np.asarray(ids)[rows]
    sigma = np.float32(0.5)
    C = model.config.n_classes
    fns, compile_s = {}, {}
    out = {"length": length, "rows_per_unit": inputs_per_step * D}
    for mode in ("noise", "add"):
        fns[mode] = make_unit(model, sites, perturb, D, C, mode, head_only)
        t = time.perf_counter()
        jax.block_until_ready(fns[mode](params, prefix, ids, sigma))
        compile_s[mode] = time.perf_counter() - t
    try:
        ca = fns["noise"].lower(params, prefix, ids, sigma).compile().cost_analysis()
        ca = ca[0] if isinstance(ca, (list, tuple)) else ca
        out["xla_flops_noise_unit"] = float(ca.get("flops", float("nan")))
        out["xla_bytes_accessed_noise_unit"] = float(ca.get("bytes accessed", float("nan")))
    except Exception as e:  # cost analysis is best effort
        out["xla_cost_analysis_error"] = repr(e)[:200]
    times = {"noise": [], "add": []}
    for _ in range(reps):
        for mode in ("noise", "add"):
            t = time.perf_counter()
            jax.block_until_ready(fns[mode](params, prefix, ids, sigma))
            times[mode].append(time.perf_counter() - t)
    out.update({
        "unit_seconds_noise": statistics.median(times["noise"]),
        "unit_seconds_no_noise": statistics.median(times["add"]),
        "unit_seconds_noise_all": [round(x, 4) for x in times["noise"]],
        "unit_seconds_no_noise_all": [round(x, 4) for x in times["add"]],
        "first_call_seconds": {k: round(v, 2) for k, v in compile_s.items()},
    })
    return out
