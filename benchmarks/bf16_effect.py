"""What bfloat16 changes (issue 15 §2, DESIGN principle 8): MiniLM in float32 vs bfloat16.

    python benchmarks/bf16_effect.py --out bench-results [--n 64] [--train 512]

MiniLM (`apex_jax.load("minilm", num_labels=2)`) with a classifier fitted in float32 on frozen
features (logistic regression on `head.hook_cls` of `--train` vader-movies train sentences: a head
with real margins, unlike a fresh random one), then the same weights cast to bfloat16. On the
first `--n` vader-movies test sentences: clean-prediction agreement, max / mean |Δ logit|, the
f32 margins of the disagreeing sentences, and the relative error of `head.hook_cls`.
Optionally (`--apex-draws K`) the APEX consistency curves (share of draws keeping the clean
prediction, per σ) in both precisions against their Monte-Carlo standard error.
Writes OUT/bf16_effect.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def fitted_minilm(n_train: int):
    import apex_jax
    from apex_jax import data
    from sklearn.linear_model import LogisticRegression

    m = apex_jax.load("minilm", num_labels=2)
    tr = data.get_split("vader-movies", "train", n=n_train)
    feats = []
    for i in range(0, n_train, 64):
        b = m.encode(list(tr.inputs[i:i + 64]), max_length=64)
        feats.append(np.asarray(m.forward(b, capture=("head.hook_cls",)).captured["head.hook_cls"]))
    clf = LogisticRegression(C=10.0, max_iter=2000).fit(np.concatenate(feats), np.asarray(tr.labels)[:n_train])
    w = np.stack([-clf.coef_[0], clf.coef_[0]], 1) / 2  # 2 logits with the fitted difference
    b = np.array([-clf.intercept_[0], clf.intercept_[0]]) / 2
    params = dict(m.params)
    params["head"] = dict(params["head"], classifier={"kernel": w.astype(np.float32), "bias": b.astype(np.float32)})
    return m.replace(params)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench-results")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--train", type=int, default=512)
    ap.add_argument("--apex-draws", type=int, default=0)
    args = ap.parse_args()
    import apex_jax
    from apex_jax import data
    from apex_jax.models.loading import with_dtype

    m32 = fitted_minilm(args.train)
    m16 = with_dtype(m32, "bfloat16")
    ds = data.get_split("vader-movies", "test", n=args.n)
    batch = m32.encode(list(ds.inputs), max_length=64)
    o32 = m32.forward(batch, capture=("head.hook_cls",))
    o16 = m16.forward(batch, capture=("head.hook_cls",))
    a, b = np.asarray(o32.logits), np.asarray(o16.logits)
    c32 = np.asarray(o32.captured["head.hook_cls"], np.float32)
    c16 = np.asarray(o16.captured["head.hook_cls"], np.float32)
    agree = a.argmax(1) == b.argmax(1)
    margin = np.abs(a[:, 1] - a[:, 0])
    rep = {
        "n": int(len(a)), "accuracy_f32": float((a.argmax(1) == np.asarray(ds.labels)).mean()),
        "agreement": float(agree.mean()), "max_abs_dlogit": float(np.abs(a - b).max()),
        "mean_abs_dlogit": float(np.abs(a - b).mean()), "logit_abs_max_f32": float(np.abs(a).max()),
        "margin_median_f32": float(np.median(margin)), "disagreeing_margins_f32": margin[~agree].tolist(),
        "hook_cls_rel_err_max": float((np.linalg.norm(c32 - c16, axis=1) / np.linalg.norm(c32, axis=1)).max()),
    }
    if args.apex_draws:
        sig = np.geomspace(0.01, 4, 8)
        ids = list(range(len(a)))
        r32 = apex_jax.run_apex(m32, m32.params, batch, ids, sig, draws=args.apex_draws, progress=False)
        r16 = apex_jax.run_apex(m16, m16.params, batch, ids, sig, draws=args.apex_draws, progress=False)
        clean = a.argmax(1)
        # counts [n, G, C] -> share of draws keeping the clean (f32) prediction [G, n]
        keep = lambda r: (np.asarray(r.sweep.counts)[np.arange(len(clean)), :, clean] / args.apex_draws).T
        k32, k16 = keep(r32), keep(r16)  # [G, n]
        se = np.sqrt(np.maximum(k32 * (1 - k32), 1 / args.apex_draws) / args.apex_draws)
        rep["apex"] = {"sigmas": sig.tolist(), "draws": args.apex_draws,
                       "mean_curve_f32": k32.mean(1).tolist(), "mean_curve_bf16": k16.mean(1).tolist(),
                       "max_abs_curve_diff_over_mc_se": float((np.abs(k32 - k16) / se).max()),
                       "share_of_points_within_2se": float((np.abs(k32 - k16) <= 2 * np.sqrt(2) * se).mean())}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bf16_effect.json").write_text(json.dumps(rep, indent=2))
    print(json.dumps(rep, indent=2))


if __name__ == "__main__":
    main()
