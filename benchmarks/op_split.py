"""Where a real-size W1 sweep's time goes, per op: the engine's XLA:CPU thunks beside torch's ops.

    python benchmarks/op_split.py [--size bert-base] [--rounds 2] [--pad-multiple 8]

One process: the `real_size.py` W1 workload (its cached random-weight model, 4 vader-movies test
sentences, 2 σ x 32 draws, noise on every block output) run by `run_sweep` under `jax.profiler`
and by the torch best form (`torch_hooks.run_best`, 1 thread) under `torch.profiler`, rounds
alternating. The engine's thunks are grouped by the op metadata of the optimized HLO (dumped by
this process into a temporary folder: `XLA_FLAGS` gains `--xla_dump_to`, so set any other flags
to compare before running it), torch's ops by name (the profiler's self time, i.e. wall time inside the op). Thunk times are wall per
thunk; independent thunks (e.g. the q, k, v dots) may overlap, so their rows are upper bounds.
Prints seconds per W1 run and each side's process CPU and wall seconds (issue 15 §5; the table
in benchmarks/REAL_SIZE.md).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

# the engine's ops, by the substring of their HLO op_name metadata (first match wins)
DOTS = ("fc_in", "fc_out", "attn/q/", "attn/k/", "attn/v/", "attn/o/", "pooler", "classifier")


def category(op: str, op_name: str) -> str:
    """The group of one thunk (`op`: its HLO name, `op_name`: its jax op metadata)."""
    if op.startswith("ynn_fusion") or op.startswith("dot") or "dot_general" in op_name:
        for k in DOTS:
            if k in op_name:
                return "dot " + k.strip("/")
        return "dot attention (QK^T, PV)"
    if any(k in op_name for k in ("_normal", "threefry", "random")):
        return "noise (threefry + normal)"
    if "mlp" in op_name:
        return "bias + activation"
    if "dynamic_index_in_dim" in op_name or "dynamic-slice" in op:
        return "weight slices of the scan"
    if "softmax" in op_name or "attn" in op_name:
        return "attention elementwise"
    return "other (norms, residuals, copies, scores)"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="bert-base", choices=("bert-base", "minilm"))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--pad-multiple", type=int, default=8)
    p.add_argument("--cache", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "apex-jax-bench"))
    args = p.parse_args()
    dump = tempfile.mkdtemp(prefix="op_split_hlo_")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_dump_to={dump} --xla_dump_hlo_module_re=.*run_chunk.*").strip()

    import jax
    import numpy as np
    import torch

    import apex_jax
    import real_size
    import torch_hooks as th
    from apex_jax import data
    from apex_jax.apex import analysis as am
    from apex_jax.engine.sweep import run_sweep

    if args.size == "minilm":
        folder = Path(args.cache) / "minilm-cls"
        if not (folder / "config.json").exists():
            sys.exit(f"op_split: run `real_size.py --size minilm` once first (it builds {folder}).")
    else:
        folder = real_size.build_bert(Path(args.cache) / f"bert-{args.size}", args.size)
    model = apex_jax.load(str(folder))
    model = model.replace(jax.device_put(model.params))
    ds = data.get_split("vader-movies", "test", n=4)
    batch = model.encode(list(ds.inputs), max_length=64)
    ids = np.asarray(ds.ids)
    sigmas = np.array([0.05, 0.5], np.float32)
    G, K = len(sigmas), 32
    sites = apex_jax.parse_sites(model, "resid_post")
    perturb, scale, rms, tag = am._noise(model, model.params, batch, sites, True)
    grid = am._noise_grid(sigmas, scale)
    kw = dict(sites=sites, draws=K, tag=tag, common_noise=True, progress=False, pad_multiple=args.pad_multiple)
    run_sweep(model, model.params, batch, ids, perturb, grid, seed=0, **kw)  # compiles, dumps the HLO
    tmodel = th.load_hf(str(folder))
    torch.set_num_threads(1)
    hooks = th.NoiseHooks(tmodel, [rms[s] for s in sites])
    th.run_best(tmodel, hooks, batch, range(len(ids)), sigmas, K, G * K, model.config.n_classes)

    names: dict[str, str] = {}  # HLO instruction -> op_name (the kernels of all buckets)
    for fn in glob.glob(os.path.join(dump, "*run_chunk.cpu_after_optimizations.txt")):
        for line in open(fn):
            m = re.match(r"\s*%(\S+) = .*?op_name=\"([^\"]*)\"", line)
            if m:
                names.setdefault(m.group(1), m.group(2))
    skip = ("ThunkExecutor", "while", "conditional", "call")
    jax_s: collections.Counter = collections.Counter()
    torch_s: collections.Counter = collections.Counter()
    totals: collections.Counter = collections.Counter()
    trace = tempfile.mkdtemp(prefix="op_split_trace_")
    for r in range(args.rounds):
        def ours():
            shutil.rmtree(trace, ignore_errors=True)
            c, t = time.process_time(), time.perf_counter()
            with jax.profiler.trace(trace, create_perfetto_trace=True):
                run_sweep(model, model.params, batch, ids, perturb, grid, seed=r + 1, **kw)
            totals["ours wall"] += time.perf_counter() - t
            totals["ours cpu"] += time.process_time() - c
            ev = json.load(gzip.open(glob.glob(os.path.join(trace, "**", "*.trace.json.gz"), recursive=True)[0]))
            for e in ev["traceEvents"] if isinstance(ev, dict) else ev:
                a = e.get("args", {})
                if (e.get("ph") == "X" and a.get("hlo_module") == "jit_run_chunk" and "hlo_op" in a
                        and not e["name"].startswith(skip)):
                    jax_s[category(e["name"], names.get(e["name"], ""))] += e["dur"] / 1e6

        def best():
            c, t = time.process_time(), time.perf_counter()
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                th.run_best(tmodel, hooks, batch, range(len(ids)), sigmas, K, G * K, model.config.n_classes)
            totals["torch wall"] += time.perf_counter() - t
            totals["torch cpu"] += time.process_time() - c
            for a in prof.key_averages():
                torch_s[a.key] += a.self_cpu_time_total / 1e6

        for f in ((ours, best) if r % 2 == 0 else (best, ours)):
            f()
    R = args.rounds
    print(f"{args.size} W1 ({len(ids)} sentences, {G} σ x {K} draws), seconds per run, mean of {R} rounds; "
          f"load average at the end {os.getloadavg()[0]:.1f}; XLA_FLAGS={os.environ['XLA_FLAGS']!r}")
    print(f"process CPU / wall: ours {totals['ours cpu'] / R:.2f} / {totals['ours wall'] / R:.2f}, "
          f"torch {totals['torch cpu'] / R:.2f} / {totals['torch wall'] / R:.2f}")
    for side, c in (("engine thunks", jax_s), ("torch ops (profiler self time: wall inside the op)", torch_s)):
        print(f"-- {side}")
        for k, v in c.most_common():
            if v / R >= 0.02:
                print(f"   {k:45s} {v / R:7.2f}")
    shutil.rmtree(dump, ignore_errors=True)
    shutil.rmtree(trace, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
