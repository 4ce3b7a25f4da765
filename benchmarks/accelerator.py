"""One prepared accelerator run: W1 (APEX noise sweep) and W2 (SYNAPSE [CLS] silencing) at real size
in bfloat16, reporting perturbed forwards/s, model FLOP utilisation, compile time and memory.

    python benchmarks/accelerator.py --out bench-results            # on a GPU / TPU (minutes)
    python benchmarks/accelerator.py --out /tmp/x --smoke           # tiny, any backend (CPU test)

Models (random weights, `apex_jax.create`, no tokenizer or data needed: inputs are random token
ids of a fixed length): a BERT-base-size encoder (12 x 768) and a GPT-2-small-size decoder
(12 x 768, `model_type: gpt2`, `num_labels=2`). bf16 is asked through `dtype="bfloat16"` when
`apex_jax.create` accepts it; otherwise the run is float32 and `dtype_note` says so.

W1: n inputs x G relative σ x K draws, noise on every block's `hook_resid_post` (the engine's
defaults: micro-batch from the device's free memory). W2: n inputs x M random 10% [CLS] masks at
the middle block's `hook_resid_post` (`synapse.silencing.mask_sweep`).

MFU = the plan's matmul FLOPs (`SweepPlan.flops + prefix_flops`) / steady seconds / the device's
dense bf16 peak (`PEAKS` by `device_kind`; unknown devices: a measured bf16 matmul peak). Compile =
first call − steady call. Memory = `device.memory_stats()` (peak_bytes_in_use, bytes_limit) where
the backend reports it. Writes OUT/accelerator.json (accelerator-smoke.json with --smoke).
"""

from __future__ import annotations

import argparse
import inspect
import json
import platform
import sys
import time
from pathlib import Path

# dense bf16 peaks (TFLOP/s) by jax `device_kind` substring, first match wins
PEAKS = [
    ("H200", 989.0), ("H100", 989.0), ("GH200", 989.0), ("A100", 312.0), ("L40S", 362.0),
    ("A10G", 70.0), ("L4", 121.0), ("V100", 125.0), ("T4", 65.0),
    ("TPU v5p", 459.0), ("TPU v5 lite", 197.0), ("TPU v5e", 197.0), ("TPU v6 lite", 918.0),
    ("TPU v6e", 918.0), ("TPU v4", 275.0), ("TPU v3", 123.0),
]

BERT = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
        "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512,
        "type_vocab_size": 2, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "pad_token_id": 0}
