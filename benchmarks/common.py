"""Workload W1 set-up shared by the benchmark scripts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

DEFAULT_MODEL = "/tmp/demo-full/finetune/model"
FINETUNE_HINT = (
    "apex-jax finetune minilm --data vader-movies --out DIR --epochs 1   (about 6 min on 2 cores; "
    "then pass --model DIR/model), or `apex-jax demo --out /tmp/demo-full` to create the default"
)
MAX_LENGTH = 64  # as `apex-jax apex` (the longest of the 64 test sentences has 55 tokens)
SIGMA_SPEC = "logspace:0.01:4:16"  # the CLI's default σ grid (relative σ)


def resolve_model(path: str | None) -> str:
    p = Path(path or DEFAULT_MODEL)
    if not (p / "config.json").exists():
        sys.exit(f"benchmarks: no fine-tuned classifier at {p} (need an HF folder with config.json). "
                 f"The benchmark does not fine-tune; make one with:\n  {FINETUNE_HINT}")
    return str(p)


def load_w1(model_path: str, n: int):
    """(model, dataset split, encoded batch) for the first n test sentences of vader-movies."""
    import apex_jax
    from apex_jax import data

    model = apex_jax.load(model_path)
    ds = data.get_split("vader-movies", "test", n=n)
    batch = model.encode(list(ds.inputs), max_length=MAX_LENGTH)
    return model, ds, batch


def padded_lengths(batch, multiple: int) -> np.ndarray:
    L = np.asarray(batch["attention_mask"]).sum(1)
    return (np.ceil(np.maximum(L, 1) / multiple) * multiple).astype(int)


def subset(batch: dict, rows) -> dict:
    rows = np.asarray(rows)
    out = {k: np.asarray(v)[rows] for k, v in batch.items()}
    width = int(out["attention_mask"].sum(1).max())
    return {k: v[:, :width] for k, v in out.items()}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def maxrss_mb() -> float:
    """Peak RSS of this process image: VmHWM. Not ru_maxrss: on Linux a child started by fork +
    exec inherits in ru_maxrss the RSS its parent had at fork time (exec folds the old mm's peak
    into the signal struct), so a subprocess of a large benchmark process would report the
    parent's size. VmHWM belongs to the new mm; both are reset by `reset_peak`."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def ru_maxrss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def reset_peak() -> None:
    """Resets the process's peak RSS (VmHWM, and with it ru_maxrss) to the current RSS (Linux)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


class ForeignLoad:
    """CPU used by *other* processes while a measurement ran, in cores (0 = machine to ourselves;
    on 2 cores, 1.0 means another process took one core on average).

        with ForeignLoad() as f: ...
        f.cores
    """

    @staticmethod
    def _busy() -> float:
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:]]
        idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
        return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _ours() -> float:
        import resource

        r, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime

    def __enter__(self):
        import time

        self.t, self.b, self.o = time.perf_counter(), self._busy(), self._ours()
        return self

    def __exit__(self, *exc):
        import time

        dt = time.perf_counter() - self.t
        self.cores = max(0.0, ((self._busy() - self.b) - (self._ours() - self.o)) / max(dt, 1e-9))
        return False
