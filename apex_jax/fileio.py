"""Run-folder files, one policy each: JSON, CSV, figures, timing, software versions.

Every writer here is atomic: it writes a temporary file in the destination folder and renames it
over the target (`os.replace`), so an interrupted run never leaves a half-written table, JSON or
PNG behind — a reader sees the old file or the new one.

Non-finite numbers.
- JSON: NaN, +inf and -inf are written as `null`. The result is always valid (strict) JSON; a
  reader that needs to tell "undefined" from "unbounded" reads the field's documentation (e.g.
  APEX's escape σ is `null` for inputs that never escape on the grid).
- CSV: NaN is an empty cell (the usual "missing value"), ±inf is `inf` / `-inf`, other floats
  have 6 significant digits.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import math
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from apex_jax.errors import ResourceError, resource_error
from apex_jax.version import __version__

import numpy as np

__all__ = ["atomic_path", "check_room", "human_size", "jsonable", "pyplot", "save_figure", "versions",
           "write_csv", "write_json", "write_rows", "write_text", "write_timing"]


# ----------------------------------------------------------------------------- atomic files
@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed over `path` when the block succeeds.

    The temporary file keeps `path`'s suffix (matplotlib picks the format from it) and gets the
    permissions of a newly created file (mkstemp's are owner-only). On an exception the
    temporary file is removed and `path` is left as it was; a refused write (disk full,
    read-only, path too long, ...) is raised as a `ResourceError` naming `path`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_UMASK)
        os.close(fd)
    except OSError as e:
        raise resource_error(e, path) from e
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, ResourceError):
            raise resource_error(e, path) from e
        raise


def _read_umask() -> int:
    """The process's umask, read once at import: setting and restoring it later would race with
    threads (orbax's) creating files meanwhile."""
    try:
        with open("/proc/self/status") as f:  # Linux: readable without changing it
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def check_room(folder: str | Path, nbytes: int = 0) -> None:
    """Refuses, before it starts, a write of about `nbytes` into `folder` that cannot succeed.

    A checkpoint or model written into a full or read-only file system fails deep inside orbax or
    safetensors (with pages of background-thread tracebacks); checking first gives one line.

    Raises:
        ResourceError: the folder's file system is read-only, the folder is not writable, or it
            has less than about `nbytes` (plus 10% and 64 KiB) free.
    """
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise resource_error(OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(probe)))
    if not os.access(probe, os.W_OK):
        read_only = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
        code = errno.EROFS if read_only else errno.EACCES
        raise resource_error(OSError(code, os.strerror(code), str(folder)))
    free = shutil.disk_usage(probe).free
    need = int(nbytes * 1.1) + (64 << 10)  # the writers' own metadata, a little slack
    if nbytes and free < need:
        raise ResourceError(f"no space left on the device holding {folder}: the next write needs about "
                            f"{human_size(need)} and {human_size(free)} are free; free space there or choose another "
                            "folder, then rerun the same command (it resumes from what is saved)",
                            errno.ENOSPC, str(folder))


def human_size(n: float) -> str:
    """A byte count for people: "512 bytes", "8.1 KiB", "346.6 MiB", "2.1 GiB"."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def write_text(path: str | Path, text: str) -> Path:
    """Writes `text` (UTF-8) to `path` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- JSON
def jsonable(obj: Any) -> Any:
    """`obj` with numpy scalars/arrays as Python values, tuples as lists, keys as strings and
    every non-finite float (NaN, ±inf) as None."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def write_json(path: str | Path, obj: Any, sort_keys: bool = False) -> Path:
    """Writes `obj` as indented, strict JSON (non-finite numbers as null; see the module doc)."""
    return write_text(path, json.dumps(jsonable(obj), indent=2, sort_keys=sort_keys, allow_nan=False))


def write_timing(folder: str | Path, timing: Mapping[str, Any]) -> Path:
    """Writes a run's `timing.json`. Timings live apart from `summary.json` so that rerunning the
    same command rewrites summary.json byte for byte."""
    return write_json(Path(folder) / "timing.json", timing)


# ----------------------------------------------------------------------------- CSV
def _cell(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if math.isnan(f):
            return ""
        return ("inf" if f > 0 else "-inf") if math.isinf(f) else f"{f:.6g}"
    if isinstance(v, (list, tuple, np.ndarray)):  # a list in one cell: JSON, floats as strings
        return json.dumps([_cell(x) if isinstance(x, float) else x for x in np.asarray(v).tolist()])
    return v


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Writes rows of dicts as a table; the header is the union of their keys in first-seen
    order (a missing key is an empty cell). Cells follow the module's number policy."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    return write_rows(path, keys, [[r.get(k, "") for k in keys] for r in rows])


def write_rows(path: str | Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    """Writes a table given its header and rows of values in header order."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            if len(r) != len(header):
                raise ValueError(f"a row of {len(r)} cells for a header of {len(header)} columns in {path}.")
            w.writerow([_cell(v) for v in r])
    return Path(path)


# ----------------------------------------------------------------------------- figures
_PYPLOT = None


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (set up once, imported on first use)."""
    global _PYPLOT
    if _PYPLOT is None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        _PYPLOT = plt
    return _PYPLOT


FIGURE_DPI = 110  # PNG pixels per inch of figure size: a page lays figures out at <= 1200 px


def save_figure(fig, path: str | Path, dpi: int = FIGURE_DPI, description: str | None = None) -> Path:
    """Writes a figure as PNG (tight layout) atomically and closes it. `description` goes into the
    PNG's Description text chunk (the run page adds it to the figure's caption)."""
    path = Path(path)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", metadata={"Description": description} if description else None)
    pyplot().close(fig)
    return path


# ----------------------------------------------------------------------------- versions
def versions() -> dict:
    """apex-jax, JAX and Flax versions, Python, devices and the machine (deterministic per machine)."""
    import flax  # imported on use: writing a CSV needs neither
    import jax

    return {"apex_jax": __version__, "jax": jax.__version__, "flax": flax.__version__,
            "python": platform.python_version(), "devices": [str(d) for d in jax.devices()],
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores"}
