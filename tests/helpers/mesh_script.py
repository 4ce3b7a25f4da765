"""Runs one noise sweep of tiny random encoders / decoders on 1 device and on a 2 x 2 (units x
model) mesh, plus every draw's logits on 1 device and with the parameters split over the model
axis; writes them to `<out>/<arch>.npz`. Run in a subprocess with 4 forced CPU devices by
tests/test_engine_mesh.py."""

from __future__ import annotations

import argparse
import json

import numpy as np

CONFIGS = {
    "bert": dict(model_type="bert", vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=32, max_position_embeddings=32),
    "llama": dict(model_type="llama", vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=32, max_position_embeddings=32),
}
SIGMAS = np.array([0.25, 1.0, 4.0], np.float32)
DRAWS, SEED, WIDTH = 16, 3, 16


def inputs(n: int = 4) -> dict[str, np.ndarray]:
    """n random token rows of width 16 with 9..16 real tokens each: every row's length bucket
    (a multiple of 8) is the full width, so the engine runs them at exactly these arrays."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 64, (n, WIDTH)).astype(np.int32)
    mask = (np.arange(WIDTH)[None] < rng.integers(9, WIDTH + 1, n)[:, None]).astype(np.int32)
    return {"input_ids": ids * mask, "attention_mask": mask}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out", help="folder for <arch>.npz")
    p.add_argument("archs", nargs="+", choices=sorted(CONFIGS))
    a = p.parse_args()
    for arch in a.archs:
        run(arch, f"{a.out}/{arch}.npz")


def run(arch: str, out: str) -> None:

    import jax

    import apex_jax
    from apex_jax.engine import kernels as kern
    from apex_jax.engine import run_sweep
    from apex_jax.engine.keys import draw_keys, root_key_data
    from apex_jax.engine.mesh import MODEL_AXIS, param_specs, shard_params, sweep_mesh
    from apex_jax.interventions import Noise
    from apex_jax.models.model import skeleton

    assert jax.device_count() == 4, jax.devices()
    model = apex_jax.create(CONFIGS[arch], num_labels=3, seed=1)
    sites = [f"blocks.{i}.hook_resid_post" for i in range(model.config.n_layers)]

    def perturb(sigma, keys):
        return {s: Noise(keys, sigma, relative=True) for s in sites}

    batch = inputs()
    if model.config.type_vocab_size:
        batch["token_type_ids"] = np.zeros_like(batch["input_ids"])
    ids = np.arange(10, 10 + len(batch["input_ids"]))
    kw = dict(sites=sites, draws=DRAWS, seed=SEED, draws_per_step=4, progress=False)
    one = run_sweep(model, model.params, batch, ids, perturb, SIGMAS, mesh=sweep_mesh(1, jax.devices()[:1]), **kw)
    split = run_sweep(model, model.params, batch, ids, perturb, SIGMAS, model_parallel=2, **kw)

    # every draw's logits, keyed exactly as the engine keys them (one input per step)
    mesh = sweep_mesh(2)
    sharded = shard_params(model.params, mesh)
    sk = skeleton(model.config)

    root = root_key_data(SEED)

    @jax.jit
    def draw_logits(params, row, row_id):  # -> [G, K, n_classes]
        prefix = sk.prefix(params, row, sites)

        def one_point(g):  # keys [K, 1] -> logits [K, n_classes]
            keys = draw_keys(jax.random.wrap_key_data(root), row_id, g, np.arange(DRAWS))
            sigma = jax.numpy.asarray(SIGMAS)[g]
            return jax.vmap(lambda k: sk.apply(params, prefix, perturb(sigma, k), head_only=True).logits[0])(keys)

        return jax.vmap(one_point)(np.arange(len(SIGMAS)))

    logits = {}
    for name, params in (("one", jax.device_put(model.params, jax.devices()[0])), ("split", sharded)):
        logits[name] = np.stack([np.asarray(draw_logits(params, {k: v[i : i + 1] for k, v in batch.items()},
                                                        ids[i : i + 1])) for i in range(len(ids))])
    clean = {name: np.concatenate([np.asarray(kern.prefix_and_clean(  # one row: the engine's compile
        model.config, params, {k: v[i : i + 1] for k, v in batch.items()}, sites=tuple(sites))[1])
        for i in range(len(ids))]) for name, params in (("one", model.params), ("split", sharded))}

    # what each device holds of the leaves the model axis splits
    specs = param_specs(model.params, 2)
    split_leaves, held = [], np.zeros(4, np.int64)
    total = 0
    for (path, leaf), spec in zip(jax.tree_util.tree_leaves_with_path(sharded), jax.tree.leaves(
            specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))):
        if MODEL_AXIS not in tuple(spec):
            continue
        split_leaves.append(jax.tree_util.keystr(path))
        total += leaf.nbytes
        for shard in leaf.addressable_shards:
            held[shard.device.id] += shard.data.nbytes
    np.savez(out, one=one.counts, split=split.counts,
             clean_one=one.clean, clean_split=split.clean, logits_one=logits["one"], logits_split=logits["split"],
             clean_logits_one=clean["one"], clean_logits_split=clean["split"], held=held, total=total,
             split_leaves=np.array(split_leaves), plan=json.dumps(split.plan.summary()),
             devices=split.settings["devices"])


if __name__ == "__main__":
    main()
