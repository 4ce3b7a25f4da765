"""Runs one noise sweep on a saved model and writes its counts (OUT, .npy) and its margin and KL
sums (OUT with suffix .scores.npz): used in subprocesses by test_engine.py and
test_engine_processes.py (forced device counts, SIGKILL and resume)."""

import argparse
import sys
from pathlib import Path

import numpy as np

TEXTS = ["what a great one", "the film was awful", "i found it boring", "a lovely cast", "meh",
         "the cast is superb and the plot is wonderful", "terrible", "honestly a dreadful one"]


def scores_path(out) -> Path:
    """Where the script writes the margin and KL sums of the counts file `out`."""
    return Path(out).with_suffix(".scores.npz")


def load_scores(out) -> tuple:
    """(margin sums, KL sums) [n, G] the script wrote beside `out`."""
    with np.load(scores_path(out)) as z:
        return z["margin"], z["kl"]


def sweep(model, draws: int = 16, **kwargs):
    """The script's sweep: noise on every block's output, 5 relative σ, seed 7, on `TEXTS`
    (ids 100…); `kwargs` go to `run_sweep` (run_dir, units_per_call, model_parallel, …). Tests
    call it in-process for the uninterrupted reference run."""
    from apex_jax.engine import run_sweep
    from apex_jax.interventions import Noise

    sites = [f"blocks.{i}.hook_resid_post" for i in range(model.config.n_layers)]
    sigmas = np.array([0.1, 0.5, 1.0, 2.0, 4.0], np.float32)
    return run_sweep(model, model.params, model.encode(TEXTS), np.arange(100, 100 + len(TEXTS)),
                     lambda s, k: {site: Noise(k, s, relative=True) for site in sites}, sigmas, sites=sites,
                     draws=draws, seed=7, draws_per_step=4, inputs_per_step=4, progress=False, **kwargs)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("folder")
    p.add_argument("out")
    p.add_argument("--run-dir", default=None)
    p.add_argument("--units-per-call", type=int, default=None)
    p.add_argument("--draws", type=int, default=16)
    p.add_argument("--coordinator", default=None, help="host:port for jax.distributed")
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--num-processes", type=int, default=1)
    p.add_argument("--model-parallel", type=int, default=None)
    a = p.parse_args()
    if a.coordinator:
        import jax

        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=a.coordinator, num_processes=a.num_processes,
                                   process_id=a.process_id)

    import apex_jax

    res = sweep(apex_jax.load(a.folder), a.draws, units_per_call=a.units_per_call, run_dir=a.run_dir,
                model_parallel=a.model_parallel)
    np.savez(scores_path(a.out), margin=res.margin_sum, kl=res.kl_sum)
    np.save(a.out, res.counts)  # last: tests wait for it
    print("devices", res.settings["devices"], "compiles", res.settings["compiles"],
          "forwards", res.perturbed_forwards, file=sys.stderr)
    if a.coordinator:
        import jax

        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
