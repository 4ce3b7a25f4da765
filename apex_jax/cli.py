"""The `apex-jax` command line: thin wrappers over library functions.

    apex-jax fetch-assets [NAME ...]
    apex-jax sites MODEL
    apex-jax finetune MODEL --data DATA --out RUN [--mode full|head] ...
    apex-jax noise MODEL --data DATA --out RUN [--n 32] [--sigmas ...] [--draws 32]
    apex-jax demo [--out runs/demo]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

VIT_PRESETS = {
    # A small ViT trained from scratch; the patch size gives a 4x4 patch grid.
    "vit-tiny": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128),
}


def _model_for(name: str, data, seed: int):
    """A pretrained model with a head for `data`, or a fresh ViT preset sized to the images."""
    import apex_jax

    if name in VIT_PRESETS:
        if data.kind != "image":
            raise SystemExit(f"{name} is an image model; {data.name} is a text data set.")
        _, c, h, w = data.inputs.shape
        hf = dict(model_type="vit", image_size=h, patch_size=max(1, h // 4), num_channels=c,
                  hidden_act="gelu", layer_norm_eps=1e-12, qkv_bias=True, **VIT_PRESETS[name])
        return apex_jax.create(hf, num_labels=data.n_classes, label_names=data.label_names, seed=seed)
    return apex_jax.load(name, num_labels=data.n_classes, label_names=data.label_names, seed=seed)


def cmd_fetch_assets(args) -> int:
    from apex_jax import assets

    assets.fetch_assets(args.names or None)
    return 0


def cmd_sites(args) -> int:
    import apex_jax

    model = apex_jax.load(args.model)
    print(model)
    for s in model.sites:
        print(s)
    return 0


def cmd_finetune(args) -> int:
    from apex_jax import data as data_lib
    from apex_jax import training

    t0 = time.perf_counter()
    full = data_lib.load_dataset(args.data)
    splits = data_lib.split_dataset(full, seed=args.split_seed)
    train = splits["train"]
    if args.n_train:
        train = train.subset(range(min(args.n_train, len(train))))
    model = _model_for(args.model, full, args.seed)
    config = training.TrainConfig(
        mode=args.mode, learning_rate=args.lr, batch_size=args.batch_size, max_epochs=args.epochs,
        patience=args.patience, max_length=args.max_length, seed=args.seed,
        from_scratch=args.model in VIT_PRESETS,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{model}\ntraining on {len(train)} {full.name} examples ({config.mode}), "
          f"validating on {len(splits['val'])}")
    model, history = training.train(model, train, splits["val"], config, out_dir=out)
    test = training.evaluate(model, model.params, splits["test"], max_length=config.max_length)
    model.save(out / "model")
    metrics = {
        "model": args.model, "data": full.name, "mode": config.mode, "n_train": len(train),
        "n_val": len(splits["val"]), "n_test": len(splits["test"]), "split_seed": args.split_seed,
        "test_accuracy": test["accuracy"], "test_loss": test["loss"], "history": history,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    training.save_metrics(out / "metrics.json", metrics)
    print(f"held-out test accuracy: {test['accuracy']:.4f} on {len(splits['test'])} examples "
          f"({metrics['seconds']} s); model saved to {out / 'model'}")
    return 0


def run_noise_probe(model, data, out: Path, *, sigmas: Sequence[float], draws: int, seed: int,
                    relative: bool, max_length: int = 64) -> dict:
    """Flip rates per σ on `data`; writes noise_flip_rates.csv, noise_summary.json, a PNG."""
    import numpy as np

    from apex_jax import noise_probe

    batch = model.encode(list(data.inputs), max_length=max_length) if data.kind == "text" else model.encode(data.inputs)
    t0 = time.perf_counter()
    clean, rates = noise_probe.flip_rates(model, model.params, batch, data.ids, sigmas, draws=draws,
                                          seed=seed, relative=relative)
    seconds = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "noise_flip_rates.csv", "w") as f:
        f.write("id,label,clean_prediction," + ",".join(f"flip_rate_sigma_{s:g}" for s in sigmas) + "\n")
        for j in range(len(data)):
            f.write(f"{data.ids[j]},{data.labels[j]},{clean[j]}," + ",".join(f"{r:.6g}" for r in rates[:, j]) + "\n")
    mean = rates.mean(1)
    summary = {
        "sigmas": list(map(float, sigmas)), "mean_flip_rate": mean.tolist(), "draws": draws,
        "n_inputs": len(data), "sites": noise_probe.default_sites(model), "relative_sigma": relative,
        "seed": seed, "clean_accuracy": float((clean == data.labels).mean()),
        "perturbed_forwards": int(len(sigmas) * draws * len(data)), "seconds": round(seconds, 2),
        "forwards_per_second": round(len(sigmas) * draws * len(data) / seconds, 1),
    }
    (out / "noise_summary.json").write_text(json.dumps(summary, indent=2))
    _plot_flip_rates(out / "noise_flip_rates.png", sigmas, rates, relative)
    print(f"noise probe: {len(data)} inputs x {len(sigmas)} sigmas x {draws} draws "
          f"({summary['perturbed_forwards']} perturbed forwards, {summary['forwards_per_second']}/s)")
    print("  sigma     mean flip rate")
    for s, r in zip(sigmas, mean):
        print(f"  {s:<8g}  {r:.3f}")
    return summary


def _plot_flip_rates(path: Path, sigmas, rates, relative: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for r in rates.T:
        ax.plot(sigmas, r, color="tab:blue", alpha=0.15, lw=0.8)
    ax.plot(sigmas, rates.mean(1), color="black", lw=2, label="mean over inputs")
    ax.set_xscale("log")
    ax.set_xlabel("σ (relative to site RMS)" if relative else "σ")
    ax.set_ylabel("flip rate")
    ax.set_ylim(-0.02, 1.02)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cmd_noise(args) -> int:
    import apex_jax
    from apex_jax import data as data_lib

    model = apex_jax.load(args.model)
    data = data_lib.get_split(args.data, args.split, n=args.n, seed=args.split_seed)
    run_noise_probe(model, data, Path(args.out), sigmas=args.sigmas, draws=args.draws,
                    seed=args.seed, relative=args.relative)
    return 0


DEMO_SIGMAS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


def cmd_demo(args) -> int:
    """Fine-tune MiniLM on vader-movies, then run the noise probe on held-out sentences."""
    from apex_jax import assets

    t0 = time.perf_counter()
    assets.fetch_assets(["minilm", "vader"])
    out = Path(args.out)
    ft = argparse.Namespace(
        model="minilm", data="vader-movies", out=str(out / "finetune"), mode="full", lr=None,
        batch_size=32, epochs=args.epochs, patience=1, max_length=64, seed=0, split_seed=0,
        n_train=args.n_train,
    )
    if not (out / "finetune" / "model" / "config.json").is_file():
        cmd_finetune(ft)
    else:
        print(f"using the fine-tuned model in {out / 'finetune' / 'model'}")
    noise = argparse.Namespace(
        model=str(out / "finetune" / "model"), data="vader-movies", split="test", n=args.n,
        split_seed=0, sigmas=list(DEMO_SIGMAS), draws=args.draws, seed=0, relative=True,
        out=str(out / "noise"),
    )
    cmd_noise(noise)
    metrics = json.loads((out / "finetune" / "metrics.json").read_text())
    print(f"\ndemo done in {time.perf_counter() - t0:.0f} s: test accuracy "
          f"{metrics['test_accuracy']:.4f}; tables and plots in {out}/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="apex-jax", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("fetch-assets", help="download the offline assets into the cache")
    s.add_argument("names", nargs="*", help="minilm, vader, mnist5k (default: all)")
    s.set_defaults(fn=cmd_fetch_assets)

    s = sub.add_parser("sites", help="list a model's activation sites")
    s.add_argument("model")
    s.set_defaults(fn=cmd_sites)

    s = sub.add_parser("finetune", help="fine-tune (or train from scratch) a classifier")
    s.add_argument("model", help=f"minilm, an HF folder, a hub id, or {', '.join(VIT_PRESETS)}")
    s.add_argument("--data", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--mode", choices=("full", "head"), default="full")
    s.add_argument("--lr", type=float, default=None)
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--epochs", type=int, default=3)
    s.add_argument("--patience", type=int, default=1)
    s.add_argument("--max-length", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--split-seed", type=int, default=0)
    s.add_argument("--n-train", type=int, default=None, help="use only the first N training examples")
    s.set_defaults(fn=cmd_finetune)

    s = sub.add_parser("noise", help="flip rates under activation noise (all hook_resid_post)")
    s.add_argument("model")
    s.add_argument("--data", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--split", default="test")
    s.add_argument("--split-seed", type=int, default=0)
    s.add_argument("--n", type=int, default=32)
    s.add_argument("--sigmas", type=float, nargs="+", default=list(DEMO_SIGMAS))
    s.add_argument("--draws", type=int, default=32)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--relative", action="store_true", help="σ relative to each site's per-token RMS")
    s.set_defaults(fn=cmd_noise)

    s = sub.add_parser("demo", help="fine-tune MiniLM on vader-movies, then probe it with noise")
    s.add_argument("--out", default="runs/demo")
    s.add_argument("--epochs", type=int, default=2)
    s.add_argument("--n-train", type=int, default=None)
    s.add_argument("--n", type=int, default=32)
    s.add_argument("--draws", type=int, default=32)
    s.set_defaults(fn=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"apex-jax {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
