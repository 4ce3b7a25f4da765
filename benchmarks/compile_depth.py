"""Compile time and steady-state time of one APEX sweep kernel against depth (issue 15 §1).

    python benchmarks/compile_depth.py --out bench-results [--base DIR] [--unrolled] [--layers 6,12,24]
        [--rounds 2]

A 128-wide BERT (4 heads, MLP 512, random weights, `apex_jax.create`) at each depth; `run_apex`
on 4 random token sequences of length 32, 3 relative σ, 16 draws, noise on every block's
hook_resid_post. Per (depth, code) one fresh subprocess (no persistent compile cache):
  * compile: JAX's monitoring events (trace + lowering + backend compile) of the first
    `run_apex`, and its wall time;
  * steady state: the median wall time (and process CPU time, the steadier figure when other
    processes share the cores) of 3 further `run_apex` calls with new seeds on 16 sequences of
    the same length (the same kernel: the engine must not recompile; its trace
    counts are checked and reported).
`--base DIR` is a folder holding another `apex_jax` package (e.g. the pre-scan commit:
`git archive e070d22 apex_jax | tar -x -C DIR`); `--unrolled` adds this tree with the block stack
unrolled (`Encoder(scan=False)`), the reference the scan's steady state is held to. Each round runs
every code at every depth, the order alternating between rounds, and the table gives medians over
rounds and the ratios.
Writes OUT/compile_depth.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402

N_INPUTS, STEADY_INPUTS, LENGTH, SIGMAS, DRAWS, STEADY_CALLS = 4, 16, 32, (0.05, 0.3, 1.0), 16, 3
COMPILE_EVENTS = ("jaxpr_trace_duration", "jaxpr_to_mlir_module_duration", "backend_compile_duration")


def bert_config(layers: int) -> dict:
    return {"model_type": "bert", "hidden_size": 128, "num_hidden_layers": layers,
            "num_attention_heads": 4, "intermediate_size": 512, "vocab_size": 1000,
            "max_position_embeddings": 64, "hidden_act": "gelu"}


def worker(layers: int, unrolled: bool = False) -> dict:
    """One measurement in this process (run by the driver in a fresh subprocess)."""
    import jax.monitoring as mon
    import numpy as np

    events = collections.defaultdict(float)

    def listen(event: str, duration: float, **kw) -> None:
        name = event.rsplit("/", 1)[-1]
        if name in COMPILE_EVENTS:
            events[name] += duration

    mon.register_event_duration_secs_listener(listen)
    import apex_jax
    from apex_jax.engine import kernels

    if unrolled:  # every Model of this process builds its encoder with the block loop unrolled
        from apex_jax.models import encoder, model as model_lib

        model_lib.Encoder = lambda cfg: encoder.Encoder(cfg, scan=False)

    model = apex_jax.create(bert_config(layers), num_labels=2)
    rng = np.random.default_rng(0)
    big = {"input_ids": rng.integers(5, 1000, (STEADY_INPUTS, LENGTH)).astype(np.int32),
           "attention_mask": np.ones((STEADY_INPUTS, LENGTH), np.int32),
           "token_type_ids": np.zeros((STEADY_INPUTS, LENGTH), np.int32)}

    cpu: list[float] = []

    def call(seed: int, n: int):
        batch = {k: v[:n] for k, v in big.items()}
        t, c = time.perf_counter(), time.process_time()
        res = apex_jax.run_apex(model, model.params, batch, list(range(n)), SIGMAS, draws=DRAWS,
                                seed=seed, progress=False)
        cpu.append(time.process_time() - c)
        return time.perf_counter() - t, res

    before = dict(events)
    first, res = call(0, N_INPUTS)
    compile_s = {k: events[k] - before.get(k, 0.0) for k in COMPILE_EVENTS}
    traces = dict(kernels.TRACES)
    warm_big = call(99, STEADY_INPUTS)[0]  # compiles the 16-input helpers (RMS calibration), not the kernel
    steady = []
    cpu.clear()
    with common.ForeignLoad() as load:
        for seed in range(1, 1 + STEADY_CALLS):
            steady.append(call(seed, STEADY_INPUTS)[0])
    forwards = STEADY_INPUTS * len(SIGMAS) * DRAWS
    return {
        "layers": layers, "first_call_s": first, "compile_s": sum(compile_s.values()),
        "compile_events_s": compile_s, "steady_s": statistics.median(steady), "steady_all_s": steady,
        "steady_cpu_s": statistics.median(cpu), "steady_cpu_all_s": list(cpu), "warm_big_s": warm_big,
        "forwards_per_s": forwards / statistics.median(steady),
        "recompiled_on_new_seed": dict(kernels.TRACES) != traces, "traces": dict(kernels.TRACES),
        "foreign_load_cores": load.cores, "maxrss_mb": common.maxrss_mb(),
        "counts_sha": __import__("hashlib").sha256(np.asarray(res.sweep.counts).tobytes()).hexdigest()[:12],
    }


def run_worker(code_dir: Path, layers: int, unrolled: bool = False) -> dict:
    env = dict(os.environ, PYTHONPATH=str(code_dir), JAX_ENABLE_COMPILATION_CACHE="false")
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(layers)]
                         + (["--worker-unrolled"] if unrolled else []),
                         env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"worker {code_dir} {layers} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench-results")
    ap.add_argument("--base", default=None, help="folder with the baseline apex_jax package")
    ap.add_argument("--layers", default="6,12,24")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--unrolled", action="store_true", help="also run this tree with the block loop unrolled")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-unrolled", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.worker_unrolled)))
        return
    depths = [int(x) for x in args.layers.split(",")]
    codes = {"scan": (ROOT, False)}
    if args.unrolled:
        codes = {"unrolled": (ROOT, True), **codes}
    if args.base:
        codes = {"base": (Path(args.base).resolve(), False), **codes}
    runs: dict = {c: {d: [] for d in depths} for c in codes}
    for r in range(args.rounds):
        order = list(codes) if r % 2 == 0 else list(reversed(codes))
        for d in depths:
            for c in order:
                res = run_worker(*codes[c][:1], d, codes[c][1])
                runs[c][d].append(res)
                print(f"round {r} {c:8s} {d:3d} layers: compile {res['compile_s']:6.2f} s, first call "
                      f"{res['first_call_s']:6.2f} s, steady {res['steady_s']:.3f} s (CPU {res['steady_cpu_s']:.3f} s) "
                      f"(foreign load {res['foreign_load_cores']:.2f} cores)", file=sys.stderr, flush=True)
    med = lambda xs: statistics.median(xs)
    table = {}
    for c in codes:
        for d in depths:
            rs = runs[c][d]
            table.setdefault(c, {})[d] = {
                "compile_s": med([x["compile_s"] for x in rs]),
                "first_call_s": med([x["first_call_s"] for x in rs]),
                "steady_s": med([x["steady_s"] for x in rs]),
                "steady_cpu_s": med([x["steady_cpu_s"] for x in rs]),
                "steady_s_quietest": min(x["steady_s"] for x in rs),
                "compile_s_quietest": min(x["compile_s"] for x in rs),
                "recompiled_on_new_seed": any(x["recompiled_on_new_seed"] for x in rs)}
    summary = {}
    for c in codes:
        lo, hi = table[c][depths[0]], table[c][depths[-1]]
        summary[c] = {f"compile_ratio_{depths[-1]}_over_{depths[0]}": hi["compile_s"] / lo["compile_s"]}
    if "base" in codes:
        summary["steady_scan_over_base"] = {d: table["scan"][d]["steady_s"] / table["base"][d]["steady_s"] for d in depths}
        summary["compile_scan_over_base"] = {d: table["scan"][d]["compile_s"] / table["base"][d]["compile_s"] for d in depths}
    if "unrolled" in codes:
        summary["steady_scan_over_unrolled"] = {d: table["scan"][d]["steady_s"] / table["unrolled"][d]["steady_s"] for d in depths}
        summary["compile_scan_over_unrolled"] = {d: table["scan"][d]["compile_s"] / table["unrolled"][d]["compile_s"] for d in depths}
        summary["steady_cpu_scan_over_unrolled"] = {
            d: table["scan"][d]["steady_cpu_s"] / table["unrolled"][d]["steady_cpu_s"] for d in depths}
        # per round (same-round pairs: the machine's load drifts between rounds)
        summary["steady_scan_over_unrolled_by_round"] = {
            d: [s["steady_s"] / u["steady_s"] for s, u in zip(runs["scan"][d], runs["unrolled"][d])] for d in depths}
    report = {"workload": {"model": "bert 128 wide, 4 heads, MLP 512, random weights", "inputs": N_INPUTS,
                           "length": LENGTH, "sigmas": SIGMAS, "draws": DRAWS,
                           "sites": "every block's hook_resid_post (relative noise)", "rounds": args.rounds},
              "table": table, "summary": summary, "runs": runs}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compile_depth.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"{'code':8s} {'layers':>6s} {'compile s':>10s} {'first call s':>12s} {'steady s':>9s} {'steady CPU s':>12s}")
    for c in codes:
        for d in depths:
            t = table[c][d]
            print(f"{c:8s} {d:6d} {t['compile_s']:10.2f} {t['first_call_s']:12.2f} {t['steady_s']:9.3f} "
                  f"{t['steady_cpu_s']:12.3f}")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
