"""Per-device memory of one model-parallel sweep chunk: XLA's compiled figures vs the plan's estimate.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python benchmarks/mesh_memory.py \
        [--d-model 256] [--layers 4] [--length 64] [--draws 32] [--model-parallel 1,2]

A random BERT (`apex_jax.create`; d_mlp = 4 × d_model, d_model / 64 heads), noise on every
block's hook_resid_post, one unit of `--draws` draws per device. For each model-parallel size
the sweep's chunk kernel is compiled on `sweep_mesh(N)` (the parameters split over the "model"
axis) and XLA's `memory_analysis()` gives, per device, the parameter bytes (arguments) and the
live temporaries; the plan's `peak_activation_bytes` is the engine's estimate the micro-batch is
sized by (engine/plan.py `activation_bytes_per_row`). Prints one JSON line per size.
On an accelerator drop XLA_FLAGS: every local device joins the mesh.
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--draws", type=int, default=32)
    p.add_argument("--model-parallel", default="1,2")
    a = p.parse_args()

    import jax
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import apex_jax
    from apex_jax.engine import kernels as kern
    from apex_jax.engine import plan_sweep, shard_params, sweep_mesh
    from apex_jax.engine.keys import root_key_data
    from apex_jax.interventions import Noise

    d, L, D = a.d_model, a.length, a.draws
    m = apex_jax.create(dict(model_type="bert", vocab_size=1024, hidden_size=d, num_hidden_layers=a.layers,
                             num_attention_heads=max(1, d // 64), intermediate_size=4 * d,
                             max_position_embeddings=max(128, L)), num_labels=2)
    sites = tuple(f"blocks.{i}.hook_resid_post" for i in range(a.layers))

    def perturb(sigma, keys):
        return {s: Noise(keys, sigma, relative=True) for s in sites}

    batch = {"input_ids": np.ones((1, L), np.int32), "attention_mask": np.ones((1, L), np.int32),
             "token_type_ids": np.zeros((1, L), np.int32)}
    for mp in (int(x) for x in a.model_parallel.split(",")):
        mesh = sweep_mesh(mp)
        units = mesh.shape["units"]
        params = shard_params(m.params, mesh)
        plan = plan_sweep(m, batch, 1, D, sites, draws_per_step=D, grid_per_step=1, mesh=mesh, units_per_call=units)
        prefix, _ = kern.prefix_and_clean(m.config, params, batch, sites=sites)
        per_unit = [jax.device_put(x, NamedSharding(mesh, P("units"))) for x in (
            np.ones((units, 1), np.float32), np.zeros((units, 1), np.int32), np.zeros(units, np.int32))]
        compiled = kern.run_chunk.lower(
            params, prefix, np.zeros(1, np.int64), root_key_data(0), np.int32(0), np.int32(D), *per_unit,
            config=m.config, perturb=perturb, draws_per_step=D, n_classes=2, common_noise=False,
            mesh=mesh).compile()
        ma = compiled.memory_analysis()
        print(json.dumps({
            "model_parallel": mp, "devices": mesh.devices.size, "d_model": d, "layers": a.layers, "length": L,
            "draws_per_step": D, "xla_argument_mib_per_device": round(ma.argument_size_in_bytes / 2**20, 2),
            "xla_temp_mib_per_device": round(ma.temp_size_in_bytes / 2**20, 2),
            "plan_activation_estimate_mib": round(plan.peak_activation_bytes / 2**20, 2)}))


if __name__ == "__main__":
    main()