GPT2 = {"model_type": "gpt2", "vocab_size": 50257, "n_embd": 768, "n_layer": 12, "n_head": 12,
        "n_positions": 1024, "n_inner": None, "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5, "pad_token_id": 50256, "eos_token_id": 50256}


def log(msg: str) -> None:
    print(f"[accelerator {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def device_peak(device) -> tuple[float, str]:
    """(dense bf16 peak FLOP/s, source) for a device: the table, else a measured matmul peak."""
    kind = getattr(device, "device_kind", "") or ""
    for key, tflops in PEAKS:
        if key.lower() in kind.lower():
            return tflops * 1e12, f"table ({key})"
    return measured_peak(), "measured bf16 matmul"


def measured_peak(n: int = 4096, reps: int = 5) -> float:
    import jax
    import jax.numpy as jnp

    if jax.default_backend() == "cpu":  # smoke runs: a small product (bf16 is slow on CPU)
        n = 256
    a = jnp.ones((n, n), jnp.bfloat16)
    dot = jax.jit(jnp.dot)
    dot(a, a).block_until_ready()
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        dot(a, a).block_until_ready()
        best = max(best, 2.0 * n**3 / (time.perf_counter() - t))
    return best


def memory(device) -> dict:
    try:
        s = device.memory_stats() or {}
    except Exception:  # noqa: BLE001
        s = {}
    keep = ("bytes_in_use", "peak_bytes_in_use", "bytes_limit")
    return {k: int(s[k]) for k in keep if k in s}


def make_model(hf: dict, dtype: str):
    import apex_jax

    kw = {}
    note = None
    if "dtype" in inspect.signature(apex_jax.create).parameters:
        kw["dtype"] = dtype
    elif dtype != "float32":
        note = f"apex_jax.create has no dtype option yet: ran float32 instead of {dtype}"
    return apex_jax.create(hf, num_labels=2, **kw), kw.get("dtype", "float32"), note


def timed(f):
    import jax

    t = time.perf_counter()
    r = f()
    jax.block_until_ready(jax.tree.leaves(getattr(r, "counts", r)))
    return r, time.perf_counter() - t


def bench_model(name: str, hf: dict, a, peak: float) -> dict:
    import jax
    import numpy as np

    import apex_jax
    from apex_jax.apex import analysis as am
    from apex_jax.engine.sweep import run_sweep
    from apex_jax.synapse.silencing import mask_sweep

    model, dtype, note = make_model(hf, a.dtype)
    model = model.replace(jax.device_put(model.params))
    c = model.config
    rng = np.random.default_rng(0)
    ids_tok = rng.integers(1000, min(c.vocab_size, 30000), (a.n, a.length)).astype(np.int32)
    batch = {"input_ids": ids_tok, "attention_mask": np.ones_like(ids_tok)}
    if getattr(c, "arch", "") == "bert":
        batch["token_type_ids"] = np.zeros_like(ids_tok)
    ids = np.arange(a.n)
    dev = jax.devices()[0]
    out = {"model": name, "layers": c.n_layers, "d_model": c.d_model, "dtype": dtype, "dtype_note": note,
           "n_inputs": a.n, "length": a.length}
    log(f"{name}: {c.n_layers} x {c.d_model} {dtype}, {a.n} inputs x {a.length} tokens")

    sites = apex_jax.parse_sites(model, "resid_post")
    perturb, scale, _, tag = am._noise(model, model.params, batch, sites, True)
    sigmas = np.geomspace(0.01, 2.0, a.sigmas).astype(np.float32)
    grid = am._noise_grid(sigmas, scale)
    kw = dict(sites=sites, draws=a.draws, tag=tag, common_noise=True, progress=False)
    first, t_first = timed(lambda: run_sweep(model, model.params, batch, ids, perturb, grid, seed=0, **kw))
    steady = []
    for r in range(a.repeats):
        res, t = timed(lambda: run_sweep(model, model.params, batch, ids, perturb, grid, seed=r + 1, **kw))
        steady.append(t)
    t_w1 = sorted(steady)[len(steady) // 2]
    plan = first.plan
    fl = plan.flops + plan.prefix_flops
    out["w1"] = {"sigmas": a.sigmas, "draws": a.draws, "perturbed_forwards": first.perturbed_forwards,
                 "forwards_per_second": first.perturbed_forwards / t_w1, "seconds": t_w1,
                 "first_call_s": t_first, "compile_s_estimate": max(0.0, t_first - t_w1),
                 "compiles": first.settings["compiles"], "flops": fl, "mfu": fl / t_w1 / peak,
                 "rows_per_step": plan.rows_per_step, "memory_budget": plan.memory_budget,
                 "memory": memory(dev)}
    log(f"  W1 {out['w1']['forwards_per_second']:.1f} fwd/s, MFU {100 * out['w1']['mfu']:.1f}%, "
        f"compile ~{out['w1']['compile_s_estimate']:.1f} s, {plan.rows_per_step} rows/step")

    site = f"blocks.{c.n_layers // 2}.hook_resid_post"
    masks = np.zeros((a.masks, c.d_model), np.float32)
    for i in range(a.masks):
        masks[i, rng.choice(c.d_model, max(1, c.d_model // 10), replace=False)] = 1
    first2, t_first2 = timed(lambda: mask_sweep(model, model.params, batch, ids, site, masks, progress=False))
    steady2 = []
    for _ in range(a.repeats):
        _, t = timed(lambda: mask_sweep(model, model.params, batch, ids, site, masks, progress=False))
        steady2.append(t)
    t_w2 = sorted(steady2)[len(steady2) // 2]
    fl2 = first2.plan.flops + first2.plan.prefix_flops
    out["w2"] = {"site": site, "masks": a.masks, "perturbed_forwards": first2.perturbed_forwards,
                 "forwards_per_second": first2.perturbed_forwards / t_w2, "seconds": t_w2,
                 "first_call_s": t_first2, "compile_s_estimate": max(0.0, t_first2 - t_w2),
                 "flops": fl2, "mfu": fl2 / t_w2 / peak, "memory": memory(dev)}
    log(f"  W2 {out['w2']['forwards_per_second']:.1f} fwd/s, MFU {100 * out['w2']['mfu']:.1f}%")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="bench-results")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (CPU test, seconds)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--models", default="bert-base,gpt2-small")
    a = p.parse_args()
    import jax

    if a.smoke:
        a.n, a.length, a.sigmas, a.draws, a.masks, a.repeats = 2, 16, 2, 4, 8, 1
        hfs = {"bert-base": {**BERT, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                             "intermediate_size": 128},
               "gpt2-small": {**GPT2, "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 1024,
                              "pad_token_id": 1023, "eos_token_id": 1023}}
    else:
        a.n, a.length, a.sigmas, a.draws, a.masks, a.repeats = 16, 128, 8, 256, 378, 3
        hfs = {"bert-base": BERT, "gpt2-small": GPT2}
    dev = jax.devices()[0]
    peak, src = device_peak(dev)
    res = {"mode": "smoke" if a.smoke else "full", "command": " ".join([sys.executable, *sys.argv]),
           "env": {"python": platform.python_version(), "jax": jax.__version__, "backend": jax.default_backend(),
                   "device_kind": getattr(dev, "device_kind", str(dev)), "devices": jax.device_count()},
           "peak_flops": peak, "peak_source": src, "models": {}}
    log(f"{res['env']['device_kind']} x {jax.device_count()}: peak {peak / 1e9:.1f} GFLOP/s ({src})")
    for name in a.models.split(","):
        try:
            res["models"][name] = bench_model(name, hfs[name], a, peak)
        except Exception as e:  # noqa: BLE001 - one model failing must not lose the other's figures
            log(f"{name} failed: {e!r}")
            res["models"][name] = {"error": repr(e)}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / ("accelerator-smoke.json" if a.smoke else "accelerator.json")
    path.write_text(json.dumps(res, indent=1, default=float))
    log(f"wrote {path}")
    return 0 if all("error" not in m for m in res["models"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
