"""The `apex-jax` command line: it parses arguments, calls the run layers (apex_jax.apex.run,
apex_jax.synapse.run, apex_jax.training.finetune_run) and prints their summaries.

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
import inspect
import json
import sys
import time
from pathlib import Path
from typing import Sequence

DEMO_SIGMAS = "0.02,0.05,0.1,0.2,0.5,1,2,4"
DEMO_K = "5,10,20,50"


def _model_for(name: str, data, seed: int):
    """A pretrained model with a head for `data`, or a fresh ViT preset sized to the images."""
    import apex_jax
    from apex_jax.models.presets import VIT_PRESETS, vit_hf_config

    if name in VIT_PRESETS:
        if data.kind != "image":
            raise SystemExit(f"{name} is an image model; {data.name} is a text data set.")
        _, c, h, w = data.inputs.shape
        return apex_jax.create(vit_hf_config(name, c, h), num_labels=data.n_classes, label_names=data.label_names,
                               seed=seed)
    return apex_jax.load(name, num_labels=data.n_classes, label_names=data.label_names, seed=seed)


def _sigma(value) -> str:
    """σ for people: the float32 grid value's shortest form (0.1, not 0.10000000149011612)."""
    return f"{float(value):g}"


# ----------------------------------------------------------------------------- commands
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


def finetune(model: str, data: str, out: str, *, mode: str = "full", lr: float | None = None, batch_size: int = 32,
             epochs: int = 3, patience: int = 1, max_length: int = 64, seed: int = 0, split_seed: int = 0,
             n_train: int | None = None) -> dict:
    """`apex-jax finetune`: trains a classifier and prints its held-out accuracy."""
    from apex_jax import data as data_lib
    from apex_jax import training
    from apex_jax.models.presets import VIT_PRESETS

    full = data_lib.load_dataset(data)
    config = training.TrainConfig(mode=mode, learning_rate=lr, batch_size=batch_size, max_epochs=epochs,
                                  patience=patience, max_length=max_length, seed=seed,
                                  from_scratch=model in VIT_PRESETS)
    metrics = training.finetune_run(_model_for(model, full, seed), full, out, config, split_seed=split_seed,
                                    n_train=n_train, model_name=model, log=print)
    print(f"held-out test accuracy: {metrics['test_accuracy']:.4f} on {metrics['n_test']} examples "
          f"({metrics['seconds']} s); model saved to {Path(out) / 'model'}")
    return metrics


def cmd_finetune(args) -> int:
    finetune(args.model, args.data, args.out, mode=args.mode, lr=args.lr, batch_size=args.batch_size,
             epochs=args.epochs, patience=args.patience, max_length=args.max_length, seed=args.seed,
             split_seed=args.split_seed, n_train=args.n_train)
    return 0


def apex(model: str, data: str, out: str, *, split: str = "test", split_seed: int = 0, n: int | None = None,
         sigmas: str = "logspace:0.01:4:16", draws: int = 64, sites: str = "resid_post", absolute: bool = False,
         threshold: float = 0.5, seed: int = 0, chunk_size: int | None = None, max_length: int = 64,
         quiet: bool = False) -> dict:
    """`apex-jax apex`: the APEX run layer on a data split, then its summary printed."""
    import apex_jax
    from apex_jax import data as data_lib
    from apex_jax.apex.run import apex_run

    loaded = apex_jax.load(model)
    ds = data_lib.get_split(data, split, n=n, seed=split_seed)
    site_list = apex_jax.parse_sites(loaded, sites)
    grid = apex_jax.parse_sigmas(sigmas)
    s = apex_run(loaded, ds, out, sigmas=grid, sites=site_list, draws=draws, seed=seed, relative=not absolute,
                 threshold=threshold, max_length=max_length, units_per_call=chunk_size, progress=not quiet,
                 settings={"model": model, "data": ds.name, "split": split, "n": len(ds), "split_seed": split_seed})
    r, t = s["results"], s["timing"]
    print(f"APEX: {len(ds)} inputs x {len(grid)} sigmas x {draws} draws on {len(site_list)} site(s): "
          f"{t['perturbed_forwards']} perturbed forwards in {t['seconds']} s ({t['forwards_per_second']}/s)")
    esc = r["escape_sigma"]
    escape = ("no input escaped" if esc["median"] is None else
              f"escape sigma median {_sigma(esc['median'])} ({esc['n_escaped']} of {len(ds)} escape)")
    print(f"clean accuracy {r['clean_accuracy']:.3f}; {escape}")
    print("  sigma      share kept   flip rate")
    for sg, k in zip(grid, r["mean_consistency"]):
        print(f"  {sg:<9.4g}  {k:.3f}        {1 - k:.3f}")
    b = r["large_sigma_bias"]
    print(f"large-sigma bias at {b['sigma']:.3g}: dominant class {b['dominant_class']} "
          f"with share {b['dominant_share']:.3f} (entropy {b['entropy']:.3f} nats)")
    print(f"wrote {out}/samples.csv, summary.json and plots")
    return s


