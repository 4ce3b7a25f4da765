"""The measurement harness shared by every benchmark entry point.

Sections:

* **Run record** - `run_record` (command, machine, package versions, the git commit and whether
  the tree was dirty) and `write_json` (the results file every figure is quoted from).
* **Timing** - `Timer` (wall and process CPU seconds), `time_call` (warm-up calls, then the
  median of repeats), `CompileEvents` (JAX's compile-time monitoring events), `ForeignLoad`
  (CPU used by other processes during a measurement).
* **Memory** - peak resident memory of this process (`maxrss_mb`, `reset_peak`) and the
  accelerator's own counters (`device_memory`).
* **Matmul peak** - `matmul_peak`: JAX and PyTorch square matmuls measured in the same run, the
  denominator of every "% of peak" figure.
* **FLOPs** - matmul FLOPs of BERT-family forwards (`full_forward`, `suffix_forward`, ...).
* **Workloads** - the fine-tuned classifier and sentences of W1/W2 (`resolve_model`, `load_w1`),
  APEX's relative-noise perturbation built from public names (`apex_noise`, `noise_grid`).
* **PyTorch baselines** - forward hooks on a Hugging Face classifier, in their reference form (one
  example x one perturbation per forward, batch 1) and their best form (all perturbations of one
  sentence batched at its exact length, `inference_mode`, all cores): `noise_reference` /
  `noise_best` for APEX noise, `silence_reference` / `silence_best` for SYNAPSE silencing.

Measurement protocol (all entry points): ours and the baseline run in the same process, in
interleaved rounds whose order alternates; ratios are medians over rounds. Only ratios measured
in one run mean anything on a shared machine; absolute seconds are recorded with the CPU time
other processes took (`ForeignLoad`) so a loaded run can be recognised.

torch is imported only inside the PyTorch functions: `make bench-accelerator` installs no torch.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent  # the repository root (entry points run from here)
PACKAGES = ("apex-jax", "jax", "jaxlib", "flax", "numpy", "torch", "transformers")


# ====================================================================================== run record
def git_state(root: Path = ROOT) -> dict:
    """The commit the measured code comes from.

    Returns:
        {"commit": `git rev-parse HEAD` or None outside a git checkout, "dirty": whether tracked
        files differ from that commit (None when unknown)}. A dirty tree means the figures come
        from uncommitted code: rerun from a clean checkout before quoting them.
    """
    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def versions(packages: Iterable[str] = PACKAGES) -> dict:
    """Installed versions (None where absent), read from package metadata without importing."""
    out = {"python": platform.python_version()}
    for p in packages:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = None
    return out


def _command() -> str:
    """This process's command line, as `python -m benchmarks.NAME ...` for a module entry point."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    head = ["python", "-m", spec.name] if spec is not None else ["python", sys.argv[0]]
    return " ".join(head + sys.argv[1:])


def run_record(mode: str) -> dict:
    """What produced a results file: command, machine, versions, git commit; JAX's devices.

    Args:
        mode: the entry point's size setting ("full", "quick", "smoke").
    """
    import jax

    return {
        "mode": mode,
        "command": _command(),
        "git": git_state(),
        "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "loadavg_start": os.getloadavg(),
                    "jax_backend": jax.default_backend(), "jax_devices": [str(d) for d in jax.devices()],
                    "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")},
        "versions": versions(),
    }


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    return str(o)


def write_json(path: str | os.PathLike, res: dict) -> Path:
    """Writes `res` (with its `run` record completed: end load, total seconds) as JSON.

    Args:
        path: the results file; its folder is created.
        res: the results; `res["run"]` should come from `run_record`.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    run = res.setdefault("run", {})
    run["loadavg_end"] = os.getloadavg()
    run["total_seconds"] = round(time.perf_counter() - T0, 2)
    path.write_text(json.dumps(res, indent=1, default=_jsonable, allow_nan=True))
    return path


def describe_run(run: dict) -> str:
    """One line naming the commit and the machine's load, for the printed tables."""
    g = run.get("git", {})
    commit = (g.get("commit") or "unknown")[:12] + (" (dirty tree)" if g.get("dirty") else "")
    m = run.get("machine", {})
    load = f"{m.get('loadavg_start', [float('nan')])[0]:.1f}"
    if "loadavg_end" in run:
        load += f" -> {run['loadavg_end'][0]:.1f}"
    return (f"commit {commit}; {m.get('cpu_count')} CPUs ({m.get('jax_backend')}), load average {load} "
            "(a shared machine: quote same-run ratios)")


