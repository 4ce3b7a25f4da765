"""Resumable sweeps: the fingerprint of everything that determines a result, and its checkpoints.

A sweep with `run_dir` checkpoints (counts, margin and KL sums, finished units) after every chunk under
`run_dir/sweep-checkpoints/<fingerprint>/`, beside `settings.json` (what the fingerprint covers,
readable) — `complete: true` once the sweep has finished, so a rerun of the same sweep restores
its counts and computes nothing. The fingerprint covers the parameters (content hash), the
architecture, sites, the perturbation's tag and function name, inputs, ids, grid, K, seed,
draw offset, micro-batch, `KERNEL_VERSION` and, where they differ from a default CPU setup, the
numerics (`numerics`: XLA flags, backend, matmul precision; the sweep puts them in its settings):
a sweep never resumes counts of another model, other settings or other float rounding. Several
fingerprints may share a run folder (e.g. the rounds of a bisection);
`checkpoints_in(run_dir)` lists them and `differences(a, b)` names what differs, so a run layer
can refuse a reused folder with a message instead of mixing runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils

from apex_jax.checkpoints import Checkpoints

# An integer, bumped (1, 2, 3, ...) whenever a kernel's numerics change, i.e. a kernel change
# alters counts or scores for the same settings (old checkpoints then miss).
# 3: the state holds margin and KL sums beside the counts (and the length buckets default to
# `plan.PAD_MULTIPLE` = 8 tokens; 16 before).
# 4: a draw with non-finite logits counts in no class and adds no score (it counted as class 0).
KERNEL_VERSION = 4
CHECKPOINTS = "sweep-checkpoints"
SETTINGS_FILE = "settings.json"


def params_digest(params: Any) -> str:
    """sha256 over every leaf's path, dtype, shape and bytes (host copy): a content hash.

    ~0.1 s for MiniLM's 22.7M float32 parameters on one CPU core (see the engine's report).
    """
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        a = np.ascontiguousarray(np.asarray(jax.device_get(leaf)))
        h.update(f"{jax.tree_util.keystr(path)}|{_dtype_name(a)}|{a.shape}|".encode())
        h.update(_raw_bytes(a))
    return h.hexdigest()


def arrays_digest(*trees: Any) -> str:
    """sha256 over the leaves of `trees` (dtype, shape and bytes)."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(trees):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{_dtype_name(a)}|{a.shape}|".encode())
        h.update(_raw_bytes(a))
    return h.hexdigest()


def _dtype_name(a: np.ndarray) -> str:
    # bfloat16 (ml_dtypes) has the anonymous type string '<V2'; its name tells it apart
    return a.dtype.str if a.dtype.kind != "V" else a.dtype.name


def _raw_bytes(a: np.ndarray) -> memoryview:
    # ml_dtypes arrays (bfloat16) do not export the buffer protocol; their bytes as uint8 do
    return a.view(np.uint8).data if a.dtype.kind == "V" else a.data


# XLA flags that cannot change a result: the host device count (counts are invariant to it),
# dumps, profiles and logging. Any other flag in XLA_FLAGS (the oneDNN matmul path, fast math,
# fusion choices, ...) may change float rounding and so the counts at near-ties.
NEUTRAL_XLA_FLAGS = ("xla_force_host_platform_device_count", "xla_dump", "xla_hlo_profile", "xla_log")


def numerics(environ: dict | None = None) -> dict:
    """What besides the settings decides a sweep's float rounding, as far as it is not the default:
    `xla_flags` (sorted, neutral ones left out), `platform` unless "cpu", and
    `matmul_precision` when `jax_default_matmul_precision` is set. {} on a default CPU setup,
    so default sweeps keep the fingerprints of earlier versions.

    XLA reads XLA_FLAGS when the backend starts: set them before the first JAX computation (the
    environment is read here, when the sweep is described).

    Example:
        >>> numerics({"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
        {}
        >>> numerics({"XLA_FLAGS": "--xla_cpu_use_onednn=true --xla_dump_to=/tmp/d"})
        {'xla_flags': ['--xla_cpu_use_onednn=true']}
    """
    environ = os.environ if environ is None else environ
    flags = sorted(f for f in environ.get("XLA_FLAGS", "").split()
                   if not f.lstrip("-").startswith(NEUTRAL_XLA_FLAGS))
    out: dict[str, Any] = {"xla_flags": flags} if flags else {}
    if jax.default_backend() != "cpu":
        out["platform"] = jax.default_backend()
    if jax.config.jax_default_matmul_precision is not None:
        out["matmul_precision"] = str(jax.config.jax_default_matmul_precision)
    return out


def describe(settings: dict, *, config: Any, params: Any, perturb: Any, ids: Any, inputs: dict,
             grid: Any) -> dict:
    """The JSON description of a sweep that its fingerprint hashes: `settings` plus digests of
    the parameters, inputs, ids and grid, the architecture and the kernel version."""
    return {
        **settings,
        "kernel_version": KERNEL_VERSION,
        "architecture": dataclasses.asdict(config),
        "params_sha256": params_digest(params),
        "perturb_function": f"{getattr(perturb, '__module__', '')}.{getattr(perturb, '__qualname__', type(perturb).__name__)}",
        "ids_sha256": arrays_digest(np.asarray(ids, np.int64)),
        "inputs_sha256": arrays_digest({k: np.asarray(v) for k, v in inputs.items()}),
        "grid_sha256": arrays_digest(grid),
    }