def cmd_apex(args) -> int:
    """APEX noise sweep on a data split: samples.csv, summary.json, timing.json, plots."""
    apex(args.model, args.data, args.out, split=args.split, split_seed=args.split_seed, n=args.n,
         sigmas=args.sigmas, draws=args.draws, sites=args.sites, absolute=args.absolute, threshold=args.threshold,
         seed=args.seed, chunk_size=args.chunk_size, max_length=args.max_length, quiet=args.quiet)
    return 0


def probe(model: str, data: str, out: str, *, n_train: int = 2000, n: int = 500, layers: str = "all",
          l1: float = 1e-3, l2: float = 1e-3, steps: int = 400, split_seed: int = 0, max_length: int = 64) -> dict:
    """`apex-jax probe`: the SYNAPSE probe run layer, then the probe table printed."""
    import apex_jax
    from apex_jax import data as data_lib
    from apex_jax.synapse.run import probe_run

    loaded = apex_jax.load(model)
    train = data_lib.get_split(data, "train", n=n_train, seed=split_seed)
    test = data_lib.get_split(data, "test", n=n, seed=split_seed)
    cfg = apex_jax.ProbeConfig(l1=l1, l2=l2, steps=steps)
    s = probe_run(loaded, train, test, Path(out), sites=apex_jax.parse_sites(loaded, layers), config=cfg,
                  max_length=max_length, settings={"model": model, "data": data, "split_seed": split_seed})
    print(f"probes on {len(train)} train / {len(test)} test inputs ({s['timing']['seconds']} s):")
    print("  site                          test acc  macro-F1  spearman(probe, act×grad)")
    agree = {r["site"]: r["spearman_probe_vs_attribution"] for r in s["results"]["ranking_agreement"]}
    for r in s["results"]["probes"]:
        a = agree.get(r["site"])
        print(f"  {r['site']:<30}{r['test_accuracy']:.3f}     {r['test_macro_f1']:.3f}     "
              f"{'' if a is None else f'{a:.3f}'}")
    print(f"wrote {out}/probes.csv, rankings.csv, ranking_agreement.csv, summary.json, probe_accuracy.png")
    return s


def cmd_probe(args) -> int:
    """[CLS] probes per layer (+ concatenated, + classifier input), rankings, agreement."""
    probe(args.model, args.data, args.out, n_train=args.n_train, n=args.n, layers=args.layers, l1=args.l1,
          l2=args.l2, steps=args.steps, split_seed=args.split_seed, max_length=args.max_length)
    return 0


