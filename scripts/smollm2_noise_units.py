"""APEX consistency curves of SmolLM2-135M-Instruct (a verbalizer over " negative" / " positive")
under each noise unit (`--noise-unit`: site-rms, dim-rms, median-abs), noise on every block's
output: which unit gives a curve that leaves 1.0 and reaches chance over a σ range like MiniLM's?

    apex-jax fetch-assets smollm2                      # once (~1 min, 538 MB)
    python scripts/smollm2_noise_units.py [--folder DIR] [--n 12] [--draws 8] [--out runs/noise_units.json]

Result (n 12, 8 draws, 2 shared CPU cores, ~3–4 min per unit): README's APEX section.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

import apex_jax
from apex_jax import assets, fileio
from apex_jax.apex import NOISE_UNITS
from apex_jax.data import get_split

PROMPT = "Review: {text}\nIs this review positive or negative? Answer:"
LABELS = (" negative", " positive")  # vader-movies label order: 0 negative, 1 positive


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", default=os.environ.get("APEX_JAX_SMOLLM2", str(assets.cache_dir() / "smollm2")))
    p.add_argument("--n", type=int, default=12, help="test sentences")
    p.add_argument("--draws", type=int, default=8)
    p.add_argument("--sigmas", default="0.01,0.03,0.1,0.3,1,4")
    p.add_argument("--out", default="runs/noise_units.json")
    a = p.parse_args(argv)
    if not (Path(a.folder) / "config.json").is_file():
        raise SystemExit(f"no SmolLM2 folder at {a.folder}; fetch it with `apex-jax fetch-assets smollm2`.")
    clf = apex_jax.verbalizer(apex_jax.load(a.folder), list(LABELS), prompt=PROMPT)
    test = get_split("vader-movies", "test", n=a.n, seed=0)
    batch = clf.encode(list(test.inputs), max_length=64)
    sites = apex_jax.parse_sites(clf, "resid_post")
    sigmas = apex_jax.parse_sigmas(a.sigmas)
    out = {"model": a.folder, "n": a.n, "draws": a.draws, "sigmas": [float(s) for s in sigmas], "units": {}}
    for unit in NOISE_UNITS:
        t = time.perf_counter()
        res = apex_jax.run_apex(clf, clf.params, batch, test.ids, sigmas, sites=sites, draws=a.draws, progress=False,
                                noise_unit=unit)
        curve = res.consistency.mean(0)
        scales = {s: [float(np.median(v)), float(np.max(v))] for s, v in res.noise_scale.items()}
        out["units"][unit] = {"mean_consistency": curve.tolist(), "large_sigma_bias": res.bias(-1),
                              "scale_median_max": scales, "seconds": time.perf_counter() - t}
        print(f"{unit:<11} share kept " + ", ".join(f"{k:.3f}" for k in curve), flush=True)
    out["versions"] = fileio.versions()
    fileio.write_json(Path(a.out), out)
    print(f"wrote {a.out}")
    return out


if __name__ == "__main__":
    main()
