"""Matmul peak of this machine, measured in the same run as the workload: JAX `jit(jnp.dot)`
and `torch.mm` on n x n float32, interleaved, median of repeats (GFLOP/s)."""

from __future__ import annotations

import statistics
import time


def matmul_peak(n: int = 4096, reps: int = 5) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    a_np = rng.standard_normal((n, n), dtype=np.float32)
    b_np = rng.standard_normal((n, n), dtype=np.float32)
    a, b = jnp.asarray(a_np), jnp.asarray(b_np)
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()
    ta, tb = torch.from_numpy(a_np), torch.from_numpy(b_np)
    torch.mm(ta, tb)
    flop = 2.0 * n**3
    js, ts = [], []
    for _ in range(reps):  # interleaved: JAX, torch, JAX, torch ...
        t = time.perf_counter()
        dot(a, b).block_until_ready()
        js.append(flop / (time.perf_counter() - t) / 1e9)
        t = time.perf_counter()
        torch.mm(ta, tb)
        ts.append(flop / (time.perf_counter() - t) / 1e9)
    return {"n": n, "dtype": "float32", "reps": reps,
            "jax_gflops": statistics.median(js), "torch_gflops": statistics.median(ts),
            "jax_gflops_all": [round(x, 1) for x in js], "torch_gflops_all": [round(x, 1) for x in ts]}