# ========================================================================================== timing
T0 = time.perf_counter()  # the process's start, for log lines and total_seconds


def log(msg: str, name: str = "bench") -> None:
    """One progress line on stderr, with seconds since the process started."""
    print(f"[{name} {time.perf_counter() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def median(xs: Sequence[float]) -> float:
    """The median, NaN for no values (a skipped measurement stays visible in the JSON)."""
    return statistics.median(xs) if len(xs) else float("nan")


class Timer:
    """Wall and process CPU seconds of a block (CPU/wall = cores kept busy).

        with Timer() as t: ...
        t.wall, t.cpu
    """

    wall: float
    cpu: float

    def __enter__(self) -> "Timer":
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: Any) -> bool:
        self.wall, self.cpu = time.perf_counter() - self._w, time.process_time() - self._c
        return False


@dataclasses.dataclass
class Timing:
    """Result of `time_call`: seconds of the warm-up calls and of the timed repeats."""

    warmup_s: list[float]
    wall_s: list[float]
    cpu_s: list[float]

    @property
    def median_s(self) -> float:
        return median(self.wall_s)

    @property
    def median_cpu_s(self) -> float:
        return median(self.cpu_s)


def block(x: Any) -> Any:
    """Waits for JAX arrays anywhere in `x` (dispatch is asynchronous); other values pass."""
    import jax

    return jax.block_until_ready(x)


def time_call(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 3) -> Timing:
    """Times `fn()`: `warmup` calls first (compilation, caches), then `repeats` timed calls.

    Each call's result is waited for (`block`) before the clock stops. Quote `median_s`.
    """
    warm, wall, cpu = [], [], []
    for _ in range(warmup):
        with Timer() as t:
            block(fn())
        warm.append(t.wall)
    for _ in range(repeats):
        with Timer() as t:
            block(fn())
        wall.append(t.wall)
        cpu.append(t.cpu)
    return Timing(warm, wall, cpu)


class CompileEvents:
    """Sums JAX's compile-time monitoring events (trace, lowering, backend compile).

        events = CompileEvents(); mark = events.mark(); ...; events.since(mark)["seconds"]
    """

    NAMES = ("jaxpr_trace_duration", "jaxpr_to_mlir_module_duration", "backend_compile_duration")

    def __init__(self) -> None:
        import jax.monitoring as mon

        self.total: dict[str, float] = collections.defaultdict(float)
        self.by_fun: dict[str, float] = collections.defaultdict(float)
        mon.register_event_duration_secs_listener(self._listen)

    def _listen(self, event: str, duration: float, **kw: Any) -> None:
        name = event.rsplit("/", 1)[-1]
        if name in self.NAMES:
            self.total[name] += duration
            self.by_fun[f"{name}:{kw.get('fun_name')}"] += duration

    def mark(self) -> tuple[dict, dict]:
        return dict(self.total), dict(self.by_fun)

    def since(self, mark: tuple[dict, dict]) -> dict:
        """Compile seconds since `mark`: per event, in total ("seconds"), backend compiles per function."""
        tot, fun = mark
        d: dict[str, Any] = {k: self.total[k] - tot.get(k, 0.0) for k in self.NAMES}
        d["seconds"] = sum(d.values())
        d["backend_compiles_by_function"] = {
            k.split(":", 1)[1]: round(v - fun.get(k, 0.0), 3) for k, v in self.by_fun.items()
            if k.startswith("backend_compile_duration:") and v - fun.get(k, 0.0) > 0}
        return d


