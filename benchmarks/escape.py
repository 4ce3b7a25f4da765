"""W1 time-to-result: the escape-noise table by a fine σ grid (PyTorch best form) vs apex-jax's
adaptive bisection at the same σ resolution, plus how well the adaptive table agrees with the
fine grid on real data.

Resolution: a log grid of N σ from LO to HI has ratio r = (HI/LO)^(1/(N−1)) between neighbours;
the adaptive search is run with `resolution = r − 1`, i.e. it brackets each input's escape σ as
tightly as the grid does. Both use K draws per evaluated σ; the adaptive one also runs with
sequential stopping of draws (Hoeffding, δ = 0.05 per early decision).

Timed (same run, same machine, interleaved where it matters):
* torch best form, fine grid, on `n_sub` sentences (all N σ × K draws each) -> seconds/sentence;
* ours, fine grid, on the same `n_sub` sentences (for the agreement check and our own grid rate);
* ours, adaptive (plain and with sequential stopping) on the same `n_sub` sentences and on all n.
The torch time for all n sentences is its measured per-forward rate × the fine grid's forwards
(stated in the JSON as `extrapolated`).

    python -m benchmarks.escape --out bench-results --model runs/demo/finetune/model [--quick]

Writes OUT/escape.json (OUT/escape-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks import harness as h


def log(msg: str) -> None:
    h.log(msg, "escape")


def grid_escape(sigmas: np.ndarray, kept: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Per input, the first grid σ whose consistency is below `threshold` (inf: none)."""
    below = kept < threshold
    first = np.argmax(below, axis=1)
    return np.where(below.any(1), sigmas[first], np.inf)


