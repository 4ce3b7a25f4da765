"""A real pretrained decoder end to end: SmolLM2-135M-Instruct (the `smollm2` asset)
read as a 2-class sentiment classifier through label tokens, then APEX (noise on every block's
output) and SYNAPSE's classifier-token probes on VADER movie-review sentences.

    apex-jax fetch-assets smollm2                      # once (~1 min, 538 MB)
    python scripts/smollm2_apex.py [--folder DIR] [--n 16] [--draws 16] [--out runs/smollm2.json]

Prints clean accuracy, the APEX consistency curve, and probe accuracies per layer; writes JSON.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

import apex_jax
from apex_jax import assets, fileio
from apex_jax.data import get_split

PROMPT = "Review: {text}\nIs this review positive or negative? Answer:"
LABELS = (" negative", " positive")  # vader-movies label order: 0 negative, 1 positive


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", default=os.environ.get("APEX_JAX_SMOLLM2", str(assets.cache_dir() / "smollm2")))
    p.add_argument("--n", type=int, default=16, help="test sentences for APEX")
    p.add_argument("--n-probe", type=int, default=96, help="train sentences for the probes")
    p.add_argument("--draws", type=int, default=16)
    p.add_argument("--sigmas", default="0.05,0.1,0.2,0.5")
    p.add_argument("--out", default="runs/smollm2.json")
    a = p.parse_args(argv)
    if not (Path(a.folder) / "config.json").is_file():
        raise SystemExit(f"no SmolLM2 folder at {a.folder}; fetch it with `apex-jax fetch-assets smollm2`.")
    t0 = time.perf_counter()
    clf = apex_jax.verbalizer(apex_jax.load(a.folder), list(LABELS), prompt=PROMPT)
    test = get_split("vader-movies", "test", n=a.n, seed=0)
    batch = clf.encode(list(test.inputs), max_length=96)
    clean = np.asarray(clf.forward(batch).logits).argmax(1)
    acc = float((clean == test.labels).mean())
    print(f"{clf}: clean accuracy {acc:.3f} on {a.n} vader-movies test sentences (verbalizer {LABELS})")

    sites = apex_jax.parse_sites(clf, "resid_post")
    res = apex_jax.run_apex(clf, clf.params, batch, test.ids, apex_jax.parse_sigmas(a.sigmas), sites=sites,
                            draws=a.draws, progress=False)
    curve = res.consistency.mean(0)
    print(f"APEX, noise on {len(sites)} block outputs, {a.draws} draws: "
          f"{res.sweep.perturbed_forwards} perturbed forwards in {res.sweep.seconds:.1f} s")
    for s, k in zip(res.sigmas, curve):
        print(f"  sigma {float(s):<6g} share kept {k:.3f}")

    train = get_split("vader-movies", "train", n=a.n_probe, seed=0)
    probe_sites = apex_jax.parse_sites(clf, "0,10,20,29")
    both = clf.encode(list(train.inputs) + list(test.inputs), max_length=96)
    feats = apex_jax.extract_cls(clf, clf.params, both, probe_sites)
    labels = np.concatenate([train.labels, test.labels])
    n_train = len(train)
    probes = apex_jax.train_probes(feats, labels, np.arange(n_train), np.arange(n_train, len(labels)))
    probe_acc = {s: float(probes.metrics(s).accuracy) for s in probe_sites}
    print("probe test accuracy at the classifier token: "
          + ", ".join(f"{s}: {v:.3f}" for s, v in probe_acc.items()))
    out = {"model": a.folder, "n": a.n, "clean_accuracy": acc, "sigmas": res.sigmas.tolist(),
           "mean_consistency": curve.tolist(), "draws": a.draws,
           "perturbed_forwards": res.sweep.perturbed_forwards, "sweep_seconds": res.sweep.seconds,
           "probe_accuracy": probe_acc, "seconds": time.perf_counter() - t0, "versions": fileio.versions()}
    fileio.write_json(Path(a.out), out)
    print(f"wrote {a.out} ({out['seconds']:.0f} s)")
    return out


if __name__ == "__main__":
    main()
