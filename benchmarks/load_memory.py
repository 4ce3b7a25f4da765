"""Host memory of loading a bf16 Llama checkpoint: peak RSS of `apex_jax.load` / checkpoint bytes.

    python -m benchmarks.load_memory --out bench-results                 # 1.1B, TinyLlama shape
    python -m benchmarks.load_memory --size small --out bench-results    # ~70M, seconds
    python -m benchmarks.load_memory --model-parallel 2 --out bench-results   # 2 forced CPU devices

Three processes, so each figure belongs to one phase:

1. **build**: transformers creates a random `LlamaForCausalLM` (seeded), casts it to bfloat16 and
   saves it with `save_pretrained(max_shard_size=...)` (TinyLlama shape: hidden 2048, 22 layers,
   32 heads, 4 kv heads, intermediate 5632, vocab 32000, 1 GB shards -> 2.05 GiB in 3 shards);
   it also writes the reference next-token logits of a fixed batch (torch, float32 compute on
   the bf16 weights).
2. **load** (a fresh process): imports jax and apex_jax and starts the JAX backend, then resets
   the peak (`harness.reset_peak`: VmHWM := current RSS) and records the RSS; loads the folder
   with `apex_jax.load(folder, dtype="bfloat16", model_parallel=N)`. The load's peak is
   VmHWM after the load minus the RSS before it: the memory the load itself added at its
   worst moment (not ru_maxrss: it is never reset and a forked child inherits the parent's).
   Then one jitted forward of the batch; its logits are compared with the reference.
3. this process writes OUT/load_memory[_SIZE][_mpN].json with the run record.

On CPU the parameters live in host memory, so the floor is 1.0x the checkpoint (the loaded bf16
parameters); the target is <= 1.5x.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import harness as h

SIZES = {  # HF LlamaConfig fields, and the shard size save_pretrained is given
    "tinyllama": dict(hidden_size=2048, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                      intermediate_size=5632, vocab_size=32000, shard="1GB"),
    "small": dict(hidden_size=512, num_hidden_layers=12, num_attention_heads=8, num_key_value_heads=4,
                  intermediate_size=1376, vocab_size=32000, shard="60MB"),
}
TOKENS = np.array([[1, 306, 4966, 445, 2706, 338, 263, 1243], [1, 450, 4996, 17354, 1701, 29916, 432, 17204]])
TARGET = 1.5  # peak RSS of the load / checkpoint bytes


def build(folder: Path, size: str, seed: int = 0) -> None:
    """Phase 1: a random bf16 Llama saved in shards to `folder`, and its reference logits."""
    import torch
    import transformers

    spec = dict(SIZES[size])
    shard = spec.pop("shard")
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(**spec, max_position_embeddings=2048, tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    model.save_pretrained(folder, max_shard_size=shard)
    model = model.float()  # the same (bf16-rounded) weights, float32 compute
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor(TOKENS)).logits[:, -1].numpy()
    np.save(folder / "reference_logits.npy", logits)


def checkpoint_bytes(folder: Path) -> int:
    """Bytes of the folder's safetensors files."""
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def load(folder: Path, model_parallel: int) -> dict:
    """Phase 2 (a fresh process): the load's peak RSS and one forward's logits vs the reference."""
    import jax

    import apex_jax

    jax.block_until_ready(jax.device_put(np.zeros(4)))  # the backend's own memory is not the load's
    h.reset_peak()
    before = h.rss_mb()
    t0 = time.perf_counter()
    model = apex_jax.load(str(folder), dtype="bfloat16", model_parallel=model_parallel)
    jax.block_until_ready(model.params)
    seconds = time.perf_counter() - t0
    peak = h.maxrss_mb() - before
    after = h.rss_mb() - before
    dtypes = sorted({str(x.dtype) for x in jax.tree.leaves(model.params)})
    batch = {"input_ids": TOKENS, "attention_mask": np.ones_like(TOKENS)}
    logits = np.asarray(model.jitted()(model.params, batch).logits, dtype=np.float32)
    ref = np.load(folder / "reference_logits.npy")
    ckpt = checkpoint_bytes(folder)
    return {
        "checkpoint_bytes": ckpt, "checkpoint_gib": ckpt / 2**30,
        "load_seconds": round(seconds, 2), "peak_rss_mb": round(peak, 1), "rss_after_load_mb": round(after, 1),
        "peak_over_checkpoint": peak * 2**20 / ckpt, "param_dtypes": dtypes,
        "model_parallel": model_parallel, "devices": len(jax.devices()),
        "logits_finite": bool(np.isfinite(logits).all()),
        "max_abs_diff_vs_torch": float(np.abs(logits - ref).max()), "max_abs_torch": float(np.abs(ref).max()),
        "logits": logits.tolist(),
    }


def run_phase(args: list[str], env: dict | None = None) -> str:
    """Runs one phase in a fresh `python -m benchmarks.load_memory` process; its stdout."""
    r = subprocess.run([sys.executable, "-m", "benchmarks.load_memory", *args], cwd=h.ROOT, env=env,
                       capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"phase {args[:2]} failed (exit {r.returncode}):\n{r.stderr[-4000:]}")
    return r.stdout


def measure(folder: Path, model_parallel: int = 1) -> dict:
    """Phase 2 in a fresh process (with `model_parallel` forced CPU devices when above 1)."""
    env = dict(os.environ)
    if model_parallel > 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                            f" --xla_force_host_platform_device_count={model_parallel}").strip()
        env.setdefault("JAX_PLATFORMS", "cpu")
    out = run_phase(["--phase", "load", "--folder", str(folder), "--model-parallel", str(model_parallel)], env)
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="tinyllama")
    p.add_argument("--model-parallel", type=int, default=1)
    p.add_argument("--out", default="bench-results")
    p.add_argument("--phase", choices=("build", "load"), help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.phase == "build":
        build(Path(a.folder), a.size)
        return
    if a.phase == "load":
        print(json.dumps(load(Path(a.folder), a.model_parallel)))
        return
    res = {"run": h.run_record(a.size), "size": a.size, "config": SIZES[a.size], "target": TARGET}
    with tempfile.TemporaryDirectory() as tmp:
        h.log(f"building a random {a.size} Llama in bf16")
        t0 = time.perf_counter()
        run_phase(["--phase", "build", "--folder", tmp, "--size", a.size])
        res["build_seconds"] = round(time.perf_counter() - t0, 1)
        res["shards"] = sorted(p.name for p in Path(tmp).glob("*.safetensors"))
        h.log(f"loading {checkpoint_bytes(Path(tmp)) / 2**30:.2f} GiB in {len(res['shards'])} shards")
        res["load"] = measure(Path(tmp), a.model_parallel)
    res["load"].pop("logits")
    r = res["load"]
    h.log(f"peak RSS {r['peak_rss_mb']:.0f} MB = {r['peak_over_checkpoint']:.2f}x the checkpoint "
          f"(target <= {TARGET}x); load {r['load_seconds']} s; max |logit - torch| "
          f"{r['max_abs_diff_vs_torch']:.3g} (|logit| <= {r['max_abs_torch']:.3g})")
    suffix = ("" if a.size == "tinyllama" else f"_{a.size}") + (f"_mp{a.model_parallel}" if a.model_parallel > 1 else "")
    print(h.write_json(Path(a.out) / f"load_memory{suffix}.json", res))


if __name__ == "__main__":
    main()
