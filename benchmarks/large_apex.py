"""APEX on a 1.1B decoder: load time, compile time, perturbed forwards/s and peak memory.

    python -m benchmarks.large_apex --out bench-results                  # CPU (~5 min): 2 x 16 tokens, 2 σ x 4 draws
    python -m benchmarks.large_apex --out bench-results --accelerator    # GPU/TPU: bf16, model-parallel over every device
    python -m benchmarks.large_apex --size small --out /tmp/x            # ~70M, a minute on CPU

The model is the one of `benchmarks.load_memory`: a random `LlamaForCausalLM` of TinyLlama's shape
(hidden 2048, 22 layers, 32 heads on 4 kv heads, intermediate 5632, vocab 32000; 1.1B parameters)
built by transformers, cast to bfloat16 and saved in 1 GB shards (needs torch; without torch,
`--builder apex-jax` or auto: the same shapes initialised by `apex_jax.create`, rounded to bf16 and
saved by `Model.save` as one float32 file, 2x the bytes;
`--folder DIR` reuses a folder built before). Three processes, so each figure belongs to one
phase: build, sweep (fresh), and this one, which writes the JSON.

Sweep phase: after JAX's backend has started, the peak RSS is reset (`harness.reset_peak`), then
`apex_jax.load(folder, dtype=..., model_parallel=M)`, a verbalizer over two token ids (the LM's
next-token logits of those two tokens are the 2 classes; no tokenizer needed), and
`apex_jax.run_apex` on n random-token inputs of `--length` tokens: `--sigmas` relative σ
(`median-abs` unit) x `--draws` draws, noise on every block's `hook_resid_post`. Twice: seed 0
(compiles) and seed 1 (the same kernels: the steady figure). Reported: load seconds, compile
seconds (JAX's own compile events during the first sweep) and first-call seconds, steady seconds
and perturbed forwards/s, the plan's matmul FLOPs and their share of the device's peak (an
accelerator's dense bf16 peak, `benchmarks.accelerator.device_peak`; on CPU a 2048² matmul at the
sweep's dtype measured in the same run), peak RSS above the pre-load RSS, device memory where the
backend reports it, and the CPU time other processes took meanwhile (`harness.ForeignLoad`).

`--accelerator` = bfloat16, model-parallel over all devices (`--model-parallel 0`), n 16 x 128
tokens, 4 σ x 64 draws. On CPU the default is float32 on one device: in bfloat16 the CPU sweep ran
at half the speed with the same peak RSS (benchmarks/RESULTS.md). Not a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import harness as h
from benchmarks.load_memory import SIZES, checkpoint_bytes

LABEL_TOKENS = (306, 450)  # any two ids: the verbalizer's classes


def log(msg: str) -> None:
    h.log(msg, "large_apex")


def sweep_phase(folder: Path, a: argparse.Namespace) -> dict:
    """Phase 2 (a fresh process): load, then the APEX sweep twice; every figure of the run."""
    import jax

    import apex_jax
    from apex_jax.engine.mesh import sweep_mesh
    from benchmarks.accelerator import device_peak

    dev = jax.devices()[0]
    mp = a.model_parallel or jax.device_count()
    if jax.default_backend() == "cpu":  # no table peak: this run's matmul at the sweep's dtype
        peak_flops = h.matmul_peak(2048, 3, dtype=a.dtype, with_torch=False)["jax_gflops_best"] * 1e9
        peak_src = f"measured {a.dtype} 2048^2 matmul"
    else:
        peak_flops, peak_src = device_peak(dev)
    jax.block_until_ready(jax.device_put(np.zeros(4)))  # the backend's own memory is not the run's
    h.reset_peak()
    before = h.rss_mb()
    with h.Timer() as t_load:
        lm = apex_jax.load(str(folder), dtype=a.dtype, model_parallel=mp)
        jax.block_until_ready(lm.params)
    clf = apex_jax.verbalizer(lm, list(LABEL_TOKENS))
    c = clf.config
    rng = np.random.default_rng(0)
    tokens = rng.integers(1000, c.vocab_size, (a.n, a.length)).astype(np.int32)
    batch = {"input_ids": tokens, "attention_mask": np.ones_like(tokens)}
    ids = np.arange(a.n)
    sigmas = np.geomspace(0.05, 2.0, a.sigmas).astype(np.float32)
    sites = apex_jax.parse_sites(clf, "resid_post")
    mesh = sweep_mesh(mp)
    events = h.CompileEvents()

    def sweep(seed: int):
        res = apex_jax.run_apex(clf, clf.params, batch, ids, sigmas, sites=sites, draws=a.draws, seed=seed,
                                noise_unit="median-abs", progress=False, mesh=mesh)
        h.block(res.sweep.counts)
        return res

    mark = events.mark()
    with h.ForeignLoad() as f1, h.Timer() as t1:
        first = sweep(0)
    compile_info = events.since(mark)
    mark = events.mark()
    with h.ForeignLoad() as f2, h.Timer() as t2:
        steady = sweep(1)
    recompiled = events.since(mark)["seconds"]
    plan = steady.sweep.plan
    flops = plan.flops + plan.prefix_flops
    fwd = steady.sweep.perturbed_forwards
    return {
        "model_parallel": mp, "devices": jax.device_count(), "device_kind": getattr(dev, "device_kind", str(dev)),
        "dtype": a.dtype, "n_inputs": a.n, "length": a.length, "sigmas": sigmas.tolist(), "draws": a.draws,
        "sites": len(sites), "noise_unit": "median-abs", "layers": c.n_layers, "d_model": c.d_model,
        "parameters": int(sum(x.size for x in jax.tree.leaves(lm.params))),
        "checkpoint_bytes": checkpoint_bytes(folder),
        "load_seconds": round(t_load.wall, 2),
        "first_sweep_seconds": round(t1.wall, 2), "compile_seconds": round(compile_info["seconds"], 2),
        "compile": compile_info,
        "steady_sweep_seconds": round(t2.wall, 3), "steady_cpu_seconds": round(t2.cpu, 2),
        "recompile_seconds_second_sweep": round(recompiled, 3),
        "perturbed_forwards": fwd, "forwards_per_second": fwd / t2.wall,
        "tokens_per_second": fwd * a.length / t2.wall,
        "flops": flops, "peak_flops": peak_flops, "peak_source": peak_src, "mfu": flops / t2.wall / peak_flops,
        "rows_per_step": plan.rows_per_step, "memory_budget": plan.memory_budget,
        "peak_rss_mb": round(h.maxrss_mb() - before, 1), "rss_end_mb": round(h.rss_mb() - before, 1),
        "device_memory": h.device_memory(dev),
        "foreign_cores_first": round(f1.cores, 2), "foreign_cores_steady": round(f2.cores, 2),
        "mean_consistency": np.asarray(steady.consistency).mean(0).tolist(),
        "first_sweep_forwards": first.sweep.perturbed_forwards,
    }


def build_without_torch(folder: Path, size: str) -> None:
    """The same architecture with apex-jax's own random initialisation, rounded to bfloat16 and
    saved by `Model.save` (one safetensors file, float32 as `save` writes): for machines without
    torch."""
    import apex_jax

    spec = {k: v for k, v in SIZES[size].items() if k != "shard"}
    hf = {"model_type": "llama", **spec, "max_position_embeddings": 2048, "tie_word_embeddings": False,
          "hidden_act": "silu", "rms_norm_eps": 1e-6}
    apex_jax.create(hf, num_labels=None, lm_head=True, dtype="bfloat16").save(folder)


def has_torch() -> bool:
    """Whether torch is importable (the transformers build needs it)."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def run_phase(args: list[str]) -> str:
    """One phase in a fresh `python -m benchmarks.X` process; its stdout (stderr passes through)."""
    r = subprocess.run([sys.executable, "-m", *args], cwd=h.ROOT, stdout=subprocess.PIPE, text=True)
    if r.returncode:
        raise RuntimeError(f"phase {args[:3]} failed (exit {r.returncode})")
    return r.stdout


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="bench-results")
    p.add_argument("--size", choices=sorted(SIZES), default="tinyllama")
    p.add_argument("--folder", help="a folder built before (skips the build, which needs torch)")
    p.add_argument("--accelerator", action="store_true",
                   help="the accelerator sizes: n 16 x 128 tokens, 4 σ x 64 draws, all devices model-parallel")
    p.add_argument("--dtype", choices=("bfloat16", "float32"), default=None,
                   help="parameters and activations (default: float32 on CPU, bfloat16 with --accelerator)")
    p.add_argument("--model-parallel", type=int, default=None, help="devices per model replica (0: all)")
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--length", type=int, default=None)
    p.add_argument("--sigmas", type=int, default=None)
    p.add_argument("--draws", type=int, default=None)
    p.add_argument("--builder", choices=("auto", "transformers", "apex-jax"), default="auto",
                   help="who builds the random model: transformers (as benchmarks.load_memory; needs torch), "
                        "apex-jax (no torch; one file), auto: transformers when torch is installed")
    p.add_argument("--phase", choices=("sweep", "build"), help=argparse.SUPPRESS)
    p.add_argument("--args", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    sizes = dict(n=16, length=128, sigmas=4, draws=64, model_parallel=0, dtype="bfloat16") if a.accelerator else \
        dict(n=2, length=16, sigmas=2, draws=4, model_parallel=1, dtype="float32")
    for k, v in sizes.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.phase == "sweep":
        print(json.dumps(sweep_phase(Path(a.folder), a)))
        return 0
    if a.phase == "build":
        build_without_torch(Path(a.folder), a.size)
        return 0
    mode = "accelerator" if a.accelerator else "cpu"
    res = {"run": h.run_record(mode), "size": a.size, "config": SIZES[a.size]}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(a.folder) if a.folder else Path(tmp)
        if not a.folder:
            builder = a.builder if a.builder != "auto" else ("transformers" if has_torch() else "apex-jax")
            log(f"building a random {a.size} Llama in bf16 ({builder})")
            module = "benchmarks.load_memory" if builder == "transformers" else "benchmarks.large_apex"
            with h.Timer() as t:
                run_phase([module, "--phase", "build", "--folder", tmp, "--size", a.size])
            res["builder"], res["build_seconds"] = builder, round(t.wall, 1)
        log(f"{checkpoint_bytes(folder) / 2**30:.2f} GiB checkpoint; sweep phase ({a.dtype}, n {a.n} x {a.length} "
            f"tokens, {a.sigmas} σ x {a.draws} draws)")
        fwd = ["--n", a.n, "--length", a.length, "--sigmas", a.sigmas, "--draws", a.draws,
               "--dtype", a.dtype, "--model-parallel", a.model_parallel]
        out = run_phase(["benchmarks.large_apex", "--phase", "sweep", "--folder", str(folder), *map(str, fwd)])
        res["sweep"] = json.loads(out.strip().splitlines()[-1])
    s = res["sweep"]
    log(f"{s['parameters'] / 1e9:.2f}B parameters on {s['devices']} x {s['device_kind']} (model-parallel "
        f"{s['model_parallel']}): load {s['load_seconds']} s, first sweep {s['first_sweep_seconds']} s of which "
        f"compile {s['compile_seconds']} s; steady {s['perturbed_forwards']} forwards in {s['steady_sweep_seconds']} s "
        f"= {s['forwards_per_second']:.2f} fwd/s ({s['tokens_per_second']:.0f} tokens/s, MFU {100 * s['mfu']:.1f}%); "
        f"peak RSS +{s['peak_rss_mb']:.0f} MB; other processes used {s['foreign_cores_steady']} cores")
    suffix = ("" if a.size == "tinyllama" else f"_{a.size}") + ("_accelerator" if a.accelerator else "") + (
        "" if a.dtype == sizes["dtype"] else f"_{a.dtype}")
    print(h.write_json(Path(a.out) / f"large_apex{suffix}.json", res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
