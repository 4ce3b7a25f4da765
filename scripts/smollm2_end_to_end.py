"""APEX and SYNAPSE on a real pretrained decoder from the command line: SmolLM2-135M-Instruct (the
`smollm2` asset) as a sentiment classifier on VADER movie reviews, two ways:

1. **verbalizer**: the causal LM read through label tokens (" negative" / " positive" after a
   prompt), no training: `apex` (noise unit `median-abs`, as decoder LMs need), `probe`, `silence`;
2. **classifier**: `finetune --mode head` gives the LM a fresh `score` head (trained briefly, the
   LM frozen), then the same `apex`, `probe`, `silence` on the saved `LlamaForSequenceClassification`.

    apex-jax fetch-assets smollm2 vader                 # once
    python scripts/smollm2_end_to_end.py [--out runs/smollm2] [--only verbalizer|classifier]

Each step is the `apex-jax` command printed before it runs (sizes small enough for 2 CPU cores:
tens of minutes in all); every run folder gets its page (RUN/index.html). The figures of one run
are in README's decoder section.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

LABELS = " negative, positive"  # vader-movies' label order: 0 negative, 1 positive
PROMPT = "Review: {text}\nIs this review positive or negative? Answer:"
DATA = ("--data", "vader-movies", "--max-length", "96")
APEX = ("--n", "16", "--sigmas", "0.01,0.1,1,4", "--draws", "8", "--noise-unit", "median-abs")
PROBE = ("--n-train", "128", "--n", "64")
SILENCE = ("--n", "32", "--k", "5,20", "--random", "4", "--layers", "20,29", "--controls", "none")
FINETUNE = ("--mode", "head", "--n-train", "384", "--n-val", "64", "--n-test", "128", "--epochs", "3", "--lr", "1e-2",
            "--patience", "3")


def steps(out: Path, only: str | None) -> list[list[str]]:
    """The apex-jax command lines, in order."""
    verb = ["--labels", LABELS, "--prompt", PROMPT]
    v, c = out / "verbalizer", out / "classifier"
    model = str(c / "finetune" / "model")
    runs = []
    if only in (None, "verbalizer"):
        runs += [["apex", "smollm2", *DATA, *APEX, *verb, "--out", str(v / "apex")],
                 ["probe", "smollm2", *DATA, *PROBE, *verb, "--out", str(v / "probe")],
                 ["silence", "smollm2", *DATA, "--probe", str(v / "probe"), *SILENCE, *verb, "--out", str(v / "silence")]]
    if only in (None, "classifier"):
        runs += [["finetune", "smollm2", *DATA, *FINETUNE, "--out", str(c / "finetune")],
                 ["apex", model, *DATA, *APEX, "--out", str(c / "apex")],
                 ["probe", model, *DATA, *PROBE, "--out", str(c / "probe")],
                 ["silence", model, *DATA, "--probe", str(c / "probe"), *SILENCE, "--out", str(c / "silence")]]
    return runs


def quoted(argv: list[str]) -> str:
    """A command line a shell reads back (newlines as $'...')."""
    out = []
    for a in argv:
        if "\n" in a:
            out.append("$'" + a.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'")
        elif any(ch in a for ch in " {}:,?"):
            out.append(f'"{a}"')
        else:
            out.append(a)
    return " ".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/smollm2"))
    p.add_argument("--only", choices=("verbalizer", "classifier"))
    a = p.parse_args(argv)
    for cmd in steps(a.out, a.only):
        print(f"\n$ apex-jax {quoted(cmd)}", flush=True)
        t = time.perf_counter()
        rc = subprocess.run([sys.executable, "-m", "apex_jax.cli", *cmd]).returncode
        print(f"[{cmd[0]}: exit {rc}, {time.perf_counter() - t:.0f} s]", flush=True)
        if rc:
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
