"""What bfloat16 changes: MiniLM or a ViT in float32 vs the same weights in bfloat16.

    python -m benchmarks.bf16_effect --out bench-results [--n 64] [--train 512] [--apex-draws K]
    python -m benchmarks.bf16_effect --model vit --data digits --out bench-results [--epochs 15]

MiniLM (`apex_jax.load("minilm", num_labels=2)`) with a classifier fitted in float32 on frozen
features (logistic regression on `head.hook_cls` of `--train` vader-movies train sentences: a head
with real margins, unlike a fresh random one), then the same weights cast to bfloat16. On the
first `--n` vader-movies test sentences: clean-prediction agreement, max / mean |Δ logit|, the
f32 margins of the disagreeing sentences, and the relative error of `head.hook_cls`.
Optionally (`--apex-draws K`) the APEX consistency curves (share of draws keeping the clean
prediction, per σ) in both precisions against their Monte-Carlo standard error.
`--model vit`: a `vit-tiny` (4x4 patch grid + [CLS]) trained from scratch in float32 on the train
split of `--data` (digits or mnist5k, `--epochs` epochs, early-stopped on the val split, by
`apex-jax finetune` into OUT/bf16_vit-DATA/), then cast to bfloat16, measured on the first `--n`
test images with the same protocol (the input stays float32 pixels; the model casts them).
`--train 64 --n 8` is a quick smoke run.
Writes OUT/bf16_effect.json (MiniLM) or OUT/bf16_effect_vit.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness as h


def fitted_minilm(n_train: int) -> Any:
    """MiniLM with a 2-class head fitted in float32 (logistic regression on frozen [CLS] features)."""
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


def trained_vit(data_name: str, epochs: int, folder: Path) -> tuple[Any, float | None]:
    """A `vit-tiny` trained from scratch in float32 on `data_name`'s train split (early stopping on
    its val split, patience 5, batch 64): a model with real margins, unlike fresh random weights.

    Trained by the public command `apex-jax finetune` into `folder` (reused when it holds one).

    Returns:
        (the float32 model, its best val accuracy or None when not recorded).
    """
    import apex_jax

    model_dir = folder / "model"
    if not (model_dir / "config.json").exists():
        exe = Path(sys.executable).with_name("apex-jax")  # the console script beside this Python
        cmd = [str(exe) if exe.exists() else "apex-jax", "finetune", "vit-tiny", "--data", data_name,
               "--out", str(folder), "--epochs", str(epochs), "--patience", "5", "--batch-size", "64", "--quiet"]
        subprocess.run(cmd, check=True)
    metrics = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").exists() else {}
    val = metrics.get("history", {}).get("best_val_accuracy")
    return apex_jax.load(str(model_dir)), (float(val) if val is not None else None)


def in_bfloat16(model: Any, folder: Path) -> Any:
    """The same weights in bfloat16: saved, then loaded with `dtype="bfloat16"` (public API only)."""
    import apex_jax

    model.save(folder)
    return apex_jax.load(str(folder), dtype="bfloat16")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench-results")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--train", type=int, default=512)
    ap.add_argument("--apex-draws", type=int, default=0)
    ap.add_argument("--model", choices=("minilm", "vit"), default="minilm")
    ap.add_argument("--data", choices=("digits", "mnist5k"), default="digits", help="ViT only")
    ap.add_argument("--epochs", type=int, default=15, help="ViT only")
    args = ap.parse_args()
    import apex_jax
    from apex_jax import data

    out = Path(args.out)
    if args.model == "vit":
        m32, val_acc = trained_vit(args.data, args.epochs, out / f"bf16_vit-{args.data}")
        extra = {"model": "vit-tiny", "data": args.data, "val_accuracy_f32": val_acc}
        ds = data.get_split(args.data, "test", n=args.n)
        batch = m32.encode(ds.inputs)
    else:
        m32 = fitted_minilm(args.train)
        extra = {"model": "minilm", "data": "vader-movies"}
        ds = data.get_split("vader-movies", "test", n=args.n)
        batch = m32.encode(list(ds.inputs), max_length=64)
    with tempfile.TemporaryDirectory() as tmp:
        m16 = in_bfloat16(m32, Path(tmp) / "model")
    o32 = m32.forward(batch, capture=("head.hook_cls",))
    o16 = m16.forward(batch, capture=("head.hook_cls",))
    a, b = np.asarray(o32.logits), np.asarray(o16.logits)
    c32 = np.asarray(o32.captured["head.hook_cls"], np.float32)
    c16 = np.asarray(o16.captured["head.hook_cls"], np.float32)
    agree = a.argmax(1) == b.argmax(1)
    top2 = np.sort(a, 1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]  # f32 top-1 minus top-2 logit (|l1 - l0| for 2 classes)
    rep = {
        "run": h.run_record("full"), **extra, "n": int(len(a)), "accuracy_f32": float((a.argmax(1) == np.asarray(ds.labels)).mean()),
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
                       "share_of_points_within_2se": float((np.abs(k32 - k16) <= 2 * np.sqrt(2) * se).mean()),
                       # the same on the inputs whose clean prediction agrees (a flipped near-tie
                       # moves its whole low-σ curve: that is the agreement figure, not noise)
                       "max_abs_curve_diff_over_mc_se_agreeing": float((np.abs(k32 - k16) / se)[:, agree].max()),
                       "share_of_points_within_2se_agreeing": float(
                           (np.abs(k32 - k16) <= 2 * np.sqrt(2) * se)[:, agree].mean())}
    name = "bf16_effect.json" if args.model == "minilm" else "bf16_effect_vit.json"
    path = h.write_json(out / name, rep)
    print(json.dumps({k: v for k, v in rep.items() if k != "run"}, indent=1))
    print(h.describe_run(rep["run"]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