def fingerprint(description: dict) -> str:
    """16 hex digits of sha256 over the description's canonical JSON."""
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16]


def differences(a: dict, b: dict) -> dict:
    """{key: (a's value, b's value)} for every key whose values differ (missing = None)."""
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if k != "complete" and a.get(k) != b.get(k)}


class CheckpointInfo(NamedTuple):
    """One sweep checkpoint folder of a run folder."""

    fingerprint: str
    folder: Path
    settings: dict  # the sweep's description (see `describe`); {} if settings.json is missing
    complete: bool  # the sweep finished


def checkpoints_in(run_dir: str | Path) -> list[CheckpointInfo]:
    """The sweep checkpoints stored in `run_dir` (sorted by fingerprint)."""
    root = Path(run_dir) / CHECKPOINTS
    out = []
    for folder in sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []:
        try:
            settings = json.loads((folder / SETTINGS_FILE).read_text())
        except (OSError, ValueError):
            settings = {}
        out.append(CheckpointInfo(folder.name, folder, settings, bool(settings.get("complete"))))
    return out


class Store:
    """The checkpoints of one sweep: a state dict of arrays — counts [n, G, C] int64, margin
    and KL sums [n, G] float64, done units [units] bool (see engine/sweep.py).

    Multi-process sweeps: every process holds the full counts (they are all-gathered), so all
    of them save the same state through orbax, which writes it once and finalizes a step only
    when every process is done; `run_dir` must then be on storage all processes see. Counts do
    not depend on the process or device count, so a rerun with another process count resumes
    correctly too. Processes agree on the step to restore (`agree_on_step`): a process that
    does not see a step makes all of them start over rather than diverge.
    """

    def __init__(self, run_dir: str | Path, description: dict, process_index: int = 0):
        self.description = description
        self.fingerprint = fingerprint(description)
        self.folder = Path(run_dir).absolute() / CHECKPOINTS / self.fingerprint
        self.primary = process_index == 0
        self.checkpoints = Checkpoints(self.folder, max_to_keep=1)
        self.step = self.checkpoints.latest_step() or 0
        self._write_settings(complete=False, only_if_missing=True)

    def exists(self) -> bool:
        return self.checkpoints.latest_step() is not None

    def restore(self, like: dict[str, np.ndarray], step: int | None = None) -> dict[str, np.ndarray]:
        """The saved state of `step` (default: the latest) with `like`'s keys, shapes and
        dtypes (bit-exact, so resumed float sums continue exactly); raises `CheckpointError`
        naming the folder if it is corrupt or holds other arrays."""
        state, _ = self.checkpoints.restore(like, step=step)
        return {k: np.array(v) for k, v in state.items()}  # writable host copies

    def save(self, state: dict[str, np.ndarray]) -> None:
        """Writes `state` (it must hold "done", the finished units) as the next step."""
        self.step += 1
        self.checkpoints.save(self.step, state,
                              {"fingerprint": self.fingerprint, "units_done": int(state["done"].sum())})

    def mark_complete(self) -> None:
        """Records that the sweep finished (its last step holds the final counts)."""
        self._write_settings(complete=True)

    def _write_settings(self, complete: bool, only_if_missing: bool = False) -> None:
        path = self.folder / SETTINGS_FILE
        if not self.primary or (only_if_missing and path.exists()):
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")  # atomic: a kill never leaves half a file
        tmp.write_text(json.dumps({**self.description, "complete": complete}, indent=1, sort_keys=True))
        os.replace(tmp, path)


def same_on_every_process(value: str, what: str, fix: str) -> None:
    """Raises `ValueError` naming `what` unless every process passes the same `value` (a
    56-bit hash of it is all-gathered). `fix` says what to make equal. Single process: no-op."""
    if jax.process_count() == 1:
        return
    # int32 words: without jax_enable_x64 the gather would truncate an int64
    h = hashlib.sha256(value.encode()).hexdigest()
    digest = np.array([int(h[i:i + 7], 16) for i in (0, 7)], np.int32)  # 56 bits
    got = np.asarray(multihost_utils.process_allgather(digest)).reshape(-1, 2)
    agree = (got == digest).all(axis=1)
    if not agree.all():
        raise ValueError(f"the processes of this sweep differ in their {what}: start every process "
                         f"with the same {fix}. This process has {value!r}; "
                         f"{int(agree.sum())} of {agree.size} processes agree with it.")


def agree_on_step(store: Store) -> tuple[int, int]:
    """(step to restore, highest step any process sees): 0 unless every process sees the same
    latest step (see `Store`). Single process: (latest, latest). Raises `ValueError` if the
    processes' fingerprints differ (they would otherwise checkpoint apart and mix numerics)."""
    latest = store.checkpoints.latest_step() or 0
    if jax.process_count() == 1:
        return latest, latest
    # every process must describe the same sweep, or each would save its own folder
    same_on_every_process(store.fingerprint, f"checkpoint fingerprint (this process's description: "
                          f"{store.folder / SETTINGS_FILE})", "model, inputs and settings")
    steps = np.asarray(multihost_utils.process_allgather(np.int32(latest)))
    return (latest if (steps == latest).all() else 0), int(steps.max())