def silence(model: str, data: str, probe_dir: str, out: str, *, split: str = "test", n: int = 200,
            k: str = "synapse", random: int = 20, layers: str | None = None, positions: str = "cls",
            mode: str = "zero", sigma: float = 1.0, draws: int = 16, asymmetry_k: float = 10.0, joint: bool = False,
            seed: int = 0, split_seed: int = 0, max_length: int = 64, quiet: bool = False) -> dict:
    """`apex-jax silence`: the SYNAPSE silencing run layer, then the top-k drops printed."""
    import apex_jax
    from apex_jax import data as data_lib
    from apex_jax.synapse.run import silence_run

    loaded = apex_jax.load(model)
    ds = data_lib.get_split(data, split, n=n, seed=split_seed)
    levels = apex_jax.parse_k(k)
    cfg = apex_jax.SilenceConfig(k_levels=levels, n_random=random, positions=positions, mode=mode, sigma=sigma,
                                 draws=draws, seed=seed, joint=joint,
                                 asymmetry_k=asymmetry_k if asymmetry_k in levels else levels[len(levels) // 2])
    sites = apex_jax.parse_sites(loaded, layers) if layers else None
    s = silence_run(loaded, ds, Path(probe_dir), Path(out), sites=sites, config=cfg, max_length=max_length,
                    progress=not quiet, run_dir=Path(out),
                    settings={"model": model, "data": data, "split": split, "split_seed": split_seed,
                              "probe": probe_dir})
    t = s["timing"]
    print(f"silencing: {len(ds)} inputs, {len(levels)} k levels x (ranked + {random} random) at "
          f"{len(s['result'].layers)} site(s): {t['perturbed_forwards']} forwards in {t['sweep_seconds']} s "
          f"({t['forwards_per_second']}/s)")
    print(f"clean accuracy {s['results']['clean']['accuracy']:.3f}")
    for layer in s["results"]["layers"]:
        cells = "  ".join(f"{c['k_percent']:g}%: {c['drop']:+.3f} (z {c['z']:.1f}, p {c['p']:.2f})"
                          for c in layer["top_k"][:: max(1, len(layer["top_k"]) // 4)])
        print(f"  {layer['site']:<26} top-k accuracy drop  {cells}")
    print(f"wrote {out}/silencing.csv, controls.csv, curves.csv, asymmetry.csv, summary.json and plots")
    return s


def cmd_silence(args) -> int:
    """Silencing curves with random controls (z, p) and the class-asymmetry matrix."""
    silence(args.model, args.data, args.probe, args.out, split=args.split, n=args.n, k=args.k, random=args.random,
            layers=args.layers, positions=args.positions, mode=args.mode, sigma=args.sigma, draws=args.draws,
            asymmetry_k=args.asymmetry_k, joint=args.joint, seed=args.seed, split_seed=args.split_seed,
            max_length=args.max_length, quiet=args.quiet)
    return 0


def attack(model: str, data: str, probe_dir: str, out: str, *, split: str = "test", n: int = 200, target: int = 0,
           k: float = 10.0, split_seed: int = 0, max_length: int = 64) -> dict:
    """`apex-jax attack`: the SYNAPSE attack run layer, then the redirect rates printed."""
    import apex_jax
    from apex_jax import data as data_lib
    from apex_jax.synapse.run import attack_run

    loaded = apex_jax.load(model)
    ds = data_lib.get_split(data, split, n=n, seed=split_seed)
    cfg = apex_jax.AttackConfig(target=target, k_percent=k)
    s = attack_run(loaded, ds, Path(probe_dir), Path(out), config=cfg, max_length=max_length,
                   settings={"model": model, "data": data, "split": split, "split_seed": split_seed,
                             "probe": probe_dir})
    r = s["results"]
    print(f"attacks toward class {r['target']} ({loaded.label_names[r['target']]}) on {len(ds)} inputs; "
          f"clean accuracy {r['clean_accuracy']:.3f}, target share {r['clean_target_share']:.3f}")
    print("  smallest logit bias sending a share of inputs to the target: "
          + ", ".join(f"{k}: {v:.3g}" for k, v in r["bias_to_redirect"].items()))
    for kind in dict.fromkeys(x["attack"] for x in r["rows"]):
        rows = [x for x in r["rows"] if x["attack"] == kind]
        print(f"  {kind:<24}" + "  ".join(f"{x['magnitude']:g}: {x['flip_to_target']:.2f}" for x in rows))
    print(f"wrote {out}/attacks.csv, summary.json, attack_curves.png")
    return s


def cmd_attack(args) -> int:
    """Logit bias, ±Δ column push and exponent bit flips toward a target class."""
    attack(args.model, args.data, args.probe, args.out, split=args.split, n=args.n, target=args.target, k=args.k,
           split_seed=args.split_seed, max_length=args.max_length)
    return 0


def cmd_reproduce(args) -> int:
    """A research-reproduction script (scripts/, reports/): its own arguments follow NAME.

    The study is not part of the installed package: it lives in the repository's
    `scripts/reproduce/` (the package `reproduce`, what `scripts/<claim>.py` import), found
    next to the package's source tree (a source checkout or an editable install). Installed from
    a wheel, there is none: exit 2 saying where it lives."""
    import importlib

    scripts = Path(__file__).resolve().parent.parent / "scripts"
    if not (scripts / "reproduce" / "__init__.py").is_file():
        print(f"apex-jax reproduce: error: the reproduction study is not installed with the package; it lives in "
              f"the repository's scripts/ folder (scripts/reproduce/). From a source checkout (`pip install -e .`) "
              f"run `apex-jax reproduce {args.name}` or `python scripts/reproduce_all.py`.", file=sys.stderr)
        return 2
    if sys.path[:1] != [str(scripts)]:
        sys.path.insert(0, str(scripts))
    reproduce = importlib.import_module("reproduce")
    if Path(reproduce.__file__).resolve().parent != scripts / "reproduce":
        print(f"apex-jax reproduce: error: `import reproduce` found {reproduce.__file__}, not {scripts / 'reproduce'}.",
              file=sys.stderr)
        return 2
    out = reproduce.run(args.name, args.args)
    return out if isinstance(out, int) else 0


def cmd_demo(args) -> int:
    """Fine-tune MiniLM on vader-movies, then run APEX and SYNAPSE on it."""
    from apex_jax import assets

    t0 = time.perf_counter()
    assets.fetch_assets(["minilm", "vader"])
    out = Path(args.out)
    model_dir = str(out / "finetune" / "model")
    if not (out / "finetune" / "model" / "config.json").is_file():
        finetune("minilm", "vader-movies", str(out / "finetune"), epochs=args.epochs, n_train=args.n_train)
    else:
        print(f"using the fine-tuned model in {out / 'finetune' / 'model'}")
    apex(model_dir, "vader-movies", str(out / "apex"), n=args.n, sigmas=DEMO_SIGMAS, draws=args.draws)
    print("\nSYNAPSE: [CLS] probes per layer")
    probe(model_dir, "vader-movies", str(out / "probe"), n_train=args.probe_train, n=args.probe_test)
    print("\nSYNAPSE: silencing top-k vs random-k [CLS] neurons")
    silence(model_dir, "vader-movies", str(out / "probe"), str(out / "silence"), n=args.n, k=DEMO_K)
    print("\nSYNAPSE: head attacks toward class 1")
    attack(model_dir, "vader-movies", str(out / "probe"), str(out / "attack"), n=args.n, target=1)
    metrics = json.loads((out / "finetune" / "metrics.json").read_text())
    print(f"\ndemo done in {time.perf_counter() - t0:.0f} s: test accuracy "
          f"{metrics['test_accuracy']:.4f}; tables and plots in {out}/")
    return 0


def _defaults(fn) -> dict:
    """The keyword defaults of a command's function: the parser's defaults come from them, so a
    command and `demo` (which calls the functions) cannot disagree."""
    return {k: v.default for k, v in inspect.signature(fn).parameters.items()
            if v.kind is v.KEYWORD_ONLY and v.default is not v.empty}


def build_parser() -> argparse.ArgumentParser:
    from apex_jax.models.presets import VIT_PRESETS

    p = argparse.ArgumentParser(prog="apex-jax", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, **kw) -> argparse.ArgumentParser:
        return sub.add_parser(name, formatter_class=argparse.ArgumentDefaultsHelpFormatter, **kw)

    s = command("fetch-assets", help="download the offline assets into the cache")
    s.add_argument("names", nargs="*", help="minilm, vader, mnist5k (default: all)")
    s.set_defaults(fn=cmd_fetch_assets)

    s = command("sites", help="list a model's activation sites")
    s.add_argument("model")
    s.set_defaults(fn=cmd_sites)

    s = command("finetune", help="fine-tune (or train from scratch) a classifier")
    s.add_argument("model", help=f"minilm, an HF folder, a hub id, or {', '.join(VIT_PRESETS)}")
    s.add_argument("--data", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--mode", choices=("full", "head"))
    s.add_argument("--lr", type=float)
    s.add_argument("--batch-size", type=int)
    s.add_argument("--epochs", type=int)
    s.add_argument("--patience", type=int)
    s.add_argument("--max-length", type=int)
    s.add_argument("--seed", type=int)
    s.add_argument("--split-seed", type=int)
    s.add_argument("--n-train", type=int, help="use only the first N training examples")
    s.set_defaults(fn=cmd_finetune, **_defaults(finetune))

    s = command("apex", help="APEX: consistency under activation noise, escape sigma, transitions, bias")
    s.add_argument("model")
    s.add_argument("--data", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--split")
    s.add_argument("--split-seed", type=int)
    s.add_argument("--n", type=int)
    s.add_argument("--sigmas", help="logspace:LO:HI:N or a list 0.1,0.5,1")
    s.add_argument("--draws", type=int)
    s.add_argument("--sites",
                   help="a site spec: presets resid_post (default), embed, mlp_post, all; layer numbers 0,3; "
                        "a range like 2-4:hook_resid_post; or site names (comma-separated)")
    s.add_argument("--absolute", action="store_true", help="sigma as absolute std (default: x site RMS)")
    s.add_argument("--threshold", type=float, help="escape when the share kept falls below")
    s.add_argument("--seed", type=int)
    s.add_argument("--chunk-size", type=int, help="sweep units per compiled call")
    s.add_argument("--max-length", type=int)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=cmd_apex, **_defaults(apex))

    def common_synapse(s, split=True):
        s.add_argument("model")
        s.add_argument("--data", required=True)
        s.add_argument("--out", required=True)
        s.add_argument("--split-seed", type=int)
        s.add_argument("--max-length", type=int)
        if split:
            s.add_argument("--split")
            s.add_argument("--n", type=int, help="inputs evaluated")
            s.add_argument("--probe", required=True, help="a run folder written by `apex-jax probe`")

    s = command("probe", help="SYNAPSE: per-layer [CLS] probes (Optax), neuron rankings")
    common_synapse(s, split=False)
    s.add_argument("--n-train", type=int, help="training-split inputs the probes fit")
    s.add_argument("--n", type=int, help="test-split inputs the probes are scored on")
    s.add_argument("--layers", help="a site spec: all (embed + every block), blocks, layer numbers 0,3,5, ranges, site names")
    s.add_argument("--l1", type=float)
    s.add_argument("--l2", type=float)
    s.add_argument("--steps", type=int)
    s.set_defaults(fn=cmd_probe, **_defaults(probe))

    s = command("silence", help="SYNAPSE: silence top/bottom/random k%% [CLS] neurons per layer")
    common_synapse(s)
    s.add_argument("--k", help="'synapse' (18 reference levels) or a list like 5,10,20")
    s.add_argument("--random", type=int, help="random masks per k (the control)")
    s.add_argument("--layers", help="default: every probed site; or a site spec (0,3,5 / blocks / site names)")
    s.add_argument("--positions", choices=("cls", "all"))
    s.add_argument("--mode", choices=("zero", "mean", "noise"))
    s.add_argument("--sigma", type=float, help="noise mode: std x the token's RMS")
    s.add_argument("--draws", type=int, help="noise mode: draws per input and mask")
    s.add_argument("--asymmetry-k", type=float)
    s.add_argument("--joint", action="store_true", help="silence all the layers at once (each its own ranking)")
    s.add_argument("--seed", type=int)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=cmd_silence, **_defaults(silence))

    s = command("attack", help="SYNAPSE: logit bias, weight push and bit flips toward a class")
    common_synapse(s)
    s.add_argument("--target", type=int)
    s.add_argument("--k", type=float, help="percent of the target's top neurons attacked")
    s.set_defaults(fn=cmd_attack, **_defaults(attack))

    s = command("reproduce", help="re-test a paper claim (writes reports/NAME/); `all` then the report")
    s.add_argument("name", help="regularity, regularity-text, random-labels, transitions, backdoor-bias, synapse, report or all")
    s.add_argument("args", nargs=argparse.REMAINDER, help="the script's own arguments, e.g. --quick")
    s.set_defaults(fn=cmd_reproduce)

    s = command("demo", help="fine-tune MiniLM on vader-movies, then run APEX and SYNAPSE on it")
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
