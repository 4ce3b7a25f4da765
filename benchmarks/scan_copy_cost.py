"""Cost of stacking per-layer parameters inside the jitted function, at BERT-base size.

    python benchmarks/scan_copy_cost.py [--out DIR] [--rounds 5]

A 12 x 768 BERT (random weights), 16 sequences of length 32, noise on every block's
hook_resid_post, head_only, 4 noise draws vmapped: the jitted `apply` with the block stack as a
scan (parameters stacked in the function, ~340 MB copied per call) vs unrolled, alternating,
medians. Also the same call inside a `lax.map` over 4 units (as the engine runs it), where XLA may
hoist the stacking out of the loop. Writes OUT/scan_copy_cost.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-results")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    import jax
    import jax.numpy as jnp
    import numpy as np

    import apex_jax
    from apex_jax.interventions import Noise
    from apex_jax.models.encoder import Encoder

    cfg = {"model_type": "bert", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
           "intermediate_size": 3072, "vocab_size": 30522, "max_position_embeddings": 512}
    m = apex_jax.create(cfg, num_labels=2)
    rng = np.random.default_rng(0)
    b = {"input_ids": rng.integers(5, 30000, (16, 32)).astype(np.int32), "attention_mask": np.ones((16, 32), np.int32)}
    sites = [f"blocks.{i}.hook_resid_post" for i in range(12)]

    def make(scan, units):
        mod = Encoder(m.config, scan=scan)

        def fwd(params, k):
            hooks = m._hooks({s: Noise(k, jnp.float32(0.1)) for s in sites}, (), 0)
            return mod.apply({"params": params}, m._check_inputs(b), hooks, head_only=True)[2]

        def f(params, keys):  # keys [units, draws]
            return jax.lax.map(lambda ks: jax.vmap(lambda k: fwd(params, k))(ks), keys)

        return jax.jit(f), jax.random.split(jax.random.key(0), units * 4).reshape(units, 4)

    res = {}
    for units in (1, 4):
        fns = {s: make(s, units) for s in (True, False)}
        for s, (f, k) in fns.items():
            f(m.params, k).block_until_ready()
        times = {True: [], False: []}
        with common.ForeignLoad() as load:
            for r in range(args.rounds):
                for s in ((True, False) if r % 2 == 0 else (False, True)):
                    f, k = fns[s]
                    t = time.perf_counter()
                    f(m.params, k).block_until_ready()
                    times[s].append(time.perf_counter() - t)
        res[f"units_{units}"] = {"scan_s": statistics.median(times[True]), "unrolled_s": statistics.median(times[False]),
                                 "scan_over_unrolled": statistics.median(times[True]) / statistics.median(times[False]),
                                 "all": {"scan": times[True], "unrolled": times[False]}, "foreign_load_cores": load.cores}
        print(units, json.dumps(res[f"units_{units}"]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scan_copy_cost.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
