"""What a terminal shows after a run: a few lines per command, built from the run's summary.

The command line and `apex-jax demo` print these; the run folder holds the same numbers in full
(summary.json, the CSV tables, index.html).

    for line in console.lines("apex", summary, out="runs/apex"):
        print(line)
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

__all__ = ["lines"]


def _sigma(value) -> str:
    """σ for people: the float32 grid value's shortest form (0.1, not 0.10000000149011612)."""
    return f"{float(value):g}"


def _finetune(s: dict, out: str) -> list[str]:
    r = s["results"]
    return [f"held-out test accuracy: {r['test_accuracy']:.4f} on {r['n_test']} examples "
            f"({s['timing']['seconds']} s); model saved to {Path(out) / 'model'}"]


def _apex(s: dict, out: str) -> list[str]:
    r, t, st = s["results"], s["timing"], s["settings"]
    n, grid = r["n_inputs"], st["sigmas"]
    esc = r["escape_sigma"]
    escape = ("no input escaped" if esc["median"] is None else
              f"escape sigma median {_sigma(esc['median'])} ({esc['n_escaped']} of {n} escape)")
    b = r["large_sigma_bias"]
    acc = (f"clean accuracy {r['clean_accuracy']:.3f}" if r.get("clean_accuracy") is not None
           else r.get("accuracy_note", "no clean accuracy"))
    cut = r.get("truncation") or {}
    cut_line = ([f"{cut['n_truncated']} of {n} inputs cut to {cut['max_length']} tokens (--max-length)"]
                if cut.get("n_truncated") else [])
    return [f"APEX: {n} inputs x {len(grid)} sigmas x {st['draws']} draws on {len(st['sites'])} site(s): "
            f"{t['perturbed_forwards']} perturbed forwards in {t['seconds']} s ({t['forwards_per_second']}/s)",
            f"{acc}; {escape}", *cut_line,
            "  sigma      share kept   flip rate",
            *(f"  {sg:<9.4g}  {k:.3f}        {1 - k:.3f}" for sg, k in zip(grid, r["mean_consistency"])),
            f"large-sigma bias at {b['sigma']:.3g}: dominant class {b['dominant_class']} "
            f"with share {b['dominant_share']:.3f} (entropy {b['entropy']:.3f} nats)",
            f"wrote {out}/samples.csv, summary.json and plots"]


def _probe(s: dict, out: str) -> list[str]:
    r, st = s["results"], s["settings"]
    agree = {a["site"]: a["spearman_probe_vs_attribution"] for a in r["ranking_agreement"]}
    rows = [f"  {p['site']:<30}{p['test_accuracy']:.3f}     {p['test_macro_f1']:.3f}     "
            f"{'' if agree.get(p['site']) is None else format(agree[p['site']], '.3f')}" for p in r["probes"]]
    return [f"probes on {st['n_train']} train / {st['n']} test inputs ({s['timing']['seconds']} s):",
            "  site                          test acc  macro-F1  spearman(probe, act×grad)", *rows,
            f"wrote {out}/probes.csv, rankings.csv, ranking_agreement.csv, summary.json, probe_accuracy.png"]


def _silence(s: dict, out: str) -> list[str]:
    r, t, st = s["results"], s["timing"], s["settings"]
    lines = [f"silencing: {st['n']} inputs, {len(st['k'])} k levels x (ranked + {st['random']} random) at "
             f"{len(r['layers'])} site(s): {t['perturbed_forwards']} forwards in {t['sweep_seconds']} s "
             f"({t['forwards_per_second']}/s)",
             f"clean accuracy {r['clean']['accuracy']:.3f}"]
    for layer in r["layers"]:
        cells = "  ".join(f"{c['k_percent']:g}%: {c['drop']:+.3f} (z {c['z']:.1f}, p {c['p']:.2f})"
                          for c in layer["top_k"][:: max(1, len(layer["top_k"]) // 4)])
        lines.append(f"  {layer['site']:<26} top-k accuracy drop  {cells}")
        margin = layer.get("ranked", {}).get(f"top/{st.get('mode', 'zero')}", {}).get("margin", [])
        if margin:  # the true-class margin moves where no prediction flips
            cells = "  ".join(f"{c['k_percent']:g}%: {c['drop']:+.3f} (z {c['z']:.1f}, p {c['p']:.2f})"
                              for c in margin[:: max(1, len(margin) // 4)])
            lines.append(f"  {'':<26} top-k margin drop    {cells}")
    return lines + [f"wrote {out}/silencing.csv, controls.csv, curves.csv, asymmetry.csv, summary.json and plots"]


def _attack(s: dict, out: str) -> list[str]:
    r = s["results"]
    lines = [f"attacks toward class {r['target']} ({r['label_names'][r['target']]}) on {s['settings']['n']} inputs; "
             f"clean accuracy {r['clean_accuracy']:.3f}, target share {r['clean_target_share']:.3f}",
             "  smallest logit bias sending a share of inputs to the target: "
             + ", ".join(f"{k}: {v:.3g}" for k, v in r["bias_to_redirect"].items())]
    for kind in dict.fromkeys(x["attack"] for x in r["rows"]):
        rows = [x for x in r["rows"] if x["attack"] == kind]
        lines.append(f"  {kind:<24}" + "  ".join(f"{x['magnitude']:g}: {x['flip_to_target']:.2f}" for x in rows))
    return lines + [f"wrote {out}/attacks.csv, summary.json, attack_curves.png"]


_LINES: dict[str, Callable[[dict, str], list[str]]] = {
    "finetune": _finetune, "apex": _apex, "probe": _probe, "silence": _silence, "attack": _attack}


def lines(command: str, summary: dict, out: str | Path) -> list[str]:
    """The terminal lines of a run of `command` (its run layer's return value) written to `out`."""
    return _LINES[command](summary, str(out))
