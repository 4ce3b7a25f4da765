"""The one run-folder writer: every run layer opens, fills and completes its folder through it.

    run = runs.open_run(out, "apex", record, overwrite=False)   # run.json: "incomplete"
    run.write_rows("samples.csv", header, rows)                 # tables (atomic writes)
    summary = run.write_summary(results, label_space=space)     # summary.json
    run.write_timing({"seconds": ...})                          # timing.json
    run.complete()                                              # index.html, run.json: "complete"

`run.json` (written atomically, first with ``"status": "incomplete"``, last with
``"status": "complete"`` and the files written):

    {"format": 2, "command": "apex", "status": "complete",
     "settings": {...everything that determines the result: the model as given, its
                  model_params_sha256, the data as given, data_sha256, and the command's
                  settings (`apex_jax.settings`)...},
     "versions": {...}, "command_line": ["apex-jax", "apex", ...],
     "files": ["index.html", "samples.csv", "summary.json", ...],
     "sweep_checkpoints": ["<fingerprint>", ...]}

`summary.json` has the same shape for every command: ``{"kind", "settings", "label_space",
"versions", "results"}`` (deterministic: rerunning the same command rewrites it byte for byte;
timings go to timing.json). "command_line" is the command that wrote the run (set by the CLI
with `command_line(argv)`; `sys.argv` otherwise): a record, not part of the settings compared.

Rules (`open_run`), the same from Python and from the command line:
- no `run.json` and an empty or missing folder: a new run.
- `run.json` with the same command and settings (complete or not): the run resumes (the
  engine's sweep checkpoints) or recomputes, and rewrites its files.
- `run.json` with another command or other settings (another model's weights included):
  refused with :class:`~apex_jax.errors.RunExistsError` naming the differing keys, unless
  ``overwrite``: then the files listed in the old manifest and every sweep checkpoint of the
  folder are removed first (nothing else).
- a non-empty folder without `run.json` (not written by apex-jax, or by an older version):
  refused unless ``overwrite``, which removes only its sweep checkpoints.
- `out` that is a file, lies inside a file, or cannot be written: refused.
A killed run leaves ``"status": "incomplete"``: the folder is visibly not a finished run.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from apex_jax import fileio, run_page
from apex_jax.errors import InputError, RunExistsError
from apex_jax.run_files import CHECKPOINTS, MANIFEST, PAGE, SUMMARY

FORMAT = 2  # 2: settings from `apex_jax.settings`, summary.json for every command

__all__ = ["MANIFEST", "Run", "check_out", "command_line", "open_run", "read_manifest"]

_COMMAND_LINE: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("command_line", default=None)


@contextlib.contextmanager
def command_line(argv: list[str]):
    """Within the block, run.json records `argv` as the command that wrote the run."""
    token = _COMMAND_LINE.set([str(a) for a in argv])
    try:
        yield
    finally:
        _COMMAND_LINE.reset(token)


def check_out(out: str | Path) -> Path:
    """`out` as a Path if it can be a run folder: not a file, not inside a file, writable.
    Creates nothing."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is an existing file, not a folder; give a folder path "
                         "(new or a previous run of the same command)")
    parent = out
    while not parent.exists():
        if parent.parent == parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise InputError(f"--out {out} lies inside {parent}, which is a file; give a folder path")
    try:  # os.access says yes to root even on read-only file systems: try a real write
        fd, tmp = tempfile.mkstemp(prefix=".apex-jax-write-test.", dir=parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise InputError(f"--out {out}: {parent} is not writable ({e.strerror or e}); give a folder you can "
                         "write to") from None
    return out


def read_manifest(out: str | Path) -> dict | None:
    """The manifest of a run folder, None if it has none; InputError if it is unreadable."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    try:
        m = json.loads(path.read_text())
        if not isinstance(m, dict) or "settings" not in m:
            raise ValueError("no settings")
        return m
    except (OSError, ValueError) as e:
        raise InputError(f"{path} is unreadable or corrupt ({e}); pass --overwrite to replace the "
                         "run in that folder, or choose another --out") from None


def _differences(old: dict, new: dict) -> dict:
    keys = sorted(set(old) | set(new))
    return {k: (old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)}


def _short(v: Any) -> str:
    s = json.dumps(v) if not isinstance(v, str) else v
    return s if len(s) <= 40 else s[:18] + "…" + s[-18:]


def _remove_previous(out: Path, manifest: dict | None) -> list[str]:
    """Removes the files a previous run listed and every sweep checkpoint; returns what went."""
    removed = []
    for rel in (manifest or {}).get("files", []):
        p = (out / rel)
        try:
            p.resolve().relative_to(out.resolve())
        except ValueError:
            continue  # never outside the run folder
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
            removed.append(rel)
        elif p.exists() or p.is_symlink():
            p.unlink()
            removed.append(rel)
    if (out / CHECKPOINTS).is_dir():
        shutil.rmtree(out / CHECKPOINTS)
        removed.append(CHECKPOINTS)
    if (out / MANIFEST).exists():
        (out / MANIFEST).unlink()
    # folders left empty by the removal
    for d in sorted((p for p in out.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(d.iterdir()):
            d.rmdir()
    return removed


class Run:
    """An open run folder: `complete()` writes the final manifest."""

    def __init__(self, out: Path, command: str, settings: dict):
        self.out, self.command, self.settings = out, command, settings
        argv = _COMMAND_LINE.get()
        self.command_line = argv if argv is not None else [Path(sys.argv[0]).name, *sys.argv[1:]]

    def manifest(self, status: str, files: list[str] | None = None) -> dict:
        m = {"format": FORMAT, "command": self.command, "status": status,
             "settings": self.settings, "versions": fileio.versions(), "command_line": self.command_line}
        if files is not None:
            m["files"] = files
            root = self.out / CHECKPOINTS
            m["sweep_checkpoints"] = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        return m

    def write(self, status: str, files: list[str] | None = None) -> Path:
        return fileio.write_json(self.out / MANIFEST, self.manifest(status, files))

    # -------------------------------------------------------------- the run's outputs
    def write_csv(self, name: str, rows: Sequence[Mapping[str, Any]]) -> Path:
        """RUN/name from dict rows (columns in first-seen key order)."""
        return fileio.write_csv(self.out / name, rows)

    def write_rows(self, name: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
        """RUN/name from a header and value rows."""
        return fileio.write_rows(self.out / name, header, rows)

    def path(self, name: str) -> Path:
        """Where the run writes `name` itself (figures, probe checkpoints, a model folder)."""
        return self.out / name

    def write_summary(self, results: dict, *, label_space: Any = None, details: dict | None = None) -> dict:
        """summary.json: ``{"kind", "settings", "label_space", "versions", "results"}``.

        Args:
            results: the command's results (JSON-able; non-finite numbers become null).
            label_space: how the data's labels relate to the model's classes (a
                `apex_jax.data.LabelSpace` or its dict), when the run read labels.
            details: facts the run resolved beside its settings (e.g. each site's RMS, the
                engine's schedule), recorded under settings.
        """
        if label_space is not None and dataclasses.is_dataclass(label_space):
            label_space = dataclasses.asdict(label_space)
        summary = {"kind": self.command, "settings": {**self.settings, **(details or {})},
                   **({"label_space": label_space} if label_space is not None else {}),
                   "versions": fileio.versions(), "results": results}
        fileio.write_json(self.out / SUMMARY, summary)
        return summary

    def write_timing(self, timing: Mapping[str, Any]) -> dict:
        """timing.json: seconds and throughput (apart from summary.json, which stays deterministic)."""
        fileio.write_timing(self.out, timing)
        return dict(timing)

    def files(self) -> list[str]:
        """The run's outputs: the entries at the top of the folder (a folder such as probes/ or
        model/ as one entry), the manifest and sweep checkpoints excluded."""
        out = []
        for p in sorted(self.out.iterdir()):
            if p.name in (MANIFEST, CHECKPOINTS) or p.name.startswith("."):
                continue
            if p.is_file() or p.is_dir():
                out.append(p.name)
        return out

    def complete(self, log: Callable[[str], None] | None = print) -> Path:
        """Writes the run's page (index.html) and the final manifest (status "complete", the files
        written, the page included). Call it last. A page that cannot be built is reported through
        `log` (rebuild it with `apex-jax report`); it does not fail the run."""
        files = sorted({*self.files(), PAGE})
        manifest = self.manifest("complete", files)
        try:
            run_page.write_page(self.out, manifest)
        except Exception as e:  # noqa: BLE001 — the results are written; only their page failed
            files.remove(PAGE)
            manifest = self.manifest("complete", files)
            if log:
                log(f"warning: could not write {self.out / PAGE} ({type(e).__name__}: {e}); "
                    f"rebuild it with `apex-jax report {self.out}`")
        return fileio.write_json(self.out / MANIFEST, manifest)


def open_run(out: str | Path, command: str, settings: dict, *, overwrite: bool = False,
             log: Callable[[str], None] | None = print) -> Run:
    """Checks `out` against its manifest (see the module doc), prepares it, and writes the
    manifest with status "incomplete". Raises InputError when the folder holds another run."""
    out = check_out(out)
    settings = fileio.jsonable(settings)
    if out.is_dir():
        old = read_manifest(out) if not overwrite else None
        if overwrite:
            try:
                old = read_manifest(out)
            except InputError:
                old = None
            removed = _remove_previous(out, old)
            if removed and log:
                log(f"--overwrite: removed the previous run's {', '.join(removed)} from {out}")
        elif old is not None:
            diff = _differences({"command": old.get("command"), **old["settings"]},
                                {"command": command, **settings})
            if diff:
                named = "; ".join(f"{k}: {_short(a)} -> {_short(b)}" for k, (a, b) in diff.items())
                raise RunExistsError(
                    f"--out {out} holds another run ({old.get('command')}, {old.get('status')}) whose "
                    f"settings differ in {', '.join(diff)} ({named}); choose another --out, or pass "
                    "--overwrite (overwrite=True in Python) to replace that run")
        elif any(p for p in out.iterdir() if not p.name.startswith(".")):
            raise InputError(
                f"--out {out} is a non-empty folder without {MANIFEST} (not an apex-jax run of this "
                "version); choose another --out (new or empty), or pass --overwrite to write into it")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"--out {out} cannot be created ({e.strerror or e}); give a folder you can write to") from None
    run = Run(out, command, settings)
    run.write("incomplete")
    return run