class ForeignLoad:
    """CPU used by *other* processes while a block ran, in cores (0 = the machine to ourselves;
    on 2 cores, 1.0 means another process took one core on average). Linux only.

        with ForeignLoad() as f: ...
        f.cores
    """

    cores: float

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

    def __enter__(self) -> "ForeignLoad":
        self._t, self._b, self._o = time.perf_counter(), self._busy(), self._ours()
        return self

    def __exit__(self, *exc: Any) -> bool:
        dt = time.perf_counter() - self._t
        self.cores = max(0.0, ((self._busy() - self._b) - (self._ours() - self._o)) / max(dt, 1e-9))
        return False


# ========================================================================================== memory
def interleaved_round(rec: dict, r: int, ours: Callable[[], None], best: Callable[[], None],
                      ref: Callable[[], None]) -> dict:
    """Runs one timed round of the three implementations (each fills `rec[name + "_seconds"]` and
    `rec[name + "_forwards"]`), alternating their order between rounds so drift in the machine's
    load does not favour one; adds each one's throughput, the ratios and the cores other
    processes used meanwhile. Returns `rec`."""
    for f in ((ours, best, ref) if r % 2 == 0 else (ref, best, ours)):
        with ForeignLoad() as fload:
            f()
        rec[f"{f.__name__}_foreign_cores"] = round(fload.cores, 2)
    for k in ("ours", "best", "ref"):
        rec[f"{k}_fps"] = rec[f"{k}_forwards"] / rec[f"{k}_seconds"]
    rec["ours_over_best"] = rec["ours_fps"] / rec["best_fps"]
    rec["ours_over_ref"] = rec["ours_fps"] / rec["ref_fps"]
    return rec


def round_line(rec: dict) -> str:
    """One round's throughputs and ratios for the log."""
    return (f"ours {rec['ours_fps']:.1f}/s, torch best {rec['best_fps']:.1f}/s, torch reference {rec['ref_fps']:.1f}/s "
            f"-> ours/best {rec['ours_over_best']:.2f}, ours/ref {rec['ours_over_ref']:.2f}; other processes used "
            f"{rec['ours_foreign_cores']:.1f}/{rec['best_foreign_cores']:.1f}/{rec['ref_foreign_cores']:.1f} cores")


