"""One prepared accelerator run: W1 (APEX noise sweep) and W2 (SYNAPSE [CLS] silencing) at real size
in bfloat16, reporting perturbed forwards/s, model FLOP utilisation, compile time and memory.

    python -m benchmarks.accelerator --out bench-results            # on a GPU / TPU (minutes)
    python -m benchmarks.accelerator --out /tmp/x --smoke           # tiny, any backend (CPU test)

Models (random weights, `apex_jax.create`, no tokenizer or data needed: inputs are random token
ids of a fixed length): a BERT-base-size encoder (12 x 768) and a GPT-2-small-size decoder
(12 x 768, `model_type: gpt2`, `num_labels=2`), in `--dtype` (bfloat16 by default).

W1: n inputs x G relative σ x K draws, noise on every block's `hook_resid_post` (the engine's
defaults: micro-batch from the device's free memory). W2: n inputs x M random 10% [CLS] masks at
the middle block's `hook_resid_post` (`apex_jax.mask_sweep`).

MFU = the plan's matmul FLOPs (`SweepPlan.flops + prefix_flops`) / steady seconds / the device's
dense bf16 peak (`PEAKS` by `device_kind`; unknown devices: a bf16 matmul peak measured in the same
run, `harness.matmul_peak`). Compile = first call − steady call. Memory = `device.memory_stats()` (peak_bytes_in_use, bytes_limit) where
the backend reports it. Writes OUT/accelerator.json (accelerator-smoke.json with --smoke).
Needs no torch (`make bench-accelerator` installs only the package).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness as h

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
    h.log(msg, "accelerator")


def device_peak(device: Any) -> tuple[float, str]:
    """(dense bf16 peak FLOP/s, source) for a device: the table, else a measured matmul peak."""
    kind = getattr(device, "device_kind", "") or ""
    for key, tflops in PEAKS:
        if key.lower() in kind.lower():
            return tflops * 1e12, f"table ({key})"
    import jax

    n = 256 if jax.default_backend() == "cpu" else 4096  # smoke runs on CPU: bf16 matmuls are slow there
    return h.matmul_peak(n, 5, dtype="bfloat16", with_torch=False)["jax_gflops_best"] * 1e9, "measured bf16 matmul"


def timed(f: Any) -> tuple[Any, float]:
    """(f(), seconds), waiting for the result's arrays."""
    with h.Timer() as t:
        r = f()
        h.block(getattr(r, "counts", r))
    return r, t.wall


def bench_model(name: str, hf: dict, a: argparse.Namespace, peak: float) -> dict:
    """W1 and W2 on one random-weight model: forwards/s, MFU, compile, memory."""
    import jax

    import apex_jax
    from apex_jax import mask_sweep, run_sweep

    model, dtype = apex_jax.create(hf, num_labels=2, dtype=a.dtype), a.dtype
    model = model.replace(jax.device_put(model.params))
    c = model.config
    rng = np.random.default_rng(0)
    ids_tok = rng.integers(1000, min(c.vocab_size, 30000), (a.n, a.length)).astype(np.int32)
    batch = {"input_ids": ids_tok, "attention_mask": np.ones_like(ids_tok)}
    if getattr(c, "arch", "") == "bert":
        batch["token_type_ids"] = np.zeros_like(ids_tok)
    ids = np.arange(a.n)
    dev = jax.devices()[0]
    out = {"model": name, "layers": c.n_layers, "d_model": c.d_model, "dtype": dtype,
           "n_inputs": a.n, "length": a.length}
    log(f"{name}: {c.n_layers} x {c.d_model} {dtype}, {a.n} inputs x {a.length} tokens")

    sites = apex_jax.parse_sites(model, "resid_post")
    perturb, scale, _, tag = h.apex_noise(model, model.params, batch, sites)
    sigmas = np.geomspace(0.01, 2.0, a.sigmas).astype(np.float32)
    grid = h.noise_grid(sigmas, scale)
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
                 "memory": h.device_memory(dev)}
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
                 "flops": fl2, "mfu": fl2 / t_w2 / peak, "memory": h.device_memory(dev)}
    log(f"  W2 {out['w2']['forwards_per_second']:.1f} fwd/s, MFU {100 * out['w2']['mfu']:.1f}%")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="bench-results")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (CPU test, seconds)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--models", default="bert-base,gpt2-small", help="comma-separated, of bert-base, gpt2-small")
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
    res: dict = {"run": h.run_record("smoke" if a.smoke else "full"),
                 "device": {"device_kind": getattr(dev, "device_kind", str(dev)), "devices": jax.device_count()},
                 "peak_flops": peak, "peak_source": src, "models": {}}
    log(f"{res['device']['device_kind']} x {jax.device_count()}: peak {peak / 1e9:.1f} GFLOP/s ({src})")
    for name in a.models.split(","):
        try:
            res["models"][name] = bench_model(name, hfs[name], a, peak)
        except Exception as e:  # noqa: BLE001 - one model failing must not lose the other's figures
            log(f"{name} failed: {e!r}")
            res["models"][name] = {"error": repr(e)}
    path = h.write_json(Path(a.out) / ("accelerator-smoke.json" if a.smoke else "accelerator.json"), res)
    print(h.describe_run(res["run"]))
    log(f"wrote {path}")
    return 0 if all("error" not in m for m in res["models"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
