"""Steady-state cost of the scanned block stack against the unrolled loop, in one process.

    python benchmarks/scan_copy_cost.py [--out DIR] [--rounds 5] [--width 768] [--layers 12]
        [--units 1,4]

A BERT of `--layers` x `--width` (heads of 64, MLP 4 x width, random weights), 16 sequences of
length 32, noise on every block's hook_resid_post, head_only, 4 noise draws vmapped, the call
inside a `lax.map` over `--units` units (as the engine's chunk kernel runs it). Three forms of one
jitted function, timed alternately in this process (so all see the same foreign load), medians:
  * unrolled: `Encoder(scan=False)`;
  * scan: the block stack as a `lax.scan`, parameters stacked inside the traced function (the
    engine before `blocks.stack_blocks`: the copy repeats in every unit of the loop);
  * scan_stacked: parameters stacked once outside the jitted call (`stack_blocks`, as
    `run_sweep` does), the scan slicing its layers from that stack.
Writes OUT/scan_copy_cost.json.
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

FORMS = ("unrolled", "scan", "scan_stacked")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench-results")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--units", default="1,4", help="units of the lax.map, comma-separated")
    args = ap.parse_args()
    import jax
    import jax.numpy as jnp
    import numpy as np

    import apex_jax
    from apex_jax.interventions import Noise
    from apex_jax.models.common import stack_blocks
    from apex_jax.models.encoder import Encoder

    w, n = args.width, args.layers
    cfg = {"model_type": "bert", "hidden_size": w, "num_hidden_layers": n, "num_attention_heads": max(1, w // 64),
           "intermediate_size": 4 * w, "vocab_size": 30522, "max_position_embeddings": 512}
    m = apex_jax.create(cfg, num_labels=2)
    rng = np.random.default_rng(0)
    b = {"input_ids": rng.integers(5, 30000, (16, 32)).astype(np.int32), "attention_mask": np.ones((16, 32), np.int32)}
    sites = [f"blocks.{i}.hook_resid_post" for i in range(n)]
    params = {"unrolled": m.params, "scan": m.params, "scan_stacked": stack_blocks(m.params, n)}

    def make(form, units):
        mod = Encoder(m.config, scan=form != "unrolled")

        def fwd(params, k):
            hooks = m._hooks({s: Noise(k, jnp.float32(0.1)) for s in sites}, (), 0)
            return mod.apply({"params": params}, m._check_inputs(b), hooks, head_only=True)[2]

        def f(params, keys):  # keys [units, draws]
            return jax.lax.map(lambda ks: jax.vmap(lambda k: fwd(params, k))(ks), keys)

        return jax.jit(f), jax.random.split(jax.random.key(0), units * 4).reshape(units, 4)

    res = {"width": w, "layers": n}
    for units in [int(u) for u in args.units.split(",")]:
        fns = {s: make(s, units) for s in FORMS}
        outs = {}
        for s, (f, k) in fns.items():
            outs[s] = np.asarray(f(params[s], k))
        times = {s: [] for s in FORMS}
        cpu = {s: [] for s in FORMS}  # process CPU seconds: steadier than wall under foreign load
        with common.ForeignLoad() as load:
            for r in range(args.rounds):
                for s in (FORMS if r % 2 == 0 else FORMS[::-1]):
                    f, k = fns[s]
                    t, c = time.perf_counter(), time.process_time()
                    f(params[s], k).block_until_ready()
                    times[s].append(time.perf_counter() - t)
                    cpu[s].append(time.process_time() - c)
        med = {s: statistics.median(times[s]) for s in FORMS}
        mcpu = {s: statistics.median(cpu[s]) for s in FORMS}
        res[f"units_{units}"] = {
            **{f"{s}_s": med[s] for s in FORMS},
            "scan_over_unrolled": med["scan"] / med["unrolled"],
            "scan_stacked_over_unrolled": med["scan_stacked"] / med["unrolled"],
            # per round (adjacent calls see the same load)
            "scan_stacked_over_unrolled_by_round": [a / u for a, u in zip(times["scan_stacked"], times["unrolled"])],
            "scan_over_unrolled_by_round": [a / u for a, u in zip(times["scan"], times["unrolled"])],
            **{f"{s}_cpu_s": mcpu[s] for s in FORMS},
            "cpu_scan_over_unrolled": mcpu["scan"] / mcpu["unrolled"],
            "cpu_scan_stacked_over_unrolled": mcpu["scan_stacked"] / mcpu["unrolled"],
            "stacked_bitwise_equal_scan": bool(np.array_equal(outs["scan_stacked"], outs["scan"])),
            "max_abs_scan_minus_unrolled": float(np.abs(outs["scan"] - outs["unrolled"]).max()),
            "all": times, "all_cpu": cpu, "foreign_load_cores": load.cores}
        print(units, json.dumps({k: v for k, v in res[f"units_{units}"].items() if not k.startswith(("all", "scan_", "scan_over"))}), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"scan_copy_cost-{w}x{n}.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
