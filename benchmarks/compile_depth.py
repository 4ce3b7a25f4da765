"""Compile time and steady-state time of one APEX sweep kernel against model depth.

    python -m benchmarks.compile_depth --out bench-results [--layers 6,12,24] [--rounds 2]
    python -m benchmarks.compile_depth --out /tmp/x --quick          # 1 and 2 layers, 1 round

A 128-wide BERT (4 heads, MLP 512, random weights, `apex_jax.create`) at each depth; `run_apex`
on 4 random token sequences of length 32, 3 relative σ, 16 draws, noise on every block's
hook_resid_post. Per (depth, round) one fresh subprocess with JAX's persistent compilation cache
off, so every figure is a cold compile:
  * compile: JAX's monitoring events (trace + lowering + backend compile) of the first
    `run_apex`, and its wall time;
  * steady state: the median wall and process CPU seconds (the steadier figure when other
    processes share the cores) of 3 further `run_apex` calls with new seeds on 16 sequences of
    the same length. The kernel must not recompile for a new seed: backend compiles during these
    calls are reported (`recompiled_on_new_seed`).
Consecutive blocks run as one `lax.scan`, so compile time should stay nearly flat in depth
(RESULTS.md: 1.13x from 6 to 24 layers) while the steady state grows linearly.
Writes OUT/compile_depth.json (compile_depth-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks import harness as h

N_INPUTS, STEADY_INPUTS, LENGTH, SIGMAS, DRAWS, STEADY_CALLS = 4, 16, 32, (0.05, 0.3, 1.0), 16, 3


def bert_config(layers: int) -> dict:
    """The HF config of the 128-wide random BERT at `layers` depth."""
    return {"model_type": "bert", "hidden_size": 128, "num_hidden_layers": layers,
            "num_attention_heads": 4, "intermediate_size": 512, "vocab_size": 1000,
            "max_position_embeddings": 64, "hidden_act": "gelu"}


def worker(layers: int) -> dict:
    """One measurement in this process (the driver runs it in a fresh subprocess)."""
    import numpy as np

    events = h.CompileEvents()  # registered before apex_jax compiles anything
    import apex_jax

    model = apex_jax.create(bert_config(layers), num_labels=2)
    rng = np.random.default_rng(0)
    big = {"input_ids": rng.integers(5, 1000, (STEADY_INPUTS, LENGTH)).astype(np.int32),
           "attention_mask": np.ones((STEADY_INPUTS, LENGTH), np.int32),
           "token_type_ids": np.zeros((STEADY_INPUTS, LENGTH), np.int32)}

    def call(seed: int, n: int):
        batch = {k: v[:n] for k, v in big.items()}
        return apex_jax.run_apex(model, model.params, batch, list(range(n)), SIGMAS, draws=DRAWS, seed=seed,
                                 progress=False)

    mark = events.mark()
    with h.Timer() as first:
        res = call(0, N_INPUTS)
    compile_s = events.since(mark)
    call(99, STEADY_INPUTS)  # compiles the 16-input helpers (RMS calibration), not the kernel
    mark = events.mark()
    seeds = iter(range(1, 100))
    with h.ForeignLoad() as load:
        steady = h.time_call(lambda: call(next(seeds), STEADY_INPUTS), warmup=0, repeats=STEADY_CALLS)
    forwards = STEADY_INPUTS * len(SIGMAS) * DRAWS
    return {
        "layers": layers, "first_call_s": first.wall, "compile_s": compile_s["seconds"],
        "compile_events_s": {k: compile_s[k] for k in h.CompileEvents.NAMES},
        "steady_s": steady.median_s, "steady_all_s": steady.wall_s,
        "steady_cpu_s": steady.median_cpu_s, "steady_cpu_all_s": steady.cpu_s,
        "forwards_per_s": forwards / steady.median_s,
        "recompiled_on_new_seed": events.since(mark)["backend_compile_duration"] > 0.05,
        "foreign_load_cores": load.cores, "maxrss_mb": h.maxrss_mb(),
        "counts_sha": hashlib.sha256(np.asarray(res.sweep.counts).tobytes()).hexdigest()[:12],
    }


def run_worker(layers: int) -> dict:
    """`worker(layers)` in a fresh process without the persistent compilation cache."""
    env = dict(os.environ, APEX_JAX_NO_COMPILE_CACHE="1", JAX_ENABLE_COMPILATION_CACHE="false")
    out = subprocess.run([sys.executable, "-m", "benchmarks.compile_depth", "--worker", str(layers)],
                         env=env, capture_output=True, text=True, check=False, cwd=h.ROOT)
    if out.returncode:
        raise RuntimeError(f"worker at {layers} layers failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench-results")
    ap.add_argument("--layers", default=None, help="comma-separated depths (default 6,12,24; 1,2 with --quick)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds over all depths (default 2; 1 with --quick)")
    ap.add_argument("--quick", action="store_true", help="smoke mode: 1 and 2 layers, 1 round")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker)))
        return 0
    depths = [int(x) for x in (args.layers or ("1,2" if args.quick else "6,12,24")).split(",")]
    rounds = args.rounds or (1 if args.quick else 2)
    res: dict = {"run": h.run_record("quick" if args.quick else "full")}
    runs: dict[int, list[dict]] = {d: [] for d in depths}
    for r in range(rounds):
        for d in (depths if r % 2 == 0 else depths[::-1]):  # order alternates: load drift hits all depths
            x = run_worker(d)
            runs[d].append(x)
            h.log(f"round {r} {d:3d} layers: compile {x['compile_s']:6.2f} s, first call {x['first_call_s']:6.2f} s, "
                  f"steady {x['steady_s']:.3f} s (CPU {x['steady_cpu_s']:.3f} s), foreign load "
                  f"{x['foreign_load_cores']:.2f} cores", "compile_depth")
    table = {d: {"compile_s": h.median([x["compile_s"] for x in rs]),
                 "first_call_s": h.median([x["first_call_s"] for x in rs]),
                 "steady_s": h.median([x["steady_s"] for x in rs]),
                 "steady_cpu_s": h.median([x["steady_cpu_s"] for x in rs]),
                 "compile_s_quietest": min(x["compile_s"] for x in rs),
                 "recompiled_on_new_seed": any(x["recompiled_on_new_seed"] for x in rs)} for d, rs in runs.items()}
    lo, hi = table[depths[0]], table[depths[-1]]
    res.update({
        "workload": {"model": "bert 128 wide, 4 heads, MLP 512, random weights", "inputs": N_INPUTS,
                     "steady_inputs": STEADY_INPUTS, "length": LENGTH, "sigmas": SIGMAS, "draws": DRAWS,
                     "sites": "every block's hook_resid_post (relative noise)", "rounds": rounds},
        "table": table,
        "summary": {f"compile_ratio_{depths[-1]}_over_{depths[0]}_layers": hi["compile_s"] / lo["compile_s"],
                    f"steady_cpu_ratio_{depths[-1]}_over_{depths[0]}_layers": hi["steady_cpu_s"] / lo["steady_cpu_s"]},
        "runs": runs,
    })
    path = h.write_json(Path(args.out) / ("compile_depth-quick.json" if args.quick else "compile_depth.json"), res)
    print(h.describe_run(res["run"]))
    print(f"{'layers':>6s} {'compile s':>10s} {'first call s':>12s} {'steady s':>9s} {'steady CPU s':>12s} recompiles")
    for d in depths:
        t = table[d]
        print(f"{d:6d} {t['compile_s']:10.2f} {t['first_call_s']:12.2f} {t['steady_s']:9.3f} {t['steady_cpu_s']:12.3f} "
              f"{t['recompiled_on_new_seed']}")
    print(json.dumps(res["summary"], indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
