"""W2: SYNAPSE [CLS] silencing on a fine-tuned MiniLM classifier, apex-jax vs PyTorch forward hooks.

    python -m benchmarks.w2 --out bench-results --model runs/demo/finetune/model [--quick]

W2: the fine-tuned MiniLM classifier, the first 200 test sentences of vader-movies, the 18 k%
levels of `apex_jax.K_LEVELS` x (1 ranked top-k% + 20 random k%) masks = 378 masks per layer,
at each of the 6 layers' `blocks.{i}.hook_resid_post`; silencing zeroes the selected neurons at
the [CLS] position only. 200 x 378 x 6 = 453,600 perturbed forwards.

The ranking: global scores Σ_c |W[c, j]| of elastic-net probes (`apex_jax.train_probes`, default
ProbeConfig, no concat probe) on the [CLS] features of the first 500 *train* sentences (400 fit,
100 test), one probe per layer. Any fixed ranking would do for timing; this one makes the
ranked masks meaningful. Masks come from `apex_jax.synapse.selections_and_masks` (as the library builds
them) and the PyTorch baselines use exactly those masks.

Timed (the protocol of benchmarks/harness.py; only ratios of the same run mean anything on a shared
CPU): a deterministic subsample of W2 in W2's proportions of length buckets: the first 8
sentences of the 16-token bucket, the first 16 of the 32-token bucket and the first 8 of the
48-token bucket (32 sentences, mean real length 25.0 vs 24.6 in W2), each with ALL 378 masks at
ALL 6 layers (72,576 perturbed forwards). W2's 3 sentences of the 64-token bucket are not timed
(they enter the full-W2 extrapolation by FLOPs).

Our side runs with the library's defaults; the engine settings each sweep actually used
(grid_per_step, inputs_per_step, ...) are recorded by wrapping the engine entry point that
`silencing.mask_sweep` calls (benchmark-side instrumentation; behaviour unchanged) and FLOPs are
counted from them.

 1. ours, compile: a warm-up `silencing_experiment` call on one sentence per timed length bucket
    with the full grid (the kernels the rounds use), compile time from JAX's monitoring events;
 2. interleaved rounds, 8 sentences of one bucket each: ours = `silencing_experiment` (all
    masks, all layers: one engine sweep per layer); torch best form = the same (sentence, mask,
    layer) forwards, masks of one sentence and one layer batched at the sentence's exact length;
    torch reference form = a strided slice of the same work, one forward each (batch 1). Both
    torch forms use the faster of {all cores, 1 thread} (probed first: on a shared 2-core
    machine OpenMP's 2 threads can collapse). Order alternates between rounds; other processes'
    CPU use is recorded per measurement;
 3. agreement of predictions per (sentence, mask, layer): ours vs torch best (all timed work),
    ours vs torch reference (its slice); disagreements are listed with torch's top-2 logit
    margin (near-ties);
 4. the JAX / torch float32 matmul peak (before and after the rounds; the larger is used), FLOPs
    (matmuls) of what our engine executes (prefix once per input block and layer incl. its clean
    logits, suffix from block i+1 per executed row incl. filler grid slots / input rows, last
    block [CLS]-only) and achieved FLOP/s;
 5. peak memory (VmHWM, reset after loading) of `silencing_experiment` at 5, 20 and 80 random
    masks per k level (8 sentences of the 32-token bucket, layer blocks.2, all 18 k levels), one
    fresh process each: with the library defaults (the micro-batch grows with the grid up to
    `memory_budget`) and with grid_per_step fixed to the K=5 default (flat = streaming).
Writes OUT/w2.json and prints a table. `--quick`: 2 rounds of 4 short sentences, 3 k levels x
(1 + 3 random) masks, a small probe, memory at 3 and 12 random draws (< 2 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import harness as h

median = h.median
N_TEST = 200
QUICK_K = (5.0, 25.0, 50.0)


def log(msg: str) -> None:
    h.log(msg, "w2")


class SweepRecorder:
    """Records every engine sweep `silencing.mask_sweep` runs (settings, seconds, forwards) by
    wrapping the `run_sweep` name it calls; results are passed through unchanged.

    Why: `SilencingResult` does not carry each layer's engine settings (grid_per_step, ...), which
    the FLOP count needs. This is the benchmarks' one read of a module attribute of
    `apex_jax.synapse.silencing`; `take` fails loudly if it stops seeing the sweeps.
    """

    KEYS = ("grid_size", "grid_per_step", "inputs_per_step", "draws_per_step", "units_per_call", "blocks", "sites",
            "draws")

    def __init__(self) -> None:
        from apex_jax.synapse import silencing

        orig = silencing.run_sweep
        self.calls: list[dict] = []

        def recorded(*a: Any, **kw: Any) -> Any:
            r = orig(*a, **kw)
            self.calls.append({**{k: r.settings.get(k) for k in self.KEYS}, "seconds": r.seconds,
                               "perturbed_forwards": r.perturbed_forwards})
            return r

        silencing.run_sweep = recorded

    def take(self) -> list[dict]:
        calls, self.calls = self.calls, []
        if not calls:
            raise SystemExit("benchmarks.w2: no engine sweep was recorded (apex_jax.synapse.silencing no "
                             "longer calls run_sweep by that name?); update SweepRecorder")
        return calls


def engine_flops(model: Any, lengths: Any, calls: list[dict]) -> dict:
    """Matmul FLOPs the engine executes for the sweeps `calls` (one per layer, as recorded) on
    inputs of these real lengths, read from `plan_sweep` with the recorded micro-batch: per
    sweep, the cached prefixes and clean logits plus every executed unit (filler grid slots and
    filler input rows are executed; filler units are skipped)."""
    import numpy as np

    from apex_jax.engine import plan_sweep

    lengths = np.asarray(lengths)
    mask = {"attention_mask": (np.arange(max(lengths.max(), 1))[None] < lengths[:, None]).astype(np.int32)}
    plans = [plan_sweep(model, mask, c["grid_size"], c["draws"], c["sites"], draws_per_step=c["draws_per_step"],
                        inputs_per_step=c["inputs_per_step"], grid_per_step=c["grid_per_step"],
                        units_per_call=c["units_per_call"]) for c in calls]
    torch_eq = sum(c["grid_size"] for c in calls) * sum(h.full_forward(model.config, int(L)) for L in lengths)
    return {"executed_row_forwards": sum(p.units * p.rows_per_step for p in plans),
            "useful_forwards": len(lengths) * sum(c["grid_size"] for c in calls),
            "executed_flops": sum(p.flops + p.prefix_flops for p in plans),
            "executed_flops_prefix": sum(p.prefix_flops for p in plans), "torch_equivalent_flops": torch_eq,
            "last_block_cls_only": all(p.head_only for p in plans)}


# ---------------------------------------------------------------------------------- memory
def memory_child(a: argparse.Namespace) -> int:
    """One `silencing_experiment` in this fresh process; prints a JSON line."""
    import numpy as np

    import apex_jax
    from apex_jax import K_LEVELS, data
    from apex_jax.engine import PAD_MULTIPLE
    from apex_jax.synapse import SilenceConfig, silencing_experiment

    rec = SweepRecorder()
    model = apex_jax.load(a.model)
    ds = data.get_split("vader-movies", "test", n=N_TEST)
    batch = model.encode(list(ds.inputs), max_length=h.MAX_LENGTH)
    rows = np.flatnonzero(h.padded_lengths(batch, PAD_MULTIPLE) == a.memory_bucket)[:8]
    b = h.subset(batch, rows)
    k_levels = QUICK_K if a.quick else K_LEVELS
    config = SilenceConfig(k_levels=k_levels, n_random=a.n_random, positions="cls", mode="zero",
                                   bottom=False, per_class=False)
    scores = {a.memory_site: (np.random.default_rng(0).random(model.config.d_model), None)}  # a fixed ranking
    kw = {"grid_per_step": a.grid_per_step} if a.grid_per_step else {}
    load_peak = h.maxrss_mb()
    h.reset_peak()
    before_rss, before_max = h.rss_mb(), h.maxrss_mb()
    t = time.perf_counter()
    r = silencing_experiment(model, model.params, b, ds.labels[rows], ds.ids[rows], scores, config,
                                     progress=False, **kw)
    seconds = time.perf_counter() - t
    c = rec.take()[0]
    print(json.dumps({
        "n_random": a.n_random, "masks_per_layer": c["grid_size"], "site": a.memory_site, "n_inputs": int(len(rows)),
        "bucket": a.memory_bucket, "k_levels": len(k_levels), "grid_per_step_given": a.grid_per_step or None,
        "grid_per_step": c["grid_per_step"], "inputs_per_step": c["inputs_per_step"],
        "peak_loading_mb": round(load_peak, 1), "rss_before_sweep_mb": round(before_rss, 1),
        "maxrss_after_reset_mb": round(before_max, 1), "peak_sweep_mb": round(h.maxrss_mb(), 1),
        "rss_after_mb": round(h.rss_mb(), 1), "perturbed_forwards": r.perturbed_forwards,
        "seconds": round(seconds, 2),
    }))
    return 0


# ------------------------------------------------------------------------------------ main
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="bench-results")
    p.add_argument("--quick", action="store_true", help="smoke mode: tiny sizes, < 2 minutes")
    p.add_argument("--model", default=None, help=f"HF classifier folder (default {h.DEFAULT_MODEL})")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--n-random", type=int, default=20, help=argparse.SUPPRESS)
    p.add_argument("--memory-site", default="blocks.2.hook_resid_post", help=argparse.SUPPRESS)
    p.add_argument("--memory-bucket", type=int, default=32, help=argparse.SUPPRESS)
    p.add_argument("--grid-per-step", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    model_path = h.resolve_model(args.model)
    args.model = model_path
    if args.memory_child:
        return memory_child(args)
    quick = args.quick
    n_probe = 96 if quick else 500
    n_random = 3 if quick else 20
    per_round = 4 if quick else 8
    round_plan = [(16, 0), (16, 1)] if quick else [(16, 0), (32, 0), (32, 1), (48, 0)]  # (bucket, part)
    ref_masks = 2 if quick else 6  # reference form: masks per (sentence, layer) per round
    mm_n, mm_reps = (1024, 3) if quick else (4096, 5)
    mem_ks = [3, 12] if quick else [5, 20, 80]
    mem_bucket = 16 if quick else 32

    log("importing jax, torch, apex_jax")
    import numpy as np
    import torch

    import apex_jax
    from apex_jax import K_LEVELS, ProbeConfig, data, extract_cls, global_ranking, train_probes
    from apex_jax.engine import PAD_MULTIPLE
    from apex_jax.synapse import SilenceConfig, silencing_experiment
    try:  # the masks exactly as silencing_experiment builds them
        from apex_jax.synapse import selections_and_masks
    except ImportError as e:
        raise SystemExit("benchmarks.w2 needs apex_jax.synapse.selections_and_masks (the masks "
                         "silencing_experiment builds) exported by apex_jax.synapse") from e

    events = h.CompileEvents()
    recorder = SweepRecorder()
    res: dict = {"run": h.run_record("quick" if quick else "full")}

    # ------------------------------------------------------------------ workload
    log(f"loading {model_path} and the first {N_TEST} vader-movies test sentences")
    model = apex_jax.load(model_path)
    cfg = model.config
    ds = data.get_split("vader-movies", "test", n=N_TEST)
    batch = model.encode(list(ds.inputs), max_length=h.MAX_LENGTH)
    labels, ids = np.asarray(ds.labels), np.asarray(ds.ids)
    lengths = np.asarray(batch["attention_mask"]).sum(1).astype(int)
    if lengths.max() >= h.MAX_LENGTH:
        log(f"warning: {int((lengths >= h.MAX_LENGTH).sum())} sentences reach max_length {h.MAX_LENGTH}")
    buckets = h.padded_lengths(batch, PAD_MULTIPLE)
    sites = apex_jax.parse_sites(model, "resid_post")
    k_levels = QUICK_K if quick else K_LEVELS
    config = SilenceConfig(k_levels=k_levels, n_random=n_random, positions="cls", mode="zero",
                                   bottom=False, per_class=False)
    G = len(k_levels) * (1 + n_random)
    n_w2 = len(ids) * G * len(sites)

    rounds_rows = []
    for L, k in round_plan:
        rows_L = np.flatnonzero(buckets == L)[k * per_round : (k + 1) * per_round]
        if len(rows_L) < per_round:
            raise SystemExit(f"only {len(rows_L)} sentences for round ({L}, {k})")
        rounds_rows.append(rows_L)
    timed_rows = np.concatenate(rounds_rows)
    res["workload"] = {
        "model": model_path, "data": f"vader-movies test, first {len(ids)} sentences", "n_inputs": len(ids),
        "k_levels": list(k_levels), "n_random": n_random, "ranked_masks_per_k": 1, "masks_per_layer": G,
        "sites": sites, "positions": "cls", "mode": "zero", "perturbed_forwards": n_w2,
        "sentence_lengths": {"min": int(lengths.min()), "median": float(np.median(lengths)),
                             "max": int(lengths.max()), "mean": float(lengths.mean())},
        "length_buckets": {str(int(L)): int((buckets == L).sum()) for L in np.unique(buckets)},
        "mean_padded_length": float(buckets.mean()), "max_length": h.MAX_LENGTH,
    }
    res["timed_subsample"] = {
        "description": ("rounds of 8 sentences of one length bucket each (the first ones in test order); "
                        "every timed sentence runs all masks at all layers"),
        "rounds": [{"bucket": int(L), "part": int(k), "rows": r.tolist()} for (L, k), r in zip(round_plan, rounds_rows)],
        "n_sentences": int(len(timed_rows)), "perturbed_forwards": int(len(timed_rows) * G * len(sites)),
        "share_of_w2": len(timed_rows) / len(ids), "mean_padded_length": float(buckets[timed_rows].mean()),
        "mean_real_length": float(lengths[timed_rows].mean()),
        "torch_reference": f"{ref_masks} masks per (sentence, layer) per round, strided over the grid",
        "ours_settings": "library defaults (see engine_settings_by_round)",
    }
    log(f"W2: {len(ids)} sentences x {G} masks x {len(sites)} layers = {n_w2} perturbed forwards; "
        f"timed: {len(timed_rows)} sentences in {len(rounds_rows)} rounds")
    tmodel = h.load_hf(model_path)

    # ------------------------------------------------------------------ matmul peak
    log(f"matmul peak {mm_n}² float32 (JAX and torch interleaved, {mm_reps} reps)")
    res["matmul_peak"] = h.matmul_peak(mm_n, mm_reps)
    jax_peak = res["matmul_peak"]["jax_gflops"]
    log(f"  JAX {jax_peak:.1f} GFLOP/s, torch {res['matmul_peak']['torch_gflops']:.1f} GFLOP/s")

    # ------------------------------------------------------------------ ranking (probe)
    log(f"ranking: probes on the [CLS] features of the first {n_probe} train sentences")
    t = time.perf_counter()
    tr = data.get_split("vader-movies", "train", n=n_probe)
    tb = model.encode(list(tr.inputs), max_length=h.MAX_LENGTH)
    feats = extract_cls(model, model.params, tb, sites)
    n_fit = int(0.8 * n_probe)
    pset = train_probes(feats, tr.labels, np.arange(n_fit), np.arange(n_fit, n_probe),
                                   ProbeConfig(concat=False), cfg.n_classes)
    scores = {s: (global_ranking(pset[s].W).scores, None) for s in sites}
    masks = [selections_and_masks(scores[s][0], None, config, seed=config.seed + si)[1]
             for si, s in enumerate(sites)]  # exactly as silencing_experiment builds them
    res["ranking"] = {"source": f"elastic-net probes (ProbeConfig defaults) on vader-movies train[:{n_probe}] "
                                f"({n_fit} fit, {n_probe - n_fit} test), global ranking Σ_c|W|",
                      "probe_test_accuracy": {s: pset.metrics(s).accuracy for s in sites},
                      "seconds": time.perf_counter() - t}
    log(f"  probe test accuracy by layer: {[round(pset.metrics(s).accuracy, 2) for s in sites]}")

    def ours_call(rows, conf=config):
        b = {k: np.asarray(v)[rows] for k, v in batch.items()}
        return silencing_experiment(model, model.params, b, labels[rows], ids[rows], scores, conf,
                                            progress=False)

    # ------------------------------------------------------------------ 1. warm-up (compile)
    warm_rows = np.array([int(r[0]) for r in rounds_rows])
    warm_rows = warm_rows[np.unique(buckets[warm_rows], return_index=True)[1]]
    log(f"ours: warm-up (compile) on {len(warm_rows)} sentences (one per timed bucket), all masks")
    mk = events.mark()
    t = time.perf_counter()
    with h.ForeignLoad() as fload:
        W = ours_call(warm_rows)
    res["ours_warmup"] = {"wall_seconds": time.perf_counter() - t, "compile": events.since(mk),
                          "buckets": sorted(int(L) for L in buckets[warm_rows]), "foreign_cores": fload.cores,
                          "perturbed_forwards": W.perturbed_forwards, "engine_settings": recorder.take()}
    log(f"  {res['ours_warmup']['wall_seconds']:.1f} s, of which compile "
        f"{res['ours_warmup']['compile']['seconds']:.1f} s")

    # ------------------------------------------------------------------ torch set-up
    # Both forms use the faster of torch's thread counts {all cores, 1} measured here: on a shared
    # 2-core machine OpenMP's 2 threads can collapse when another process holds a core, so
    # "all cores" is not always torch's best (the baselines get their best setting).
    clean_t = h.clean_logits(tmodel, batch, timed_rows).argmax(-1)
    thread_cands = sorted({os.cpu_count() or 1, 1}, reverse=True)
    G_cands = sorted({b for b in ((G,) if quick else (G // 3, G // 2, G)) if b >= 1})
    pr_row = int(rounds_rows[len(rounds_rows) // 2][0])
    probe_best = {(T, B): [] for T in thread_cands for B in G_cands}
    probe_ref = {T: [] for T in thread_cands}
    ref_probe_jobs = [(pr_row, i, (7 * i) % G) for i in range(len(sites))] * 2
    for _ in range(1 if quick else 2):
        for T in thread_cands:
            torch.set_num_threads(T)
            for B in G_cands:
                sec, _, _ = h.silence_best(tmodel, batch, [pr_row], masks, B, layers_to_run=[0])
                probe_best[(T, B)].append(G / sec)
            sec, _ = h.silence_reference(tmodel, batch, masks, ref_probe_jobs)
            probe_ref[T].append(len(ref_probe_jobs) / sec)
    best_T, best_B = max(probe_best, key=lambda k: median(probe_best[k]))
    ref_T = max(probe_ref, key=lambda k: median(probe_ref[k]))
    res["torch_setup"] = {
        "best_form_probe_forwards_per_second": {f"threads={T},batch={B}": v for (T, B), v in probe_best.items()},
        "reference_form_probe_forwards_per_second": {f"threads={T}": v for T, v in probe_ref.items()},
        "best_form_batch_size": best_B, "best_form_threads": best_T, "reference_form_threads": ref_T,
        "probe_row": pr_row}
    log(f"torch: best form batch {best_B}, {best_T} threads "
        f"({ {f'{T}t/{B}': round(median(v), 1) for (T, B), v in probe_best.items()} } fwd/s); reference form "
        f"{ref_T} threads ({ {T: round(median(v), 1) for T, v in probe_ref.items()} } fwd/s)")

    # ------------------------------------------------------------------ 2. interleaved rounds
    n_sites = len(sites)
    rounds = []
    ours_pred = {}
    ours_clean = {}
    ours_calls = {}
    best_pred, best_margin = {}, {}
    ref_jobs_all, ref_pred_all = [], []
    for r, rows in enumerate(rounds_rows):
        rec = {"bucket": int(buckets[rows[0]]), "rows": rows.tolist()}

        def ours():
            mk = events.mark()
            t = time.perf_counter()
            R = ours_call(rows)
            rec["ours_seconds"] = time.perf_counter() - t
            rec["ours_forwards"] = R.perturbed_forwards
            rec["ours_engine_seconds"] = R.seconds
            rec["ours_compile_seconds"] = events.since(mk)["seconds"]
            ours_pred[r] = np.stack([lr.counts.argmax(-1) for lr in R.layers], 1)  # [n_r, layers, G]
            ours_clean[r] = R.clean_pred
            ours_calls[r] = recorder.take()
            rec["engine_settings"] = [{k: c[k] for k in ("grid_per_step", "inputs_per_step", "units_per_call",
                                                          "blocks")} for c in ours_calls[r]]
            rec["ours_seconds_by_layer"] = [round(c["seconds"], 3) for c in ours_calls[r]]

        def best():
            torch.set_num_threads(best_T)
            sec, pr, mg = h.silence_best(tmodel, batch, rows, masks, best_B)
            rec["best_seconds"], rec["best_forwards"] = sec, len(rows) * n_sites * G
            best_pred[r], best_margin[r] = pr, mg

        def ref():
            stride = max(1, G // ref_masks)
            jobs = [(int(row), i, (m * stride + j + i + r) % G)
                    for j, row in enumerate(rows) for i in range(n_sites) for m in range(ref_masks)]
            torch.set_num_threads(ref_T)
            sec, pr = h.silence_reference(tmodel, batch, masks, jobs)
            rec["ref_seconds"], rec["ref_forwards"] = sec, len(jobs)
            ref_jobs_all.append((r, jobs))
            ref_pred_all.append(pr)

        h.interleaved_round(rec, r, ours, best, ref)
        rounds.append(rec)
        log(f"round {r + 1}/{len(rounds_rows)} (bucket {rec['bucket']}): {h.round_line(rec)}")
    res["rounds"] = rounds
    tot = {k: sum(x[f"{k}_seconds"] for x in rounds) for k in ("ours", "best", "ref")}
    fw = {k: sum(x[f"{k}_forwards"] for x in rounds) for k in ("ours", "best", "ref")}

    # ------------------------------------------------------------------ 3. agreement
    op = np.concatenate([ours_pred[r] for r in range(len(rounds_rows))])  # [n_timed, layers, G]
    bp = np.concatenate([best_pred[r] for r in range(len(rounds_rows))])
    bm = np.concatenate([best_margin[r] for r in range(len(rounds_rows))])
    dis = op != bp
    ref_agree = ref_n = 0
    ref_dis = []
    for (r, jobs), pr in zip(ref_jobs_all, ref_pred_all):
        pos = {int(row): j for j, row in enumerate(rounds_rows[r])}
        for (row, i, g), p_ in zip(jobs, pr):
            o = ours_pred[r][pos[row], i, g]
            ref_n += 1
            ref_agree += int(o == p_)
            if o != p_:
                ref_dis.append({"row": row, "layer": i, "mask": g, "ours": int(o), "torch_reference": int(p_)})
    oc = np.concatenate([ours_clean[r] for r in range(len(rounds_rows))])
    clean_pred_rep = oc[:, None, None]
    res["agreement"] = {
        "ours_vs_torch_best": {
            "forwards": int(dis.size), "agree": int((~dis).sum()), "fraction": float(1 - dis.mean()),
            "disagreements_torch_margin_max": float(bm[dis].max()) if dis.any() else None,
            "disagreements": [{"row": int(timed_rows[a]), "layer": int(i), "mask": int(g), "ours": int(op[a, i, g]),
                               "torch": int(bp[a, i, g]), "torch_top2_margin": float(bm[a, i, g])}
                              for a, i, g in zip(*np.nonzero(dis))][:50],
            "forwards_with_torch_margin_below_1e-3": int((bm < 1e-3).sum()),
            "fraction_among_margin_at_least_1e-3": float(1 - dis[bm >= 1e-3].mean()) if (bm >= 1e-3).any() else None,
        },
        "ours_vs_torch_reference": {"forwards": ref_n, "agree": ref_agree, "fraction": ref_agree / max(ref_n, 1),
                                    "disagreements": ref_dis[:50]},
        "clean_predictions_ours_vs_torch": float((oc == clean_t).mean()),
        "share_of_forwards_changing_the_clean_prediction": {
            "ours": float((op != clean_pred_rep).mean()), "torch_best": float((bp != clean_pred_rep).mean()),
            "ours_by_layer": (op != clean_pred_rep).mean((0, 2)).round(4).tolist()},
        "clean_accuracy_timed_sentences": float((oc == labels[timed_rows]).mean()),
    }
    ag = res["agreement"]["ours_vs_torch_best"]
    log(f"agreement ours vs torch best: {ag['fraction']:.5f} ({ag['forwards'] - ag['agree']} of {ag['forwards']} "
        f"differ; max torch margin among them {ag['disagreements_torch_margin_max']}); ours vs reference "
        f"{res['agreement']['ours_vs_torch_reference']['fraction']:.4f}")

    # ------------------------------------------------------------------ 4. FLOPs
    log("matmul peak again (after the rounds)")
    torch.set_num_threads(os.cpu_count() or 1)
    peak2 = h.matmul_peak(mm_n, mm_reps)
    mp = res["matmul_peak"] = {"before_rounds": res.pop("matmul_peak"), "after_rounds": peak2}
    mp["jax_gflops"] = max(mp["before_rounds"]["jax_gflops"], peak2["jax_gflops"])
    mp["torch_gflops"] = max(mp["before_rounds"]["torch_gflops"], peak2["torch_gflops"])
    mp["n"], mp["used"] = mm_n, "the larger of the two medians (a conservative peak)"
    jax_peak = mp["jax_gflops"]
    log(f"  JAX {peak2['jax_gflops']:.1f} GFLOP/s, torch {peak2['torch_gflops']:.1f} GFLOP/s")
    work = [engine_flops(model, lengths[rows], ours_calls[r]) for r, rows in enumerate(rounds_rows)]
    cls_only = all(w["last_block_cls_only"] for w in work)
    ex = sum(w["executed_flops"] for w in work)
    teq = sum(w["torch_equivalent_flops"] for w in work)
    useful = sum(w["useful_forwards"] for w in work)
    for rec, w in zip(rounds, work):
        rec["ours_executed_gflops_per_second"] = w["executed_flops"] / rec["ours_seconds"] / 1e9
        rec["torch_best_gflops_per_second"] = w["torch_equivalent_flops"] / rec["best_seconds"] / 1e9
    # the whole W2 as the engine would plan it with the rounds' settings (first round's per layer)
    full = engine_flops(model, lengths, ours_calls[0])
    res["flops"] = {
        "counted": "matmuls only (dense layers, QK^T, PV, pooler, classifier); see benchmarks/harness.py",
        "engine_suffix_starts": [model.resume_block(c["sites"]) for c in ours_calls[0]],
        "engine_last_block_cls_only": cls_only,
        "timed_executed_flops": ex, "timed_executed_flops_prefix": sum(w["executed_flops_prefix"] for w in work),
        "timed_executed_row_forwards": sum(w["executed_row_forwards"] for w in work),
        "timed_useful_forwards": useful, "timed_torch_equivalent_flops": teq,
        "executed_flops_per_useful_forward": ex / useful, "torch_flops_per_forward": teq / useful,
        "ours_executed_gflops_per_second": ex / tot["ours"] / 1e9,
        "ours_effective_gflops_per_second": teq / tot["ours"] / 1e9,
        "torch_best_gflops_per_second": teq / tot["best"] / 1e9,
        "jax_matmul_peak_gflops": jax_peak, "torch_matmul_peak_gflops": mp["torch_gflops"],
        "full_w2_engine_plan": full,
    }
    f_ = res["flops"]
    f_["ours_executed_fraction_of_jax_peak"] = f_["ours_executed_gflops_per_second"] / jax_peak
    f_["torch_best_fraction_of_torch_peak"] = f_["torch_best_gflops_per_second"] / f_["torch_matmul_peak_gflops"]
    f_["executed_over_torch_flops"] = ex / teq

    # ------------------------------------------------------------------ throughput, extrapolation
    # full W2 estimate: ours at its measured executed FLOP/s per bucket; torch best at its
    # measured FLOP/s per bucket; bucket(s) not timed use the nearest timed bucket's rate
    def extrapolate(kind, key):
        rates = {}
        for rec, w in zip(rounds, work):
            fl_s = rates.setdefault(rec["bucket"], [0.0, 0.0])
            fl_s[0] += w[key]
            fl_s[1] += rec[f"{kind}_seconds"]
        total = 0.0
        for L in np.unique(buckets):
            near = min(rates, key=lambda b: abs(b - L))
            wL = engine_flops(model, lengths[buckets == L], ours_calls[0])
            total += wL[key] * rates[near][1] / rates[near][0]
        return total

    ours_full = extrapolate("ours", "executed_flops")
    best_full = extrapolate("best", "torch_equivalent_flops")
    ref_fps = fw["ref"] / tot["ref"]
    comp = res["ours_warmup"]["compile"]["seconds"]
    res["throughput"] = {
        "ours_forwards_per_second": fw["ours"] / tot["ours"],
        "torch_best_forwards_per_second": fw["best"] / tot["best"],
        "torch_reference_forwards_per_second": ref_fps,
        "ours_over_best_total_time": (fw["ours"] / tot["ours"]) / (fw["best"] / tot["best"]),
        "ours_over_ref_total_time": (fw["ours"] / tot["ours"]) / ref_fps,
        "ours_over_best_median_of_rounds": median([x["ours_over_best"] for x in rounds]),
        "ours_over_ref_median_of_rounds": median([x["ours_over_ref"] for x in rounds]),
        "timed_seconds": tot, "timed_forwards": fw,
        "compile_seconds_ours": comp, "compile_seconds_in_rounds": sum(x["ours_compile_seconds"] for x in rounds),
        "ours_seconds_by_layer_all_rounds": [round(sum(x["ours_seconds_by_layer"][i] for x in rounds), 2)
                                             for i in range(len(sites))],
        "full_w2_estimate_seconds": {
            "ours_steady": ours_full, "ours_with_compile": ours_full + comp, "torch_best": best_full,
            "torch_reference": n_w2 / ref_fps,
            "method": ("ours and torch best: the full W2's FLOPs per length bucket (ours: executed, engine "
                       "plan of all 200 sentences with the rounds' settings; torch: exact lengths) at the "
                       "FLOP/s measured on the nearest timed bucket; reference: W2's forwards at its "
                       "measured forwards/s"),
        },
    }

    # ------------------------------------------------------------------ 5. memory
    if not args.skip_memory:
        def child(K, gps=0):
            log(f"memory: silencing_experiment with {K} random masks per k ({args.memory_site}, 8 sentences of "
                f"bucket {mem_bucket}, grid_per_step {gps or 'default'}) in a fresh process")
            cmd = [sys.executable, "-m", "benchmarks.w2", "--memory-child", "--model", model_path,
                   "--n-random", str(K), "--memory-site", args.memory_site, "--memory-bucket", str(mem_bucket),
                   "--grid-per-step", str(gps)]
            out = subprocess.run(cmd + (["--quick"] if quick else []), capture_output=True, text=True, cwd=h.ROOT)
            if out.returncode:
                raise SystemExit(f"memory child failed for n_random={K}:\n{out.stderr[-3000:]}")
            m = json.loads(out.stdout.strip().splitlines()[-1])
            log(f"  peak RSS during the experiment {m['peak_sweep_mb']:.0f} MB (before {m['rss_before_sweep_mb']:.0f} MB), "
                f"{m['masks_per_layer']} masks, grid_per_step {m['grid_per_step']}, {m['seconds']:.0f} s")
            return m

        default = [child(K) for K in mem_ks]
        fixed_gs = default[0]["grid_per_step"]
        fixed = [default[0]] + [child(K, fixed_gs) for K in mem_ks[1:]]
        pk = lambda runs: max(m["peak_sweep_mb"] for m in runs) / min(m["peak_sweep_mb"] for m in runs)
        res["memory"] = {
            "library_defaults": default, "fixed_grid_per_step": fixed_gs, "fixed": fixed,
            "max_over_min_peak_fixed_grid_per_step": pk(fixed), "max_over_min_peak_defaults": pk(default),
            "note": ("with library defaults the micro-batch (grid_per_step) grows with the grid up to the "
                     "engine's memory_budget, so peak memory grows with the number of masks until that cap; "
                     "at a fixed grid_per_step the engine streams and memory should not depend on the grid"),
        }

    # ------------------------------------------------------------------ targets
    th_ = res["throughput"]
    targets = {
        "ours >= 5x torch reference form": (th_["ours_over_ref_total_time"], 5.0, ">="),
        "ours >= 1.5x torch best form (identical work)": (th_["ours_over_best_total_time"], 1.5, ">="),
        "ours >= 60% of JAX matmul peak (executed FLOPs)": (f_["ours_executed_fraction_of_jax_peak"], 0.60, ">="),
        "agreement ours vs torch best > 0.99": (ag["fraction"], 0.99, ">"),
    }
    if "memory" in res:
        targets["memory flat in random draws at fixed grid_per_step (max/min peak RSS <= 1.10)"] = (
            res["memory"]["max_over_min_peak_fixed_grid_per_step"], 1.10, "<=")
    ok = {">=": lambda v, t: v >= t, ">": lambda v, t: v > t, "<=": lambda v, t: v <= t}
    res["targets"] = {k: {"value": v, "target": t, "pass": ok[op_](v, t)} for k, (v, t, op_) in targets.items()}
    path = h.write_json(Path(args.out) / "w2.json", res)
    print_table(res)
    print(f"\nwrote {path} ({res['run']['total_seconds']:.0f} s)")
    return 0


def print_table(res: dict) -> None:
    w, s, th_, f = res["workload"], res["timed_subsample"], res["throughput"], res["flops"]
    print(f"\nW2 ({res['run']['mode']}): {w['n_inputs']} sentences x {w['masks_per_layer']} masks x {len(w['sites'])} layers = "
          f"{w['perturbed_forwards']} perturbed forwards ([CLS] zeroing at hook_resid_post)")
    print(f"timed: {s['n_sentences']} sentences ({100 * s['share_of_w2']:.0f}% of W2, mean padded length "
          f"{s['mean_padded_length']:.1f} vs {w['mean_padded_length']:.1f}) x all masks x all layers = "
          f"{s['perturbed_forwards']} forwards")
    es = res["rounds"][0]["engine_settings"][0]
    print(f"ours: library defaults; engine used grid_per_step {es['grid_per_step']}, inputs_per_step "
          f"{es['inputs_per_step']}, units_per_call {es['units_per_call']} (first round, first layer)")
    print(h.describe_run(res["run"]))
    est = th_["full_w2_estimate_seconds"]
    rows = [("ours (silencing_experiment, compiled)", th_["ours_forwards_per_second"], th_["timed_seconds"]["ours"],
             est["ours_steady"]),
            (f"torch best form (batch {res['torch_setup']['best_form_batch_size']}, "
             f"{res['torch_setup']['best_form_threads']} thr)", th_["torch_best_forwards_per_second"],
             th_["timed_seconds"]["best"], est["torch_best"]),
            (f"torch reference (batch 1, {res['torch_setup']['reference_form_threads']} thr, slice)", th_["torch_reference_forwards_per_second"],
             th_["timed_seconds"]["ref"], est["torch_reference"])]
    print(f"\n{'':42s}{'fwd/s':>9s}{'timed s':>9s}{'W2 est s':>10s}")
    for name, fps, sec, e in rows:
        print(f"{name:42s}{fps:9.1f}{sec:9.1f}{e:10.0f}")
    print("per round (bucket: ours/best/ref fwd/s; other processes' cores ours/best/ref): " + "; ".join(
        f"{x['bucket']}: {x['ours_fps']:.0f}/{x['best_fps']:.0f}/{x['ref_fps']:.0f} "
        f"({x['ours_foreign_cores']:.1f}/{x['best_foreign_cores']:.1f}/{x['ref_foreign_cores']:.1f})" for x in res["rounds"]))
    print(f"\nratios (total time): ours/best {th_['ours_over_best_total_time']:.2f}, ours/reference "
          f"{th_['ours_over_ref_total_time']:.2f} (median of rounds {th_['ours_over_best_median_of_rounds']:.2f}, "
          f"{th_['ours_over_ref_median_of_rounds']:.2f})")
    print(f"compile (warm-up): {th_['compile_seconds_ours']:.1f} s of {res['ours_warmup']['wall_seconds']:.1f} s; "
          f"compile during rounds {th_['compile_seconds_in_rounds']:.1f} s")
    mp = res["matmul_peak"]
    print(f"\nmatmul peak {mp['n']}² f32 (before / after the rounds): JAX {mp['before_rounds']['jax_gflops']:.1f} / "
          f"{mp['after_rounds']['jax_gflops']:.1f} GFLOP/s, torch {mp['before_rounds']['torch_gflops']:.1f} / "
          f"{mp['after_rounds']['torch_gflops']:.1f} GFLOP/s (the larger is used)")
    print(f"FLOPs per perturbed forward: ours executes {f['executed_flops_per_useful_forward'] / 1e6:.1f} M "
          f"(suffix from block i+1, padded, last block CLS-only: {f['engine_last_block_cls_only']}, prefix and filler "
          f"slots incl.); torch {f['torch_flops_per_forward'] / 1e6:.1f} M")
    print(f"achieved: ours {f['ours_executed_gflops_per_second']:.1f} GFLOP/s executed "
          f"({100 * f['ours_executed_fraction_of_jax_peak']:.0f}% of JAX peak), {f['ours_effective_gflops_per_second']:.1f} "
          f"effective; torch best {f['torch_best_gflops_per_second']:.1f} "
          f"({100 * f['torch_best_fraction_of_torch_peak']:.0f}% of torch peak)")
    a = res["agreement"]
    print(f"\nagreement of predictions per (sentence, mask, layer): ours vs torch best "
          f"{a['ours_vs_torch_best']['fraction']:.5f} ({a['ours_vs_torch_best']['forwards']} forwards, max torch margin "
          f"among disagreements {a['ours_vs_torch_best']['disagreements_torch_margin_max']}); ours vs reference "
          f"{a['ours_vs_torch_reference']['fraction']:.4f}; clean {a['clean_predictions_ours_vs_torch']:.3f}")
    if "memory" in res:
        mem = res["memory"]
        print("\npeak memory of silencing_experiment (VmHWM after a reset; fresh process each):")
        for name, runs in (("library defaults", mem["library_defaults"]),
                           (f"grid_per_step fixed at {mem['fixed_grid_per_step']}", mem["fixed"])):
            print(f"  {name}:")
            for m in runs:
                print(f"    n_random={m['n_random']:<3d} ({m['masks_per_layer']:4d} masks) peak {m['peak_sweep_mb']:7.0f} MB "
                      f"(+{m['peak_sweep_mb'] - m['rss_before_sweep_mb']:.0f} over {m['rss_before_sweep_mb']:.0f}), "
                      f"grid_per_step {m['grid_per_step']}, {m['perturbed_forwards']} forwards in {m['seconds']:.0f} s")
        print(f"  max/min peak: defaults {mem['max_over_min_peak_defaults']:.2f}, fixed grid_per_step "
              f"{mem['max_over_min_peak_fixed_grid_per_step']:.2f}")
    print("\ntargets:")
    for k, v in res["targets"].items():
        print(f"  {'PASS' if v['pass'] else 'FAIL'}  {k}: {v['value']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
