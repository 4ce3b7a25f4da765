"""The `apex-jax` command line: thin wrappers over library functions.

    apex-jax fetch-assets [NAME ...]
    apex-jax sites MODEL
    apex-jax finetune MODEL --data DATA --out RUN [--mode full|head] ...
    apex-jax apex MODEL --data DATA --out RUN [--n N] [--sigmas SPEC] [--draws K] [--sites SPEC]
    apex-jax probe MODEL --data DATA --out RUN [--n-train N] [--n N] [--layers all]
    apex-jax silence MODEL --data DATA --probe RUN --out RUN2 [--n N] [--k SPEC] [--random R]
    apex-jax attack MODEL --data DATA --probe RUN --out RUN3 [--target C]
    apex-jax reproduce NAME [--quick] [ARGS]   (regularity, regularity-text, random-labels, transitions, backdoor-bias, synapse, report, all)
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


def cmd_apex(args) -> int:
    """APEX noise sweep on a data split: samples.csv, summary.json, timing.json, plots."""
    import apex_jax
    from apex_jax import data as data_lib
    from apex_jax.methods import apex, apex_outputs

    model = apex_jax.load(args.model)
    data = data_lib.get_split(args.data, args.split, n=args.n, seed=args.split_seed)
    if data.kind == "text":
        batch = model.encode(list(data.inputs), max_length=args.max_length)
    else:
        batch = model.encode(data.inputs)
    sites = apex.parse_sites(model, args.sites)
    sigmas = apex.parse_sigmas(args.sigmas)
    relative = not args.absolute
    result = apex.run_apex(model, model.params, batch, data.ids, sigmas, sites=sites, draws=args.draws,
                           seed=args.seed, relative=relative, threshold=args.threshold,
                           units_per_call=args.chunk_size, run_dir=args.out, progress=not args.quiet)
    settings = {"model": args.model, "data": data.name, "split": args.split, "n": len(data),
                "split_seed": args.split_seed, "draws": args.draws, "seed": args.seed,
                "relative_sigma": relative}
    s = apex_outputs.write_all(Path(args.out), result, data.ids, data.labels,
                               model.label_names or data.label_names, settings, relative)
    r = s["results"]
    print(f"APEX: {len(data)} inputs x {len(sigmas)} sigmas x {args.draws} draws on {len(sites)} site(s): "
          f"{s['timing']['perturbed_forwards']} perturbed forwards in {s['timing']['seconds']} s "
          f"({s['timing']['forwards_per_second']}/s)")
    print(f"clean accuracy {r['clean_accuracy']:.3f}; escape sigma median "
          f"{r['escape_sigma']['median']} ({r['escape_sigma']['n_escaped']} of {len(data)} escape)")
    print("  sigma      share kept   flip rate")
    for sg, k in zip(sigmas, r["mean_consistency"]):
        print(f"  {sg:<9.4g}  {k:.3f}        {1 - k:.3f}")
    b = r["large_sigma_bias"]
    print(f"large-sigma bias at {b['sigma']:.3g}: dominant class {b['dominant_class']} "
          f"with share {b['dominant_share']:.3f} (entropy {b['entropy']:.3f} nats)")
    print(f"wrote {args.out}/samples.csv, summary.json and plots")
    return 0


def _parse_k(spec: str) -> tuple[float, ...]:
    from apex_jax.methods import rankings

    if spec == "synapse":
        return tuple(float(k) for k in rankings.K_LEVELS)
    try:
        return tuple(float(k) for k in spec.split(",") if k.strip())
    except ValueError as e:
        raise ValueError(f"bad k spec {spec!r}; use 'synapse' (the 18 reference levels) or a list like 5,10,20.") from e


def cmd_probe(args) -> int:
    """[CLS] probes per layer (+ concatenated, + classifier input), rankings, agreement."""
    import apex_jax
    from apex_jax import data as data_lib
    from apex_jax.methods import probes, synapse_runs

    model = apex_jax.load(args.model)
    train = data_lib.get_split(args.data, "train", n=args.n_train, seed=args.split_seed)
    test = data_lib.get_split(args.data, "test", n=args.n, seed=args.split_seed)
    cfg = probes.ProbeConfig(l1=args.l1, l2=args.l2, steps=args.steps)
    s = synapse_runs.probe_run(model, train, test, Path(args.out), sites=synapse_runs.layer_sites(model, args.layers),
                               config=cfg, max_length=args.max_length,
                               settings={"model": args.model, "data": args.data, "split_seed": args.split_seed})
    print(f"probes on {len(train)} train / {len(test)} test inputs ({s['timing']['seconds']} s):")
    print("  site                          test acc  macro-F1  spearman(probe, act×grad)")
    agree = {r["site"]: r["spearman_probe_vs_attribution"] for r in s["results"]["ranking_agreement"]}
    for r in s["results"]["probes"]:
        a = agree.get(r["site"])
        print(f"  {r['site']:<30}{r['test_accuracy']:.3f}     {r['test_macro_f1']:.3f}     "
              f"{'' if a is None else f'{a:.3f}'}")
    print(f"wrote {args.out}/probes.csv, rankings.csv, ranking_agreement.csv, summary.json, probe_accuracy.png")
    return 0


def cmd_silence(args) -> int:
    """Silencing curves with random controls (z, p) and the class-asymmetry matrix."""
    import apex_jax
    from apex_jax import data as data_lib
    from apex_jax.methods import synapse, synapse_runs

    model = apex_jax.load(args.model)
    data = data_lib.get_split(args.data, args.split, n=args.n, seed=args.split_seed)
    k = _parse_k(args.k)
    cfg = synapse.SilenceConfig(k_levels=k, n_random=args.random, positions=args.positions, mode=args.mode,
                                sigma=args.sigma, draws=args.draws, seed=args.seed, joint=args.joint,
                                asymmetry_k=args.asymmetry_k if args.asymmetry_k in k else k[len(k) // 2])
    sites = synapse_runs.layer_sites(model, args.layers) if args.layers else None
    s = synapse_runs.silence_run(model, data, Path(args.probe), Path(args.out), sites=sites, config=cfg,
                                 max_length=args.max_length, progress=not args.quiet, run_dir=Path(args.out),
                                 settings={"model": args.model, "data": args.data, "split": args.split,
                                           "split_seed": args.split_seed, "probe": args.probe})
    t = s["timing"]
    print(f"silencing: {len(data)} inputs, {len(k)} k levels x (ranked + {args.random} random) at "
          f"{len(s['result'].layers)} site(s): {t['perturbed_forwards']} forwards in {t['sweep_seconds']} s "
          f"({t['forwards_per_second']}/s)")
    print(f"clean accuracy {s['results']['clean']['accuracy']:.3f}")
    for layer in s["results"]["layers"]:
        cells = "  ".join(f"{c['k_percent']:g}%: {c['drop']:+.3f} (z {c['z']:.1f}, p {c['p']:.2f})"
                          for c in layer["top_k"][:: max(1, len(layer["top_k"]) // 4)])
        print(f"  {layer['site']:<26} top-k accuracy drop  {cells}")
    print(f"wrote {args.out}/silencing.csv, controls.csv, curves.csv, asymmetry.csv, summary.json and plots")
    return 0


def cmd_attack(args) -> int:
    """Logit bias, ±Δ column push and exponent bit flips toward a target class."""
    import apex_jax
    from apex_jax import data as data_lib
    from apex_jax.methods import synapse, synapse_runs

    model = apex_jax.load(args.model)
    data = data_lib.get_split(args.data, args.split, n=args.n, seed=args.split_seed)
    cfg = synapse.AttackConfig(target=args.target, k_percent=args.k)
    s = synapse_runs.attack_run(model, data, Path(args.probe), Path(args.out), config=cfg, max_length=args.max_length,
                                settings={"model": args.model, "data": args.data, "split": args.split,
                                          "split_seed": args.split_seed, "probe": args.probe})
    r = s["results"]
    print(f"attacks toward class {r['target']} ({model.label_names[r['target']]}) on {len(data)} inputs; "
          f"clean accuracy {r['clean_accuracy']:.3f}, target share {r['clean_target_share']:.3f}")
    print("  smallest logit bias sending a share of inputs to the target: "
          + ", ".join(f"{k}: {v:.3g}" for k, v in r["bias_to_redirect"].items()))
    for kind in dict.fromkeys(x["attack"] for x in r["rows"]):
        rows = [x for x in r["rows"] if x["attack"] == kind]
        print(f"  {kind:<24}" + "  ".join(f"{x['magnitude']:g}: {x['flip_to_target']:.2f}" for x in rows))
    print(f"wrote {args.out}/attacks.csv, summary.json, attack_curves.png")
    return 0


def cmd_reproduce(args) -> int:
    """A research-reproduction script (scripts/, reports/): its own arguments follow NAME."""
    from apex_jax import reproduce

    out = reproduce.run(args.name, args.args)
    return out if isinstance(out, int) else 0


DEMO_SIGMAS = "0.02,0.05,0.1,0.2,0.5,1,2,4"
DEMO_K = "5,10,20,50"


def cmd_demo(args) -> int:
    """Fine-tune MiniLM on vader-movies, then run APEX on held-out sentences."""
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
    apex_args = argparse.Namespace(
        model=str(out / "finetune" / "model"), data="vader-movies", split="test", n=args.n,
        split_seed=0, sigmas=DEMO_SIGMAS, draws=args.draws, seed=0, absolute=False, sites="resid_post",
        threshold=0.5, chunk_size=None, max_length=64, quiet=False, out=str(out / "apex"),
    )
    cmd_apex(apex_args)
    model_dir = str(out / "finetune" / "model")
    common = dict(model=model_dir, data="vader-movies", split_seed=0, max_length=64, quiet=False)
    print("\nSYNAPSE: [CLS] probes per layer")
    cmd_probe(argparse.Namespace(**common, out=str(out / "probe"), n_train=args.probe_train, n=args.probe_test,
                                 layers="all", l1=1e-3, l2=1e-3, steps=400))
    print("\nSYNAPSE: silencing top-k vs random-k [CLS] neurons")
    cmd_silence(argparse.Namespace(**common, probe=str(out / "probe"), out=str(out / "silence"), split="test",
                                   n=args.n, k=DEMO_K, random=20, positions="cls", mode="zero", sigma=1.0,
                                   draws=16, seed=0, asymmetry_k=10.0, layers=None, joint=False))
    print("\nSYNAPSE: head attacks toward class 1")
    cmd_attack(argparse.Namespace(**common, probe=str(out / "probe"), out=str(out / "attack"), split="test",
                                  n=args.n, target=1, k=10.0))
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

    s = sub.add_parser("apex", help="APEX: consistency under activation noise, escape sigma, transitions, bias")
    s.add_argument("model")
    s.add_argument("--data", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--split", default="test")
    s.add_argument("--split-seed", type=int, default=0)
    s.add_argument("--n", type=int, default=None)
    s.add_argument("--sigmas", default="logspace:0.01:4:16", help="logspace:LO:HI:N or a list 0.1,0.5,1")
    s.add_argument("--draws", type=int, default=64)
    s.add_argument("--sites", default="resid_post",
                   help="resid_post (default), embed, mlp_post, a range like 2-4:hook_resid_post, or site names")
    s.add_argument("--absolute", action="store_true", help="sigma as absolute std (default: x site RMS)")
    s.add_argument("--threshold", type=float, default=0.5, help="escape when the share kept falls below")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--chunk-size", type=int, default=None, help="sweep units per compiled call")
    s.add_argument("--max-length", type=int, default=64)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=cmd_apex)

    def common_synapse(s, split=True):
        s.add_argument("model")
        s.add_argument("--data", required=True)
        s.add_argument("--out", required=True)
        s.add_argument("--split-seed", type=int, default=0)
        s.add_argument("--max-length", type=int, default=64)
        if split:
            s.add_argument("--split", default="test")
            s.add_argument("--n", type=int, default=200, help="inputs evaluated")
            s.add_argument("--probe", required=True, help="a run folder written by `apex-jax probe`")

    s = sub.add_parser("probe", help="SYNAPSE: per-layer [CLS] probes (Optax), neuron rankings")
    common_synapse(s, split=False)
    s.add_argument("--n-train", type=int, default=2000, help="training-split inputs the probes fit")
    s.add_argument("--n", type=int, default=500, help="test-split inputs the probes are scored on")
    s.add_argument("--layers", default="all", help="all (embed + every block), blocks, 0,3,5, or site names")
    s.add_argument("--l1", type=float, default=1e-3)
    s.add_argument("--l2", type=float, default=1e-3)
    s.add_argument("--steps", type=int, default=400)
    s.set_defaults(fn=cmd_probe)

    s = sub.add_parser("silence", help="SYNAPSE: silence top/bottom/random k%% [CLS] neurons per layer")
    common_synapse(s)
    s.add_argument("--k", default="synapse", help="'synapse' (18 reference levels) or a list like 5,10,20")
    s.add_argument("--random", type=int, default=20, help="random masks per k (the control)")
    s.add_argument("--layers", default=None, help="default: every probed site; or 0,3,5 / site names")
    s.add_argument("--positions", choices=("cls", "all"), default="cls")
    s.add_argument("--mode", choices=("zero", "mean", "noise"), default="zero")
    s.add_argument("--sigma", type=float, default=1.0, help="noise mode: std x the token's RMS")
    s.add_argument("--draws", type=int, default=16, help="noise mode: draws per input and mask")
    s.add_argument("--asymmetry-k", type=float, default=10.0)
    s.add_argument("--joint", action="store_true", help="silence all the layers at once (each its own ranking)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=cmd_silence)

    s = sub.add_parser("attack", help="SYNAPSE: logit bias, weight push and bit flips toward a class")
    common_synapse(s)
    s.add_argument("--target", type=int, default=0)
    s.add_argument("--k", type=float, default=10.0, help="percent of the target's top neurons attacked")
    s.set_defaults(fn=cmd_attack)

    s = sub.add_parser("reproduce", help="re-test a paper claim (writes reports/NAME/); `all` then the report")
    s.add_argument("name", help="regularity, regularity-text, random-labels, transitions, backdoor-bias, synapse, report or all")
    s.add_argument("args", nargs=argparse.REMAINDER, help="the script's own arguments, e.g. --quick")
    s.set_defaults(fn=cmd_reproduce)

    s = sub.add_parser("demo", help="fine-tune MiniLM on vader-movies, then run APEX and SYNAPSE on it")
    s.add_argument("--out", default="runs/demo")
    s.add_argument("--epochs", type=int, default=2)
    s.add_argument("--n-train", type=int, default=None)
    s.add_argument("--n", type=int, default=32)
    s.add_argument("--draws", type=int, default=32)
    s.add_argument("--probe-train", type=int, default=1000)
    s.add_argument("--probe-test", type=int, default=300)
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
