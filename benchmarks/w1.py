"""W1: APEX noise sweep on a fine-tuned MiniLM classifier, apex-jax vs PyTorch forward hooks.

    python -m benchmarks.w1 --out bench-results --model runs/demo/finetune/model [--quick]

W1: the fine-tuned MiniLM classifier (`make demo` writes runs/demo/finetune/model), the first 64
test sentences of vader-movies, 16 relative σ (logspace 0.01..4, σ x each site's clean RMS as
`run_apex` does), 64 draws, Gaussian noise on every block's hook_resid_post (6 sites): 65,536
perturbed forwards.

Measured in one run (only ratios from the same run mean anything on a shared CPU):
 1. ours end to end: `run_apex(...)` on all of W1 (compile time from JAX's monitoring events);
    then a second `run_apex` call to see whether it recompiles;
 2. interleaved rounds: W1's σ grid is cut into S strided segments; each round runs the same
    segment with ours (the engine call run_apex makes, with one shared perturbation so it is
    compiled once in a warm-up), the PyTorch best form (draws x σ batched per sentence at its
    exact length, inference_mode, all cores) and a slice of the PyTorch reference form (one
    sentence x one draw per forward). Order alternates between rounds; ratios are medians over
    rounds, and the sum of our segment counts must equal run_apex's counts bit for bit;
 3. the JAX / torch float32 matmul peak;
 4. FLOPs (matmuls) per perturbed forward on the padded lengths ours uses, achieved FLOP/s;
 5. a profile: compile, per-unit kernel time of a bare replica of the engine's unit (with and
    without noise), engine overhead, padding and filler waste, orbax checkpoint cost;
 6. peak memory (VmHWM, reset after loading) of ours at several K, one subprocess each.
Writes OUT/w1.json and prints a table.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness as h

median = h.median


def log(msg: str) -> None:
    h.log(msg, "w1")


# ------------------------------------------------------------------ bare replica of the engine's unit
# The engine runs, per unit, `vmap` over D draw keys of `model.apply(params, prefix, perturb(point,
# keys), head_only=...)` for one input block (inputs_per_step inputs at one padded length) and
# reduces to class counts; units are grouped into chunks by `lax.map` inside `shard_map` inside
# `jit`, and driven by a Python loop. Jitting only the unit (same shapes, perturbation and keys)
# splits a sweep's time:  engine time - Σ units x (replica unit time) = engine overhead; a variant
# that replaces the Gaussian noise by a deterministic per-draw `Add` gives the share of drawing noise.
def _block_batch(batch: dict, rows: np.ndarray, length: int, inputs_per_step: int,
                 pad_id: int) -> tuple[dict, np.ndarray]:
    """inputs_per_step rows (filler repeats the first), cropped/padded to `length`, as the engine."""
    rows = np.asarray(rows)[:inputs_per_step]
    rows = np.concatenate([rows, np.full(inputs_per_step - len(rows), rows[0])])
    out = {}
    for k, v in batch.items():
        v = np.asarray(v)[rows]
        w = v.shape[1]
        fill = pad_id if k == "input_ids" else 0
        out[k] = v[:, :length] if w >= length else np.pad(v, ((0, 0), (0, length - w)), constant_values=fill)
    return out, rows


def _make_unit(model: Any, sites: list[str], perturb: Any, D: int, C: int, mode: str, head_only: bool):
    import jax
    import jax.numpy as jnp

    from apex_jax import Add
    from apex_jax.engine import draw_keys

    kw = {"head_only": True} if head_only else {}

    def unit(params, prefix, ids, sigma):
        keys = draw_keys(0, ids, 0, jnp.arange(D))  # [D, inputs]
        if mode == "noise":
            f = lambda k, c: model.apply(params, prefix, perturb(sigma, k), **kw).logits
        else:  # same arithmetic shape, no random numbers: a distinct constant per draw
            f = lambda k, c: model.apply(params, prefix, {s: Add(c * sigma) for s in sites}, **kw).logits
        logits = jax.vmap(f)(keys, jnp.arange(D, dtype=jnp.float32) / D)
        return jax.nn.one_hot(jnp.argmax(logits, -1), C, dtype=jnp.int32).sum(0)

    return jax.jit(unit)


def profile_bucket(model: Any, params: Any, sites: list[str], perturb: Any, batch: dict, ids: np.ndarray,
                   rows: np.ndarray, length: int, D: int, inputs_per_step: int, head_only: bool,
                   reps: int = 3) -> dict:
    """Times the replica unit (noise and no-noise variants, interleaved) for one length bucket."""
    import jax

    b, rows = _block_batch(batch, rows, length, inputs_per_step, model.config.pad_token_id)
    prefix = jax.jit(lambda p, x: model.prefix(p, x, sites))(params, b)
    jax.block_until_ready(prefix)
    ids = np.asarray(ids)[rows]
    sigma = np.float32(0.5)
    fns, first = {}, {}
    out: dict = {"length": length, "rows_per_unit": inputs_per_step * D}
    for mode in ("noise", "add"):
        fns[mode] = _make_unit(model, sites, perturb, D, model.config.n_classes, mode, head_only)
        with h.Timer() as t:
            jax.block_until_ready(fns[mode](params, prefix, ids, sigma))
        first[mode] = t.wall
    try:
        ca = fns["noise"].lower(params, prefix, ids, sigma).compile().cost_analysis()
        ca = ca[0] if isinstance(ca, (list, tuple)) else ca
        out["xla_flops_noise_unit"] = float(ca.get("flops", float("nan")))
        out["xla_bytes_accessed_noise_unit"] = float(ca.get("bytes accessed", float("nan")))
    except Exception as e:  # noqa: BLE001 - cost analysis is best effort
        out["xla_cost_analysis_error"] = repr(e)[:200]
    times: dict[str, list[float]] = {"noise": [], "add": []}
    for _ in range(reps):
        for mode in ("noise", "add"):
            with h.Timer() as t:
                jax.block_until_ready(fns[mode](params, prefix, ids, sigma))
            times[mode].append(t.wall)
    out.update({
        "unit_seconds_noise": statistics.median(times["noise"]),
        "unit_seconds_no_noise": statistics.median(times["add"]),
        "unit_seconds_noise_all": [round(x, 4) for x in times["noise"]],
        "unit_seconds_no_noise_all": [round(x, 4) for x in times["add"]],
        "first_call_seconds": {k: round(v, 2) for k, v in first.items()},
    })
    return out


# ------------------------------------------------------------------ memory (one fresh process per K)
def memory_child(a: argparse.Namespace) -> int:
    """Peak memory of one APEX sweep in this fresh process; prints one JSON line.

    The process's peak RSS (VmHWM) is reset just before `run_apex`, so `peak_sweep_mb` is the peak
    during the sweep (compilation included) and `peak_sweep_mb - rss_before_sweep_mb` what the
    sweep added; the peak of loading (model, tokenizer, imports) is reported apart.
    """
    from apex_jax import run_apex
    from apex_jax.engine import PAD_MULTIPLE

    model, ds, batch = h.load_w1(a.model, 64)
    rows = np.flatnonzero(h.padded_lengths(batch, PAD_MULTIPLE) == a.bucket)[: a.n]
    if len(rows) < a.n:
        sys.exit(f"only {len(rows)} test sentences of padded length {a.bucket}")
    b = h.subset(batch, rows)
    sigmas = np.array([0.5])
    load_peak = h.maxrss_mb()
    h.reset_peak()
    before_rss, before_max = h.rss_mb(), h.maxrss_mb()
    t = time.perf_counter()
    r = run_apex(model, model.params, b, ds.ids[rows], sigmas, draws=a.draws, progress=False)
    seconds = time.perf_counter() - t
    print(json.dumps({
        "draws": a.draws, "n_inputs": int(len(rows)), "n_sigmas": 1, "bucket": a.bucket,
        "peak_loading_mb": round(load_peak, 1), "rss_before_sweep_mb": round(before_rss, 1),
        "maxrss_after_reset_mb": round(before_max, 1),
        "peak_sweep_mb": round(h.maxrss_mb(), 1), "rss_after_mb": round(h.rss_mb(), 1),
        "draws_per_step": r.sweep.settings.get("draws_per_step"),
        "inputs_per_step": r.sweep.settings.get("inputs_per_step"),
        "perturbed_forwards": r.sweep.perturbed_forwards, "seconds": round(seconds, 2),
    }))
    return 0


def engine_work(model: Any, plan: Any, lengths: np.ndarray) -> dict:
    """What the engine executes for a sweep (read from its `SweepPlan`) vs the useful work
    (n x G x draws full forwards at each sentence's own length, as PyTorch runs them)."""
    full = plan.grid_size * plan.draws * sum(h.full_forward(model.config, int(L)) for L in lengths)
    return {
        "blocks": len(plan.blocks), "block_lengths": [b.length for b in plan.blocks],
        "filler_rows": int(sum((b.rows < 0).sum() for b in plan.blocks)),
        # filler units of a chunk's tail are skipped (lax.cond), filler grid slots of a unit are not
        "executed_units_per_block": plan.units_per_block,
        "executed_row_forwards": plan.units * plan.rows_per_step, "useful_forwards": plan.forwards,
        "executed_flops": plan.flops + plan.prefix_flops, "executed_flops_prefix": plan.prefix_flops,
        "torch_equivalent_flops": full,
        "tokens_per_draw_executed": sum(plan.inputs_per_step * b.length for b in plan.blocks),
        "tokens_per_draw_real": int(sum(lengths)),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="bench-results")
    p.add_argument("--quick", action="store_true", help="smoke mode: tiny sizes, < 2 minutes")
    p.add_argument("--model", default=None, help=f"HF classifier folder (default {h.DEFAULT_MODEL})")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds = σ segments (default 4)")
    p.add_argument("--skip-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--draws", type=int, default=64, help=argparse.SUPPRESS)  # memory child: K
    p.add_argument("--n", type=int, default=8, help=argparse.SUPPRESS)  # memory child: sentences
    p.add_argument("--bucket", type=int, default=16, help=argparse.SUPPRESS)  # memory child: padded length
    args = p.parse_args()
    model_path = h.resolve_model(args.model)
    if args.memory_child:
        args.model = model_path
        return memory_child(args)
    quick = args.quick
    S = args.rounds or (2 if quick else 4)
    draws = 16 if quick else 64
    mm_n, mm_reps = (1024, 3) if quick else (4096, 5)
    mem_ks = [16, 64] if quick else [64, 512, 4096]
    ref_per_sentence = 1 if quick else 2

    log("importing jax, torch, apex_jax")
    import torch

    from apex_jax import parse_sigmas, parse_sites, run_apex, run_sweep
    from apex_jax.engine import PAD_MULTIPLE

    events = h.CompileEvents()
    res: dict = {"run": h.run_record("quick" if quick else "full")}

    # ------------------------------------------------------------------ workload
    log(f"loading {model_path} and vader-movies test sentences")
    model, ds, batch = h.load_w1(model_path, 64)
    ids = np.asarray(ds.ids)
    if quick:  # 8 short sentences (one length bucket: one compile per kernel)
        rows = np.flatnonzero(h.padded_lengths(batch, PAD_MULTIPLE) == 16)[:8]
        batch, ids = h.subset(batch, rows), ids[rows]
        sigmas = np.array([0.05, 0.2, 0.5, 1.0], np.float32)
    else:
        sigmas = parse_sigmas(h.SIGMA_SPEC)
    n, G = len(ids), len(sigmas)
    cfg = model.config
    sites = parse_sites(model, "resid_post")
    lengths = np.asarray(batch["attention_mask"]).sum(1).astype(int)
    res["workload"] = {
        "model": model_path, "data": "vader-movies test", "n_inputs": n, "sigmas": [float(s) for s in sigmas],
        "relative_sigma": True, "draws": draws, "sites": sites, "perturbed_forwards": n * G * draws,
        "sentence_lengths": {"min": int(lengths.min()), "median": float(np.median(lengths)),
                             "max": int(lengths.max()), "mean": float(lengths.mean())},
        "max_length": h.MAX_LENGTH,
    }
    log(f"W1: {n} sentences x {G} σ x {draws} draws = {n * G * draws} perturbed forwards")
    tmodel = h.load_hf(model_path)

    # ------------------------------------------------------------------ matmul peak
    log(f"matmul peak {mm_n}² float32 (JAX and torch interleaved, {mm_reps} reps)")
    res["matmul_peak"] = h.matmul_peak(mm_n, mm_reps)
    jax_peak = res["matmul_peak"]["jax_gflops"]
    log(f"  JAX {jax_peak:.1f} GFLOP/s, torch {res['matmul_peak']['torch_gflops']:.1f} GFLOP/s")

    # ------------------------------------------------------------------ 1. ours end to end
    log("ours: run_apex on the whole workload (end to end, compile included)")
    mk = events.mark()
    t = time.perf_counter()
    with h.ForeignLoad() as fload:
        A = run_apex(model, model.params, batch, ids, sigmas, draws=draws, progress=False)
    wall = time.perf_counter() - t
    comp = events.since(mk)
    st = A.sweep.settings
    D, ips, upc = st["draws_per_step"], st["inputs_per_step"], st["units_per_call"]
    fwd = A.sweep.perturbed_forwards
    res["ours_end_to_end"] = {
        "wall_seconds": wall, "sweep_seconds": A.sweep.seconds, "perturbed_forwards": fwd,
        "compile": comp, "forwards_per_second": fwd / wall, "foreign_cores": fload.cores,
        "forwards_per_second_excluding_compile": fwd / (wall - comp["seconds"]),
        "settings": {k: st[k] for k in ("draws_per_step", "grid_per_step", "inputs_per_step", "units_per_call", "blocks", "devices")},
    }
    log(f"  {fwd} forwards in {wall:.1f} s ({fwd / wall:.1f}/s); compile {comp['seconds']:.1f} s; "
        f"excl. compile {fwd / (wall - comp['seconds']):.1f}/s; D={D} inputs/step={ips} units/call={upc}")

    # second call: same arguments but one σ (kernel shapes do not depend on the grid size)
    log("ours: a second run_apex call (1 σ): does it recompile?")
    mk = events.mark()
    t = time.perf_counter()
    A2 = run_apex(model, model.params, batch, ids, sigmas[:1], draws=draws, progress=False)
    wall2 = time.perf_counter() - t
    comp2 = events.since(mk)
    res["ours_second_call"] = {
        "sigmas": 1, "wall_seconds": wall2, "compile": comp2,
        "recompiles": comp2["backend_compile_duration"] > 0.05,
        "counts_equal_first_call": bool((A2.sweep.counts[:, 0] == A.sweep.counts[:, 0]).all()),
    }
    log(f"  recompiles: {res['ours_second_call']['recompiles']} ({comp2['seconds']:.1f} s of {wall2:.1f} s compiling)")

    # ------------------------------------------------------------------ PyTorch set-up
    rms = [A.site_rms[s] for s in sites]  # blocks.i.hook_resid_post = output of encoder.layer[i]
    hooks = h.NoiseHooks(tmodel, rms)
    clean_t = h.clean_predictions(tmodel, batch, range(n))
    res["torch_setup"] = {"torch_threads": torch.get_num_threads(), "layer_output_types": sorted(hooks.output_types),
                          "clean_prediction_agreement": float((clean_t == A.clean).mean())}
    cand = [draws] if quick else [b for b in (64, 128, 256) if b <= max(1, G // S) * draws] or [draws]
    probe_rows = [int(np.argsort(lengths)[n // 2]), int(np.argsort(lengths)[(3 * n) // 4])]
    probe = collections.defaultdict(list)
    for _ in range(1 if quick else 2):
        for B in cand:
            sig_p = sigmas[: max(1, B // draws)]
            sec, _ = h.noise_best(tmodel, hooks, batch, probe_rows, sig_p, draws, B, cfg.n_classes)
            probe[B].append(len(probe_rows) * len(sig_p) * draws / sec)
    best_B = max(cand, key=lambda B: median(probe[B]))
    res["torch_setup"]["best_form_batch_probe_forwards_per_second"] = {str(k): v for k, v in probe.items()}
    res["torch_setup"]["best_form_batch_size"] = best_B
    log(f"torch: layer outputs are {sorted(hooks.output_types)}; clean agreement "
        f"{res['torch_setup']['clean_prediction_agreement']:.3f}; best-form batch {best_B} "
        f"({ {k: round(median(v), 1) for k, v in probe.items()} } fwd/s)")

    # ------------------------------------------------------------------ 2. interleaved rounds
    perturb, scale, _, tag = h.apex_noise(model, model.params, batch, sites)
    grid_of = lambda sig: h.noise_grid(sig, scale)
    log("ours (steady state): warm-up compile of the shared kernel (1 sentence per length bucket)")
    buckets = h.padded_lengths(batch, PAD_MULTIPLE)
    warm_rows = np.array([int(np.flatnonzero(buckets == L)[0]) for L in np.unique(buckets)])
    mk = events.mark()
    t = time.perf_counter()
    run_sweep(model, model.params, {k: v[warm_rows] for k, v in batch.items()}, ids[warm_rows], perturb,
              grid_of(A.sigmas[:1]), sites=sites, draws=draws, seed=0, tag=tag, common_noise=True, progress=False)
    res["ours_warmup"] = {"wall_seconds": time.perf_counter() - t, "compile": events.since(mk)}

    seg = [np.arange(G)[k::S] for k in range(S)]
    rounds = []
    counts_ours = np.zeros_like(A.sweep.counts)
    counts_torch = np.zeros_like(A.sweep.counts)
    round_plans = []  # the engine's plan of each round's sweep (what it executed)
    for r, idx in enumerate(seg):
        rec = {"sigma_indices": idx.tolist()}

        def ours():
            mk = events.mark()
            t = time.perf_counter()
            R = run_sweep(model, model.params, batch, ids, perturb, grid_of(A.sigmas[idx]), sites=sites, draws=draws,
                          seed=0, tag=tag, common_noise=True, progress=False)
            rec["ours_seconds"] = time.perf_counter() - t
            rec["ours_forwards"] = R.perturbed_forwards
            round_plans.append(R.plan)
            rec["ours_compile_seconds"] = events.since(mk)["seconds"]
            counts_ours[:, idx] = R.counts

        def best():
            sec, c = h.noise_best(tmodel, hooks, batch, range(n), A.sigmas[idx], draws, best_B, cfg.n_classes)
            rec["best_seconds"], rec["best_forwards"] = sec, n * len(idx) * draws
            counts_torch[:, idx] = c

        def ref():
            jobs = [(j, float(A.sigmas[idx][(j + r + k) % len(idx)]))
                    for k in range(ref_per_sentence) for j in range(n)]
            sec, _ = h.noise_reference(tmodel, hooks, batch, jobs)
            rec["ref_seconds"], rec["ref_forwards"] = sec, len(jobs)

        h.interleaved_round(rec, r, ours, best, ref)
        rounds.append(rec)
        log(f"round {r + 1}/{S}: {h.round_line(rec)}")
    res["rounds"] = rounds
    tot = {k: sum(r[f"{k}_seconds"] for r in rounds) for k in ("ours", "best", "ref")}
    fw = {k: sum(r[f"{k}_forwards"] for r in rounds) for k in ("ours", "best", "ref")}
    ours_fps = fw["ours"] / tot["ours"]
    res["throughput"] = {
        "ours_steady_forwards_per_second": ours_fps,
        "torch_best_forwards_per_second": fw["best"] / tot["best"],
        "torch_reference_forwards_per_second": fw["ref"] / tot["ref"],
        "ours_end_to_end_forwards_per_second": res["ours_end_to_end"]["forwards_per_second"],
        "ours_over_best_median_of_rounds": median([r["ours_over_best"] for r in rounds]),
        "ours_over_ref_median_of_rounds": median([r["ours_over_ref"] for r in rounds]),
        "ours_over_best_total_time": tot["best"] / tot["ours"],
        "torch_reference_extrapolated_w1_seconds": n * G * draws * tot["ref"] / fw["ref"],
        "torch_best_w1_seconds": tot["best"], "ours_steady_w1_seconds": tot["ours"],
        "ours_end_to_end_w1_seconds": wall,
    }
    # identical work: our segments == run_apex; torch's statistics agree within Monte-Carlo error
    kept_t = counts_torch[np.arange(n), :, clean_t] / draws
    res["checks"] = {
        "segments_equal_run_apex_counts": bool((counts_ours == A.sweep.counts).all()),
        "mean_consistency_ours": A.consistency.mean(0).round(4).tolist(),
        "mean_consistency_torch": kept_t.mean(0).round(4).tolist(),
        "max_abs_diff_mean_consistency": float(np.abs(A.consistency.mean(0) - kept_t.mean(0)).max()),
        "compile_seconds_in_rounds": sum(r["ours_compile_seconds"] for r in rounds),
    }

    # ------------------------------------------------------------------ 4/5. FLOPs and achieved FLOP/s
    start, cls_only = A.sweep.plan.start_block, A.sweep.plan.head_only
    work = engine_work(model, A.sweep.plan, lengths)
    per_round = [engine_work(model, p_, lengths) for p_ in round_plans]
    rounds_flops = sum(w_["executed_flops"] for w_ in per_round)
    rounds_units_per_block = sum(w_["executed_units_per_block"] for w_ in per_round)
    res["flops"] = {
        "counted": "matmuls only (dense layers, QK^T, PV, pooler, classifier); see benchmarks/harness.py",
        "engine_starts_at_block": start, "engine_last_block_cls_only": cls_only, **work,
        "executed_flops_per_useful_forward": work["executed_flops"] / work["useful_forwards"],
        "torch_flops_per_forward": work["torch_equivalent_flops"] / work["useful_forwards"],
        "full_forward_flops_at_mean_length": h.full_forward(cfg, int(round(lengths.mean()))),
        "rounds_executed_flops": rounds_flops, "rounds_executed_units_per_block": rounds_units_per_block,
        "ours_executed_gflops_per_second": rounds_flops / tot["ours"] / 1e9,
        "ours_effective_gflops_per_second": work["torch_equivalent_flops"] / tot["ours"] / 1e9,
        "torch_best_gflops_per_second": work["torch_equivalent_flops"] / tot["best"] / 1e9,
        "jax_matmul_peak_gflops": jax_peak,
    }
    res["flops"]["ours_executed_fraction_of_jax_peak"] = res["flops"]["ours_executed_gflops_per_second"] / jax_peak
    res["flops"]["torch_best_fraction_of_torch_peak"] = (
        res["flops"]["torch_best_gflops_per_second"] / res["matmul_peak"]["torch_gflops"])

    # ------------------------------------------------------------------ profile
    log("profile: bare replica of the engine's unit kernel per length bucket (noise / no noise)")
    prof = {"buckets": []}
    # the replica takes σ alone; the engine's perturb function takes a grid point {sigma, scale}
    point_perturb = lambda sigma, keys: perturb({"sigma": sigma, "scale": np.asarray(scale, np.float32)}, keys)
    blocks = A.sweep.plan.blocks
    for L in sorted({b.length for b in blocks}):
        rows_L = np.flatnonzero(buckets == L)
        pb = profile_bucket(model, model.params, sites, point_perturb, batch, ids, rows_L, L, D, ips, cls_only,
                               reps=2 if quick else 3)
        nb = sum(1 for b in blocks if b.length == L)
        pb["blocks"] = nb
        pb["analytic_flops_unit"] = D * ips * h.suffix_forward(cfg, L, start, cls_only)
        pb["unit_gflops_per_second_noise"] = pb["analytic_flops_unit"] / pb["unit_seconds_noise"] / 1e9
        pb["unit_gflops_per_second_no_noise"] = pb["analytic_flops_unit"] / pb["unit_seconds_no_noise"] / 1e9
        prof["buckets"].append(pb)
        log(f"  L={L}: unit {pb['unit_seconds_noise']:.3f} s with noise, {pb['unit_seconds_no_noise']:.3f} s "
            f"without ({pb['unit_gflops_per_second_noise']:.1f} / {pb['unit_gflops_per_second_no_noise']:.1f} GFLOP/s)")
    units = rounds_units_per_block  # units the steady-state rounds executed per block
    kern = sum(pb["blocks"] * units * pb["unit_seconds_noise"] for pb in prof["buckets"])
    kern_nn = sum(pb["blocks"] * units * pb["unit_seconds_no_noise"] for pb in prof["buckets"])
    e2e_compile = res["ours_end_to_end"]["compile"]["seconds"]
    prof["w1_seconds"] = {
        "ours_end_to_end": wall, "compile_in_end_to_end": e2e_compile, "ours_steady": tot["ours"],
        "bare_unit_kernels_with_noise": kern, "bare_unit_kernels_without_noise": kern_nn,
        "noise_generation": kern - kern_nn,
        "engine_overhead_vs_bare_kernels": tot["ours"] - kern,
    }
    prof["shares_of_end_to_end"] = {
        "compile": e2e_compile / wall,
        "matmul_and_rest_of_model": kern_nn / wall,
        "noise_generation": (kern - kern_nn) / wall,
        "engine_overhead": (tot["ours"] - kern) / wall,
        "other (calibration, prefix, dispatch, noise of measurement)": 1 - (e2e_compile + tot["ours"]) / wall,
    }
    prof["waste"] = {
        "filler_rows_share_of_executed": 1 - work["useful_forwards"] / work["executed_row_forwards"],
        "padded_tokens_over_real_tokens": work["tokens_per_draw_executed"]
        / (work["tokens_per_draw_real"] * work["executed_row_forwards"] / work["useful_forwards"]),
        "executed_flops_over_torch_flops": work["executed_flops"] / work["torch_equivalent_flops"],
    }
    if not quick:  # orbax: the cost of checkpointing after every chunk (run_dir given)
        log("profile: orbax checkpoint cost (run_dir) on the shortest bucket, 4 σ")
        rows_o = np.flatnonzero(buckets == min(buckets))
        bo = {k: v[rows_o] for k, v in batch.items()}
        sig_o = A.sigmas[:4]
        times = collections.defaultdict(list)
        saves = math.ceil(len(rows_o) / ips) * math.ceil(4 / upc)
        for rep in range(2):
            for with_dir in (False, True):
                with tempfile.TemporaryDirectory() as d:
                    t = time.perf_counter()
                    run_sweep(model, model.params, bo, ids[rows_o], perturb, grid_of(sig_o), sites=sites, draws=draws,
                              seed=0, tag=tag, common_noise=True, progress=False,
                              run_dir=d if with_dir else None)
                    times[with_dir].append(time.perf_counter() - t)
        prof["orbax"] = {"seconds_without_run_dir": times[False], "seconds_with_run_dir": times[True],
                         "checkpoint_saves": saves,
                         "seconds_per_save": (median(times[True]) - median(times[False])) / saves}
        log(f"  {prof['orbax']['seconds_per_save']:.3f} s per checkpoint save")
    res["profile"] = prof

    # ------------------------------------------------------------------ 6. memory
    if not args.skip_memory:
        mem = []
        for K in mem_ks:
            log(f"memory: run_apex with K={K} draws (8 sentences x 1 σ) in a fresh process")
            out = subprocess.run([sys.executable, "-m", "benchmarks.w1", "--memory-child", "--model", model_path,
                                  "--draws", str(K), "--n", "8", "--bucket", "16"],
                                 capture_output=True, text=True, cwd=h.ROOT)
            if out.returncode:
                raise SystemExit(f"the memory child failed for K={K}:\n{out.stderr[-3000:]}")
            mem.append(json.loads(out.stdout.strip().splitlines()[-1]))
            log(f"  peak RSS during the sweep {mem[-1]['peak_sweep_mb']:.0f} MB (RSS before it "
                f"{mem[-1]['rss_before_sweep_mb']:.0f} MB), draws_per_step {mem[-1]['draws_per_step']}")
        peaks = [m["peak_sweep_mb"] for m in mem]
        same = [m["peak_sweep_mb"] for m in mem if m["draws_per_step"] == mem[-1]["draws_per_step"]]
        res["memory"] = {"runs": mem, "max_over_min_peak": max(peaks) / min(peaks),
                         "largest_K_over_smallest_K_with_same_draws_per_step": max(same) / min(same),
                         "Ks_with_same_draws_per_step": [m["draws"] for m in mem
                                                         if m["draws_per_step"] == mem[-1]["draws_per_step"]]}

    # ------------------------------------------------------------------ targets
    th_ = res["throughput"]
    targets = {
        "ours >= 3x torch reference form": (th_["ours_over_ref_median_of_rounds"], 3.0),
        "ours >= 1.0x torch best form (identical work)": (th_["ours_over_best_median_of_rounds"], 1.0),
        "ours >= 60% of JAX matmul peak": (res["flops"]["ours_executed_fraction_of_jax_peak"], 0.60),
    }
    res["targets"] = {k: {"value": v, "target": t, "pass": v >= t} for k, (v, t) in targets.items()}
    if "memory" in res:
        v = res["memory"]["max_over_min_peak"]
        res["targets"]["memory flat in K (max/min peak RSS <= 1.10)"] = {"value": v, "target": 1.10, "pass": v <= 1.10}
    path = h.write_json(Path(args.out) / "w1.json", res)
    print_table(res)
    print(f"\nwrote {path} ({res['run']['total_seconds']:.0f} s)")
    return 0


def print_table(res: dict) -> None:
    w, th_, f, pr = res["workload"], res["throughput"], res["flops"], res["profile"]
    e2e = res["ours_end_to_end"]
    print(f"\nW1 ({res['run']['mode']}): {w['n_inputs']} sentences x {len(w['sigmas'])} σ x {w['draws']} draws = "
          f"{w['perturbed_forwards']} perturbed forwards; noise on {len(w['sites'])} hook_resid_post sites")
    print(h.describe_run(res["run"]))
    rows = [
        ("ours steady state (excl. compile)", th_["ours_steady_forwards_per_second"], th_["ours_steady_w1_seconds"]),
        ("ours end to end (run_apex, incl. compile)", th_["ours_end_to_end_forwards_per_second"], e2e["wall_seconds"]),
        (f"torch best form (batch {res['torch_setup']['best_form_batch_size']})",
         th_["torch_best_forwards_per_second"], th_["torch_best_w1_seconds"]),
        ("torch reference form (batch 1, extrapolated)", th_["torch_reference_forwards_per_second"],
         th_["torch_reference_extrapolated_w1_seconds"]),
    ]
    print(f"\n{'':46s}{'fwd/s':>9s}{'W1 s':>9s}")
    for name, fps, sec in rows:
        print(f"{name:46s}{fps:9.1f}{sec:9.1f}")
    fc = [(r["ours_foreign_cores"], r["best_foreign_cores"], r["ref_foreign_cores"]) for r in res["rounds"]]
    print("other processes' CPU use during rounds (cores; ours/best/reference): "
          + ", ".join(f"{a:.1f}/{b:.1f}/{c:.1f}" for a, b, c in fc)
          + f"; during ours end to end {e2e['foreign_cores']:.1f}")
    print(f"\nratios (median over {len(res['rounds'])} interleaved rounds): ours/best "
          f"{th_['ours_over_best_median_of_rounds']:.2f} (total time {th_['ours_over_best_total_time']:.2f}), "
          f"ours/reference {th_['ours_over_ref_median_of_rounds']:.2f}")
    print(f"compile: {e2e['compile']['seconds']:.1f} s of {e2e['wall_seconds']:.1f} s end to end; "
          f"second run_apex call recompiles: {res['ours_second_call']['recompiles']}")
    mp = res["matmul_peak"]
    print(f"\nmatmul peak {mp['n']}² f32: JAX {mp['jax_gflops']:.1f} GFLOP/s, torch {mp['torch_gflops']:.1f} GFLOP/s")
    print(f"FLOPs per perturbed forward: ours executes {f['executed_flops_per_useful_forward'] / 1e6:.1f} M "
          f"(padded, from block {f['engine_starts_at_block']}, last block CLS-only: {f['engine_last_block_cls_only']}, "
          f"filler rows incl.); torch {f['torch_flops_per_forward'] / 1e6:.1f} M (6 layers, exact lengths)")
    print(f"achieved: ours {f['ours_executed_gflops_per_second']:.1f} GFLOP/s executed "
          f"({100 * f['ours_executed_fraction_of_jax_peak']:.0f}% of JAX peak), "
          f"{f['ours_effective_gflops_per_second']:.1f} effective; torch best {f['torch_best_gflops_per_second']:.1f} "
          f"({100 * f['torch_best_fraction_of_torch_peak']:.0f}% of torch peak)")
    print("\nprofile (W1 seconds):")
    for k, v in pr["w1_seconds"].items():
        print(f"  {k:40s}{v:9.1f}")
    for b in pr["buckets"]:
        print(f"  bucket L={b['length']:<3d} x{b['blocks']} blocks: unit {b['unit_seconds_noise']:.3f} s "
              f"({b['unit_gflops_per_second_noise']:.1f} GFLOP/s), without noise {b['unit_seconds_no_noise']:.3f} s "
              f"({b['unit_gflops_per_second_no_noise']:.1f} GFLOP/s)")
    wa = pr["waste"]
    print(f"  waste: filler rows {100 * wa['filler_rows_share_of_executed']:.0f}% of executed rows, padded/real tokens "
          f"{wa['padded_tokens_over_real_tokens']:.2f}, executed/torch FLOPs {wa['executed_flops_over_torch_flops']:.2f}")
    if "orbax" in pr:
        print(f"  orbax checkpoint: {pr['orbax']['seconds_per_save']:.3f} s per save (only with run_dir)")
    if "memory" in res:
        print("\npeak memory of the sweep phase (VmHWM after a reset; fresh process per K):")
        for m in res["memory"]["runs"]:
            print(f"  K={m['draws']:<5d} peak {m['peak_sweep_mb']:7.0f} MB (RSS before sweep {m['rss_before_sweep_mb']:.0f} MB, "
                  f"+{m['peak_sweep_mb'] - m['rss_before_sweep_mb']:.0f}), "
                  f"draws_per_step {m['draws_per_step']}, {m['perturbed_forwards']} forwards in {m['seconds']:.0f} s")
        mm = res["memory"]
        print(f"  max/min peak over K: {mm['max_over_min_peak']:.2f}; over K={mm['Ks_with_same_draws_per_step']} "
              f"(same micro-batch): {mm['largest_K_over_smallest_K_with_same_draws_per_step']:.2f}")
    c = res["checks"]
    print(f"\nchecks: segment counts == run_apex counts: {c['segments_equal_run_apex_counts']}; "
          f"max |Δ mean consistency| ours vs torch {c['max_abs_diff_mean_consistency']:.3f}; "
          f"clean agreement {res['torch_setup']['clean_prediction_agreement']:.3f}")
    print("\ntargets:")
    for k, v in res["targets"].items():
        print(f"  {'PASS' if v['pass'] else 'FAIL'}  {k}: {v['value']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
