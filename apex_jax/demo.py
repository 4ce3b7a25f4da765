"""`apex-jax demo`: the main job end to end on the offline assets.

Fine-tunes MiniLM on VADER's movie-review sentences, then runs APEX and the three SYNAPSE steps
on the fine-tuned model, each into its own run folder under `out`, and writes a page linking
them (`out/index.html`):

    out/finetune/   the fine-tuned classifier (out/finetune/model is an HF folder)
    out/apex/       APEX noise sweep
    out/probe/      [CLS] probes per layer and neuron rankings
    out/silence/    silencing top-k vs random-k [CLS] neurons
    out/attack/     head attacks toward class 1
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from apex_jax import assets, console, run_page
from apex_jax import data as data_lib
from apex_jax.apex.run import apex_run
from apex_jax.run_files import COMMANDS
from apex_jax.settings import DemoSettings
from apex_jax.synapse.run import attack_run, probe_run, silence_run
from apex_jax.training import finetune_run

__all__ = ["DEMO_K", "DEMO_SIGMAS", "demo_run"]

DEMO_SIGMAS = "0.02,0.05,0.1,0.2,0.5,1,2,4"
DEMO_K = "5,10,20,50"
MODEL, DATA = "minilm", "vader-movies"


def demo_run(out: str | Path, settings: DemoSettings | None = None, *, overwrite: bool = False,
             progress: bool = True, log: Callable[[str], None] = print) -> Path:
    """Runs the demo into `out` (an existing fine-tuned model there is reused); returns the
    path of the page linking its runs. Each step's wall time and the total are logged."""
    s = settings or DemoSettings()
    out = Path(out)
    t0 = time.perf_counter()
    walls: dict[str, float] = {}

    def step(name: str, command: str | None, fn, *args, **kw):
        t = time.perf_counter()
        result = fn(*args, **kw)
        walls[name] = time.perf_counter() - t
        if command is not None:
            for line in console.lines(command, result, kw.get("out", args[-1])):
                log(line)
        log(f"[demo] {name}: {walls[name]:.0f} s")
        return result

    run_kw = {"overwrite": overwrite, "progress": progress, "log": log, "max_length": s.max_length}
    step("assets", None, assets.fetch_assets, ["minilm", "vader"])
    model = str(out / "finetune" / "model")
    if not (out / "finetune" / "model" / "config.json").is_file():
        held = {}
        if s.n_train is not None:
            # finetune's default val and test parts scale with n_train; the demo keeps the whole
            # splits, so its numbers stay the ones it always gave
            parts = data_lib.split_dataset(data_lib.load_dataset(DATA))
            held = {"n_val": len(parts["val"]), "n_test": len(parts["test"])}
        step("fine-tuning", "finetune", finetune_run, MODEL, DATA, str(out / "finetune"), epochs=s.epochs,
             n_train=s.n_train, **held, **run_kw)
    else:
        log(f"using the fine-tuned model in {model}")
    step("APEX", "apex", apex_run, model, DATA, str(out / "apex"), n=s.n, sigmas=DEMO_SIGMAS, draws=s.draws, **run_kw)
    log("\nSYNAPSE: [CLS] probes per layer")
    step("probes", "probe", probe_run, model, DATA, str(out / "probe"), n_train=s.probe_train, n=s.probe_test,
         **run_kw)
    log("\nSYNAPSE: silencing top-k vs random-k [CLS] neurons")
    step("silencing", "silence", silence_run, model, DATA, str(out / "probe"), str(out / "silence"), n=s.n,
         k=DEMO_K, **run_kw)
    log("\nSYNAPSE: head attacks toward class 1")
    step("attacks", "attack", attack_run, model, DATA, str(out / "probe"), str(out / "attack"), n=s.n, target=1,
         **run_kw)
    page = run_page.write_index(out, COMMANDS, "apex-jax demo: MiniLM on VADER movie reviews")
    total = time.perf_counter() - t0
    accuracy = run_page.headline(out / "finetune")[0][1]
    log(f"\ndemo done in {total:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in walls.items())
        + f"): test accuracy {accuracy}; tables and plots in {out}/")
    log(f"open the demo's page: {page.resolve()}")
    return page
