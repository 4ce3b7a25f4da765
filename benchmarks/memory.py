"""Peak memory of one APEX sweep in a fresh process (one process per K).

    python benchmarks/memory.py --model DIR --draws K [--n 8] [--n-sigmas 1] [--bucket 16]

Prints one JSON line. Peaks are VmHWM (see common.maxrss_mb for why not ru_maxrss in a
subprocess). The peak of loading (model, tokenizer, imports) is reported apart: the
process's peak-RSS counter is reset (`/proc/self/clear_refs` = 5, which resets VmHWM) just
before `run_apex`, so `peak_sweep_mb` is the peak resident memory during the sweep (compilation
included) and `peak_sweep_mb - rss_before_sweep_mb` what the sweep added.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--draws", type=int, required=True)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--n-sigmas", type=int, default=1)
    p.add_argument("--bucket", type=int, default=16, help="take sentences of this padded length")
    a = p.parse_args()

    import numpy as np

    from apex_jax.engine import plan as sw
    from apex_jax import run_apex

    model, ds, batch = common.load_w1(a.model, 64)
    rows = np.flatnonzero(common.padded_lengths(batch, sw.PAD_MULTIPLE) == a.bucket)[: a.n]
    if len(rows) < a.n:
        sys.exit(f"only {len(rows)} test sentences of padded length {a.bucket}")
    b = common.subset(batch, rows)
    sigmas = np.logspace(-1, 0, a.n_sigmas) if a.n_sigmas > 1 else np.array([0.5])
    load_peak = common.maxrss_mb()  # peak of start-up and loading (tokenizer, safetensors, ...)
    common.reset_peak()  # from here ru_maxrss is the peak of the sweep phase alone
    before_rss, before_max = common.rss_mb(), common.maxrss_mb()
    t = time.perf_counter()
    r = run_apex(model, model.params, b, ds.ids[rows], sigmas, draws=a.draws, progress=False)
    seconds = time.perf_counter() - t
    print(json.dumps({
        "draws": a.draws, "n_inputs": int(len(rows)), "n_sigmas": int(len(sigmas)), "bucket": a.bucket,
        "peak_loading_mb": round(load_peak, 1), "rss_before_sweep_mb": round(before_rss, 1),
        "maxrss_after_reset_mb": round(before_max, 1),
        "peak_sweep_mb": round(common.maxrss_mb(), 1), "rss_after_mb": round(common.rss_mb(), 1),
        "ru_maxrss_mb": round(common.ru_maxrss_mb(), 1),
        "draws_per_step": r.sweep.settings.get("draws_per_step"),
        "inputs_per_step": r.sweep.settings.get("inputs_per_step"),
        "perturbed_forwards": r.sweep.perturbed_forwards, "seconds": round(seconds, 2),
    }))


if __name__ == "__main__":
    main()