def rss_mb() -> float:
    """Resident memory of this process now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def maxrss_mb() -> float:
    """Peak resident memory of this process image (VmHWM, Linux).

    Not ru_maxrss: a child started by fork + exec inherits in ru_maxrss the RSS its parent had at
    fork time, so a subprocess of a large benchmark would report the parent's size. VmHWM
    belongs to the new process image; `reset_peak` resets it.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_peak() -> None:
    """Resets the peak RSS (VmHWM) to the current RSS, so the next peak is one phase's (Linux)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def device_memory(device: Any) -> dict:
    """An accelerator's memory counters (bytes_in_use, peak_bytes_in_use, bytes_limit) where the
    backend reports them (not on CPU)."""
    try:
        s = device.memory_stats() or {}
    except Exception:  # noqa: BLE001 - backends without memory stats
        s = {}
    return {k: int(s[k]) for k in ("bytes_in_use", "peak_bytes_in_use", "bytes_limit") if k in s}


# ===================================================================================== matmul peak
def matmul_peak(n: int = 4096, reps: int = 5, *, dtype: str = "float32", with_torch: bool = True) -> dict:
    """The machine's matmul throughput measured now: JAX `jit(jnp.dot)` (and `torch.mm`) on n x n,
    interleaved, median of `reps` (GFLOP/s).

    The denominator of "% of peak": measured in the same run as the workload, because a shared
    machine's throughput moves with the load; foreign load only lowers it, so entry points that
    measure it twice use the larger.
    """
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    a_np = rng.standard_normal((n, n), dtype=np.float32)
    b_np = rng.standard_normal((n, n), dtype=np.float32)
    a, b = jnp.asarray(a_np, dtype), jnp.asarray(b_np, dtype)
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()
    flop = 2.0 * n**3
    js, ts = [], []
    if with_torch:
        import torch

        ta, tb = torch.from_numpy(a_np), torch.from_numpy(b_np)
        torch.mm(ta, tb)
    for _ in range(reps):  # interleaved: JAX, torch, JAX, torch ...
        t = time.perf_counter()
        dot(a, b).block_until_ready()
        js.append(flop / (time.perf_counter() - t) / 1e9)
        if with_torch:
            t = time.perf_counter()
            torch.mm(ta, tb)
            ts.append(flop / (time.perf_counter() - t) / 1e9)
    out = {"n": n, "dtype": dtype, "reps": reps, "jax_gflops": median(js), "jax_gflops_best": max(js),
           "jax_gflops_all": [round(x, 1) for x in js]}
    if with_torch:
        out.update(torch_gflops=median(ts), torch_gflops_all=[round(x, 1) for x in ts])
    return out


# =========================================================================================== FLOPs
# Matmuls only: 2·MACs of the dense layers and of the attention products QKᵀ and PV (LayerNorm,
# GELU, softmax, bias adds and noise are not counted). For q query positions over L keys:
#     layer(L, q) = 2·d²·(2L + 2q)    K, V projections on L tokens; Q, O projections on q tokens
#                 + 2·2·d·d_mlp·q       MLP on q tokens
#                 + 2·2·q·L·d           QKᵀ and PV
#     head        = 2·d² + 2·d·C        pooler + classifier on [CLS]
# The engine skips the cached prefix layers and, with `head_only`, computes the last layer's
# queries and MLP for the classifier token only (q = 1). `SweepPlan.flops` uses the same formula.
def layer_flops(cfg: Any, L: int, q: int) -> float:
    """One encoder layer at key length L with q query positions."""
    d, dm = cfg.d_model, cfg.d_mlp
    return 2.0 * d * d * (2 * L + 2 * q) + 4.0 * d * dm * q + 4.0 * q * L * d


def head_flops(cfg: Any) -> float:
    """Pooler and classifier on one token."""
    return 2.0 * cfg.d_model * cfg.d_model + 2.0 * cfg.d_model * (cfg.n_classes or 0)


def full_forward(cfg: Any, L: int) -> float:
    """A plain forward at sequence length L: what the PyTorch baselines run."""
    return cfg.n_layers * layer_flops(cfg, L, L) + head_flops(cfg)


def suffix_forward(cfg: Any, L: int, start: int, cls_only_last: bool) -> float:
    """One perturbed forward of the engine: layers start..n-1 at padded length L, plus the head."""
    n = cfg.n_layers
    return sum(layer_flops(cfg, L, 1 if (cls_only_last and i == n - 1) else L) for i in range(start, n)) \
        + head_flops(cfg)


def prefix_forward(cfg: Any, L: int, start: int) -> float:
    """The cached clean prefix (layers 0..start-1) of one input at padded length L."""
    return start * layer_flops(cfg, L, L)


# ======================================================================================= workloads
DEFAULT_MODEL = "runs/demo/finetune/model"  # what `make demo` fine-tunes
FINETUNE_HINT = ("`make demo` (writes runs/demo/finetune/model), or apex-jax finetune minilm --data vader-movies "
                 "--out DIR --epochs 1 (about 6 min on 2 cores) and pass --model DIR/model")
MAX_LENGTH = 64  # as `apex-jax apex` (the longest of the first 64 test sentences has 55 tokens)
SIGMA_SPEC = "logspace:0.01:4:16"  # the CLI's default σ grid (relative σ)


def resolve_model(path: str | None) -> str:
    """The fine-tuned classifier folder W1/W2 run on; exits with how to make one if missing."""
    p = Path(path or DEFAULT_MODEL)
    if not (p / "config.json").exists():
        sys.exit(f"benchmarks: no fine-tuned classifier at {p} (need an HF folder with config.json). "
                 f"The benchmark does not fine-tune; make one with {FINETUNE_HINT}")
    return str(p)


def load_w1(model_path: str, n: int) -> tuple[Any, Any, dict]:
    """(model, data split, encoded batch) for the first n vader-movies test sentences."""
    import apex_jax
    from apex_jax import data

    model = apex_jax.load(model_path)
    ds = data.get_split("vader-movies", "test", n=n)
    return model, ds, model.encode(list(ds.inputs), max_length=MAX_LENGTH)


def padded_lengths(batch: dict, multiple: int) -> np.ndarray:
    """Each input's length bucket: its real length rounded up to `multiple` (as the engine pads)."""
    L = np.asarray(batch["attention_mask"]).sum(1)
    return (np.ceil(np.maximum(L, 1) / multiple) * multiple).astype(int)