def agreement(grid_esc: np.ndarray, adaptive: np.ndarray, ratio: float) -> dict:
    """The adaptive escape σ should lie within one grid step of the grid's (both inf, or
    e_grid / r <= e_adaptive <= e_grid · r, with r the grid ratio)."""
    a = adaptive
    both_inf = np.isinf(grid_esc) & np.isinf(a)
    finite = np.isfinite(grid_esc) & np.isfinite(a)
    ok = both_inf.copy()
    tol = 1e-6
    ok[finite] = (a[finite] >= grid_esc[finite] / ratio * (1 - tol)) & (a[finite] <= grid_esc[finite] * ratio * (1 + tol))
    logr = np.abs(np.log(a[finite] / grid_esc[finite])) if finite.any() else np.array([0.0])
    return {"n": int(len(a)), "agree_within_one_grid_step": float(ok.mean()),
            "both_never_escape": int(both_inf.sum()), "mismatched_inf": int((np.isinf(grid_esc) != np.isinf(a)).sum()),
            "median_abs_log_ratio": float(np.median(logr)), "max_abs_log_ratio": float(logr.max())}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="bench-results")
    p.add_argument("--quick", action="store_true", help="smoke mode: tiny sizes, < 3 minutes")
    p.add_argument("--model", default=None, help=f"HF classifier folder (default {h.DEFAULT_MODEL})")
    args = p.parse_args()
    model_path = h.resolve_model(args.model)
    quick = args.quick
    lo, hi = 0.01, 4.0
    N = 16 if quick else 64
    draws = 16 if quick else 64
    stage = 4 if quick else 16
    n_all = 8 if quick else 64
    n_sub = 4 if quick else 8

    import apex_jax
    from apex_jax import apex
    from apex_jax.engine import PAD_MULTIPLE

    res: dict = {"run": h.run_record("quick" if quick else "full")}
    model, ds, batch = h.load_w1(model_path, 64)
    ids = np.asarray(ds.ids)
    lengths = np.asarray(batch["attention_mask"]).sum(1)
    if quick:
        rows = np.flatnonzero(h.padded_lengths(batch, PAD_MULTIPLE) == 16)[:n_all]
    else:
        rows = np.arange(n_all)
    batch, ids, lengths = h.subset(batch, rows), ids[rows], lengths[rows]
    # the subsample: every (n_all / n_sub)-th sentence in length order (spans the lengths)
    sub = np.sort(np.argsort(lengths, kind="stable")[:: max(1, n_all // n_sub)][:n_sub])
    sub_batch, sub_ids = h.subset(batch, sub), ids[sub]
    sigmas = np.logspace(np.log10(lo), np.log10(hi), N).astype(np.float32)
    ratio = float((hi / lo) ** (1 / (N - 1)))
    resolution = ratio - 1
    sites = apex_jax.parse_sites(model, "resid_post")
    res["workload"] = {"model": model_path, "n_all": int(n_all), "n_sub": int(n_sub), "sub_rows": sub.tolist(),
                       "lo": lo, "hi": hi, "grid_points": N, "grid_ratio": ratio, "resolution": resolution,
                       "draws": draws, "stage_draws": stage, "threshold": 0.5, "sites": sites}
    log(f"escape table: {n_all} sentences, grid {N} σ in [{lo}, {hi}] (ratio {ratio:.4f}), K={draws}")

    def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:  # (result, seconds, foreign cores)
        with h.ForeignLoad() as f:
            t = time.perf_counter()
            out = fn()
            sec = time.perf_counter() - t
        return out, sec, f.cores

    # ours: warm the kernels up (compile) on the subset with one σ
    log("ours: compile warm-up")
    _, warm, _ = timed(lambda: apex.run_apex(model, model.params, sub_batch, sub_ids, sigmas[:1], draws=draws,
                                             progress=False))
    _, warm_a, _ = timed(lambda: apex.adaptive_escape(model, model.params, sub_batch, sub_ids, lo, hi,
                                                      resolution=0.5, draws=draws, progress=False))
    _, warm_s, _ = timed(lambda: apex.adaptive_escape(model, model.params, sub_batch, sub_ids, lo, hi,
                                                      resolution=0.5, draws=draws, stage_draws=stage, progress=False))
    res["ours_warmup_seconds"] = warm + warm_a + warm_s

    log("ours: fine grid on the subset")
    grid, t_grid, f_grid = timed(lambda: apex.run_apex(model, model.params, sub_batch, sub_ids, sigmas,
                                                       draws=draws, progress=False))
    esc_grid = grid.escape_sigma()
    log(f"  {grid.sweep.perturbed_forwards} forwards in {t_grid:.1f} s")

    log("torch best form: fine grid on the subset")
    rms = [grid.site_rms[s] for s in sites]
    tmodel = h.load_hf(model_path)
    hooks = h.NoiseHooks(tmodel, rms)
    (sec_t, counts_t), t_torch, f_torch = timed(lambda: h.noise_best(
        tmodel, hooks, sub_batch, range(n_sub), sigmas, draws, min(256, N * draws), model.config.n_classes))
    clean_t = h.clean_predictions(tmodel, sub_batch, range(n_sub))
    kept_t = counts_t[np.arange(n_sub), :, clean_t] / draws
    esc_torch = grid_escape(sigmas, kept_t)
    torch_fwd = n_sub * N * draws
    log(f"  {torch_fwd} forwards in {t_torch:.1f} s ({torch_fwd / t_torch:.1f}/s)")

    adaptive = {}
    for name, kw in (("plain", {}), ("sequential", {"stage_draws": stage, "delta": 0.05})):
        for scope, (b, i) in (("subset", (sub_batch, sub_ids)), ("all", (batch, ids))):
            log(f"ours: adaptive ({name}) on the {scope}")
            a, t_a, f_a = timed(lambda: apex.adaptive_escape(model, model.params, b, i, lo, hi, resolution=resolution,
                                                             draws=draws, progress=False, **kw))
            adaptive[f"{name}_{scope}"] = {"seconds": t_a, "perturbed_forwards": a.perturbed_forwards,
                                           "rounds": a.rounds, "foreign_cores": f_a, "escape_sigma": a.escape_sigma}
            log(f"  {a.perturbed_forwards} forwards in {t_a:.1f} s")

    per_fwd_torch = t_torch / torch_fwd
    torch_all = per_fwd_torch * n_all * N * draws
    out = {
        "torch_best_fine_grid": {"subset_seconds": t_torch, "subset_forwards": torch_fwd, "foreign_cores": f_torch,
                                 "forwards_per_second": torch_fwd / t_torch,
                                 "all_seconds_extrapolated": torch_all},
        "ours_fine_grid": {"subset_seconds": t_grid, "subset_forwards": int(grid.sweep.perturbed_forwards),
                           "foreign_cores": f_grid,
                           "forwards_per_second": grid.sweep.perturbed_forwards / t_grid},
        "ours_adaptive": {k: {kk: vv for kk, vv in v.items() if kk != "escape_sigma"} for k, v in adaptive.items()},
        "time_to_result_ratio_vs_torch_best": {
            "subset_plain": t_torch / adaptive["plain_subset"]["seconds"],
            "subset_sequential": t_torch / adaptive["sequential_subset"]["seconds"],
            "all_plain": torch_all / adaptive["plain_all"]["seconds"],
            "all_sequential": torch_all / adaptive["sequential_all"]["seconds"],
        },
        "time_to_result_ratio_vs_our_fine_grid_subset": {
            "plain": t_grid / adaptive["plain_subset"]["seconds"],
            "sequential": t_grid / adaptive["sequential_subset"]["seconds"]},
        "agreement_with_our_fine_grid_subset": {
            "plain": agreement(esc_grid, adaptive["plain_subset"]["escape_sigma"], ratio),
            "sequential": agreement(esc_grid, adaptive["sequential_subset"]["escape_sigma"], ratio)},
        "agreement_torch_grid_vs_our_grid_subset": agreement(esc_grid, esc_torch, ratio),
        "target": "time-to-result >= 3x the torch best form at equal sigma resolution",
    }
    res.update(out)
    res["escape_sigma_subset"] = {"our_grid": esc_grid.tolist(), "torch_grid": esc_torch.tolist(),
                                  **{k: v["escape_sigma"].tolist() for k, v in adaptive.items() if k.endswith("subset")}}
    path = h.write_json(Path(args.out) / ("escape-quick.json" if quick else "escape.json"), res)
    print(h.describe_run(res["run"]))
    r = out["time_to_result_ratio_vs_torch_best"]
    print(f"\ntime to the escape table at resolution {resolution:.3f} (grid of {N} σ, K={draws}):")
    print(f"  torch best, fine grid: {torch_fwd / t_torch:.1f} fwd/s -> {torch_all:.0f} s for {n_all} sentences (extrapolated)")
    for k, v in adaptive.items():
        print(f"  ours adaptive {k:<18} {v['perturbed_forwards']:>7} fwd in {v['seconds']:.1f} s")
    print(f"  ratio vs torch best: subset plain {r['subset_plain']:.2f}x, sequential {r['subset_sequential']:.2f}x; "
          f"all plain {r['all_plain']:.2f}x, sequential {r['all_sequential']:.2f}x")
    for k, v in out["agreement_with_our_fine_grid_subset"].items():
        print(f"  adaptive ({k}) vs our fine grid: {v['agree_within_one_grid_step']:.3f} within one grid step")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
