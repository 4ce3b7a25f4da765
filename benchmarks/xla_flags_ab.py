"""A/B of XLA:CPU flags on a BERT-base-size jitted forward with noise (issue 15 §5).

    python benchmarks/xla_flags_ab.py [default,vec512,onednn,xnn_graph,conc_sched,ynn_off,ynn_off_xnn,ynn_off_onednn] [rounds]

One fresh subprocess per (flag set, round) (XLA_FLAGS is read when the backend starts), the
order alternating between rounds; each times a jitted head_only `model.apply` of a 12 x 768 BERT
(random weights) on AB_ROWS (32) rows of 40 tokens with noise on every block output, AB_CALLS (4)
calls after the compiling one, and prints the median process CPU seconds (steadier than wall on a
shared machine) and the first two logits (a changed value = the flag changes float32 results).
"""
import json
import os
import statistics
import subprocess
import sys
import time
FLAGSETS = {
    "default": "",
    "vec512": "--xla_cpu_prefer_vector_width=512",
    "onednn": "--xla_cpu_use_onednn=true",
    "xnn_graph": "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
    "conc_sched": "--xla_cpu_enable_concurrency_optimized_scheduler=true",
    # jaxlib 0.10 runs f32 dots through YNNPACK fusions by default, so `onednn` alone changes
    # nothing; with YNN's dot fusion off the dots go to Eigen, XNNPACK or oneDNN
    "ynn_off": "--xla_cpu_experimental_ynn_fusion_type=",
    "ynn_off_xnn": "--xla_cpu_experimental_ynn_fusion_type= "
                   "--xla_cpu_experimental_xnn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
    "ynn_off_onednn": "--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_use_onednn=true "
                      "--xla_cpu_experimental_onednn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
}
def worker():
    import jax, jax.numpy as jnp, numpy as np
    import apex_jax
    from apex_jax.interventions import Noise
    cfg = {"model_type": "bert", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
           "intermediate_size": 3072, "vocab_size": 30522, "max_position_embeddings": 512}
    m = apex_jax.create(cfg, num_labels=2)
    R, L = int(os.environ.get("AB_ROWS", 32)), 40  # AB_ROWS=64: the engine's BERT-base unit
    rng = np.random.default_rng(0)
    b = {"input_ids": rng.integers(5, 30000, (R, L)).astype(np.int32), "attention_mask": np.ones((R, L), np.int32)}
    sites = [f"blocks.{i}.hook_resid_post" for i in range(12)]
    @jax.jit
    def f(p, k):
        return m.apply(p, b, {s: Noise(k, jnp.float32(0.1)) for s in sites}, head_only=True).logits
    k = jax.random.key(0)
    t = time.perf_counter(); out = np.asarray(f(m.params, k)); first = time.perf_counter() - t
    walls, cpus = [], []
    for i in range(int(os.environ.get("AB_CALLS", 4))):
        t, c = time.perf_counter(), time.process_time()
        f(m.params, jax.random.key(i + 1)).block_until_ready()
        walls.append(time.perf_counter() - t); cpus.append(time.process_time() - c)
    print(json.dumps({"first": first, "wall": statistics.median(walls), "cpu": statistics.median(cpus),
                      "cpus": cpus, "logits0": out[:2].tolist()}))
if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        worker(); sys.exit()
    names = sys.argv[1].split(",") if len(sys.argv) > 1 else list(FLAGSETS)
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    res = {n: [] for n in names}
    for r in range(rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            env = dict(os.environ, XLA_FLAGS=FLAGSETS[n], JAX_ENABLE_COMPILATION_CACHE="false")
            o = subprocess.run([sys.executable, __file__, "--worker"], env=env, capture_output=True, text=True)
            if o.returncode:
                print(n, "FAILED", o.stderr[-800:], flush=True); continue
            d = json.loads(o.stdout.strip().splitlines()[-1]); res[n].append(d)
            print(r, n, f"first {d['first']:.1f} wall {d['wall']:.2f} cpu {d['cpu']:.2f}", d["logits0"][0], flush=True)
    base = statistics.median([d["cpu"] for d in res["default"]]) if res.get("default") else None
    for n, ds in res.items():
        if ds: print(n, "cpu median", statistics.median([d["cpu"] for d in ds]), "ratio to default", (statistics.median([d["cpu"] for d in ds]) / base) if base else None)