def subset(batch: dict, rows: Sequence[int]) -> dict:
    """The batch's `rows`, cropped to their longest real length."""
    rows = np.asarray(rows)
    out = {k: np.asarray(v)[rows] for k, v in batch.items()}
    width = int(out["attention_mask"].sum(1).max())
    return {k: v[:, :width] for k, v in out.items()}


def apex_noise(model: Any, params: Any, batch: dict, sites: Sequence[str]) -> tuple[Any, np.ndarray, dict, str]:
    """APEX's relative noise as `run_apex` builds it, for driving `run_sweep` directly.

    Returns:
        (perturbation, per-site scales [S] (each site's clean RMS on `batch`), the RMS by site,
        a fingerprint tag). The perturbation compares equal for equal site lists, so sweeps on
        other inputs or σ reuse one compiled kernel.
    """
    from apex_jax import calibrate_rms
    from apex_jax.apex import NoisePerturbation

    rms = calibrate_rms(model, params, batch, sites)
    scale = np.asarray([rms[s] for s in sites], np.float32)
    return NoisePerturbation(tuple(sites)), scale, rms, f"apex sites={list(sites)} relative=True"


def noise_grid(sigmas: Sequence[float], scale: np.ndarray) -> dict:
    """Grid leaves for `apex_noise`'s perturbation: σ [G] with the site scales broadcast beside it."""
    sigmas = np.asarray(sigmas, np.float32)
    return {"sigma": sigmas, "scale": np.broadcast_to(scale, sigmas.shape + scale.shape).copy()}


# =============================================================================== PyTorch baselines
def load_hf(folder: str, threads: int | None = None) -> Any:
    """A Hugging Face sequence classifier in eval mode, torch using `threads` (default all cores)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.set_num_threads(threads or os.cpu_count() or 1)
    return AutoModelForSequenceClassification.from_pretrained(folder).eval()


def encoder_layers(model: Any) -> list:
    """The transformer blocks of an HF classifier, in order: `encoder.layer` (BERT family), `h`
    (GPT-2) or `layers` (Llama family). A hook on block i's output sees apex-jax's
    `blocks.{i}.hook_resid_post`."""
    base = getattr(model, model.base_model_prefix)
    if hasattr(base, "encoder"):
        return list(base.encoder.layer)
    if hasattr(base, "h"):
        return list(base.h)
    return list(base.layers)


def _hidden(output: Any) -> Any:
    return output[0] if isinstance(output, tuple) else output  # older transformers: a tuple


def sentence_tensors(batch: dict, row: int) -> dict:
    """One sentence of an apex-jax encoded batch cropped to its real length: [1, L] int64 tensors
    (the baselines run every sentence at its exact length: no padding)."""
    import torch

    L = int(np.asarray(batch["attention_mask"][row]).sum())
    return {k: torch.from_numpy(np.ascontiguousarray(np.asarray(v[row: row + 1, :L], np.int64)))
            for k, v in batch.items()}


class NoiseHooks:
    """Forward hooks adding σ_row · rms[i] · N(0, 1) to every block's output.

    `sigma` is a tensor [batch, 1, 1] of relative σ (None = clean); a block's noise std is
    σ_row x RMS(site), the per-site RMS `apex_jax.calibrate_rms` measures.
    """

    def __init__(self, model: Any, rms: Sequence[float]):
        layers = encoder_layers(model)
        if len(layers) != len(rms):
            raise ValueError(f"{len(rms)} RMS values for {len(layers)} layers.")
        self.rms = [float(r) for r in rms]
        self.sigma: Any = None
        self.output_types: set[str] = set()
        self.handles = [layer.register_forward_hook(self._hook(i)) for i, layer in enumerate(layers)]

    def _hook(self, i: int) -> Callable:
        import torch

        def hook(module: Any, inputs: Any, output: Any) -> Any:
            self.output_types.add(type(output).__name__)
            if self.sigma is None:
                return None
            h = _hidden(output)
            noisy = h + (self.sigma * self.rms[i]) * torch.randn_like(h)
            return (noisy,) + tuple(output[1:]) if isinstance(output, tuple) else noisy

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def clean_predictions(model: Any, batch: dict, rows: Iterable[int]) -> np.ndarray:
    """The HF model's clean predicted class per row (each at its exact length)."""
    return clean_logits(model, batch, rows).argmax(-1)


def clean_logits(model: Any, batch: dict, rows: Iterable[int]) -> np.ndarray:
    """The HF model's clean logits per row [len(rows), C]."""
    import torch

    with torch.inference_mode():
        return np.stack([model(**sentence_tensors(batch, r)).logits[0].numpy() for r in rows])


def noise_reference(model: Any, hooks: NoiseHooks, batch: dict,
                    jobs: Sequence[tuple[int, float]]) -> tuple[float, list[int]]:
    """APEX noise, reference form: one forward per (row, σ) job, batch 1.

    Returns:
        (seconds, predicted class per job).
    """
    import torch

    inputs, preds = {}, []
    with torch.inference_mode():
        t0 = time.perf_counter()
        for row, sigma in jobs:
            if row not in inputs:
                inputs[row] = sentence_tensors(batch, row)
            hooks.sigma = torch.full((1, 1, 1), float(sigma))
            preds.append(int(model(**inputs[row]).logits.argmax(-1)))
        seconds = time.perf_counter() - t0
    hooks.sigma = None
    return seconds, preds


def noise_best(model: Any, hooks: NoiseHooks, batch: dict, rows: Sequence[int], sigmas: Sequence[float],
               draws: int, batch_size: int, n_classes: int) -> tuple[float, np.ndarray]:
    """APEX noise, best form: per sentence, its (σ, draw) pairs in batches of `batch_size` rows at
    the sentence's exact length.

    Returns:
        (seconds, class counts [len(rows), len(sigmas), n_classes]).
    """
    import torch

    sig = np.repeat(np.asarray(sigmas, np.float32), draws)  # row order: σ-major, then draw
    counts = np.zeros((len(rows), len(sigmas), n_classes), np.int64)
    with torch.inference_mode():
        t0 = time.perf_counter()
        for j, r in enumerate(rows):
            x = sentence_tensors(batch, r)
            for s in range(0, len(sig), batch_size):
                part = sig[s: s + batch_size]
                b = len(part)
                hooks.sigma = torch.from_numpy(part).view(b, 1, 1)
                pred = model(**{k: v.expand(b, -1) for k, v in x.items()}).logits.argmax(-1).numpy()
                np.add.at(counts[j], ((s + np.arange(b)) // draws, pred), 1)
        seconds = time.perf_counter() - t0
    hooks.sigma = None
    return seconds, counts


def silence_reference(model: Any, batch: dict, masks: Sequence[np.ndarray],
                      jobs: Sequence[tuple[int, int, int]]) -> tuple[float, np.ndarray]:
    """SYNAPSE [CLS] silencing, reference form: one forward per (row, layer, mask index) job,
    batch 1, a hook registered for that forward zeroing the mask's neurons at position 0 of the
    layer's output. `masks[layer]` is [G, d].

    Returns:
        (seconds, predicted class per job).
    """
    import torch

    layers = encoder_layers(model)
    idx = {(i, g): torch.from_numpy(np.flatnonzero(masks[i][g]).astype(np.int64))
           for _, i, g in jobs}  # built before timing
    inputs = {r: sentence_tensors(batch, r) for r in sorted({j[0] for j in jobs})}
    preds = np.empty(len(jobs), np.int64)
    with torch.inference_mode():
        t0 = time.perf_counter()
        for n, (r, i, g) in enumerate(jobs):
            def hook(module: Any, inp: Any, output: Any, neurons: Any = idx[(i, g)]) -> None:
                _hidden(output)[:, 0, neurons] = 0.0  # in place: only the next layer reads it

            h = layers[i].register_forward_hook(hook)
            try:
                preds[n] = int(model(**inputs[r]).logits.argmax(-1))
            finally:
                h.remove()
        seconds = time.perf_counter() - t0
    return seconds, preds


class _KeepHook:
    """Multiplies the classifier token of a layer's output by the rows' keep vectors (1 - mask)."""

    def __init__(self, position: int = 0):
        self.keep: Any = None  # [B, d]
        self.position = position  # 0 ([CLS]) or -1 (a decoder's last token, exact-length input)

    def __call__(self, module: Any, inp: Any, output: Any) -> None:
        _hidden(output)[:, self.position, :] *= self.keep


def silence_best(model: Any, batch: dict, rows: Sequence[int], masks: Sequence[np.ndarray], batch_size: int,
                 layers_to_run: Sequence[int] | None = None,
                 position: int = 0) -> tuple[float, np.ndarray, np.ndarray]:
    """SYNAPSE silencing, best form: for every row and layer, all G masks of that layer stacked as
    a batch (`batch_size` at a time) at the sentence's exact length, one hook per (row, layer).

    Args:
        position: the classifier token: 0 for [CLS], -1 for a decoder's last real token.

    Returns:
        (seconds, predictions [len(rows), n_layers, G], top-2 logit margins of the same shape).
    """
    import torch

    layers = encoder_layers(model)
    run = list(range(len(masks))) if layers_to_run is None else list(layers_to_run)
    G = masks[0].shape[0]
    keep = [torch.from_numpy(np.ascontiguousarray(1.0 - np.asarray(m, np.float32))) for m in masks]
    preds = np.zeros((len(rows), len(masks), G), np.int64)
    margin = np.zeros((len(rows), len(masks), G), np.float32)
    hook = _KeepHook(position)
    with torch.inference_mode():
        t0 = time.perf_counter()
        for j, r in enumerate(rows):
            x = sentence_tensors(batch, r)
            for i in run:
                h = layers[i].register_forward_hook(hook)
                try:
                    for s in range(0, G, batch_size):
                        hook.keep = keep[i][s: s + batch_size]
                        b = hook.keep.shape[0]
                        logits = model(**{k: v.expand(b, -1) for k, v in x.items()}).logits
                        top2 = logits.topk(2, dim=-1).values
                        preds[j, i, s: s + b] = logits.argmax(-1).numpy()
                        margin[j, i, s: s + b] = (top2[:, 0] - top2[:, 1]).numpy()
                finally:
                    h.remove()
        seconds = time.perf_counter() - t0
    return seconds, preds, margin


def fastest_threads(measure: Callable[[], float]) -> tuple[int, dict[int, float]]:
    """Sets torch to the faster of {all cores, 1 thread} for `measure()` (forwards/s).

    On a shared 2-core machine OpenMP's threads can collapse when another process holds a core,
    so "all cores" is not always the baseline's best setting; the baseline gets its best.

    Returns:
        (the thread count now set, forwards/s by thread count).
    """
    import torch

    probe = {}
    for threads in sorted({os.cpu_count() or 1, 1}, reverse=True):
        torch.set_num_threads(threads)
        probe[threads] = measure()
    best = max(probe, key=probe.get)
    torch.set_num_threads(best)
    return best, probe
