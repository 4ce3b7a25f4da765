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
- one writer at a time: the folder is locked (RUN/.apex-jax.lock, released when the run ends or
  its process dies); a second writer is refused with the holder's pid, host and command.
- a run owns exactly the entries it wrote: each is claimed in run.json before it is written
  (so a killed run's files are known too); nothing else is ever listed, removed or written over.
- `out` must lie apart from the run's inputs (model folder, data file, probe run): not one of
  them, not inside one, not containing one.
- no `run.json` and an empty or missing folder: a new run.
- `run.json` with the same command and settings (complete or not): the run resumes (the
  engine's sweep checkpoints) or recomputes, and rewrites its files. Settings compare by content:
  the model, data and probe run are compared by their sha256, not by how their path was spelled.
- `run.json` with another command or other settings (another model's weights included):
  refused with :class:`~apex_jax.errors.RunExistsError` naming the differing keys, unless
  ``overwrite``: then the entries the old run owned and its sweep checkpoints are removed first.
- a folder holding anything its run did not write (or that no run wrote): refused, with or
  without ``overwrite``; choose a new or empty folder.
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
from apex_jax.locks import LOCK, FolderLock
from apex_jax.run_files import CHECKPOINTS, MANIFEST, OUTPUTS, PAGE, SUMMARY, TIMING

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
    out = Path(out).expanduser()  # a quoted '~/x' means the home folder, as the shell would
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


# Settings recorded for people but not compared: the same weights or examples spelled as another
# path (a symlink, a trailing slash, relative from elsewhere) are the same run; their sha256 decide.
RECORD_ONLY = ("model", "data", "probe")


def _entries(out: Path) -> list[str]:
    """The visible top-level entries of a folder (hidden ones, such as the lock, left out)."""
    return sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) if out.is_dir() else []


def _owned(manifest: dict | None) -> set[str]:
    """What a previous run wrote: the files its manifest lists, its manifest and its checkpoints."""
    listed = {str(f) for f in (manifest or {}).get("files", []) if "/" not in str(f) and str(f) not in ("", ".", "..")}
    if manifest is not None and manifest.get("format", 1) < 2:
        listed &= OUTPUTS  # format 1 listed every entry of the folder, a user's files too
    return listed | ({MANIFEST, CHECKPOINTS} if manifest is not None else set())


def _remove_previous(out: Path, manifest: dict) -> list[str]:
    """Removes the entries a previous run listed as its own, its sweep checkpoints and its
    manifest (nothing else); returns what went."""
    removed = []
    for rel in sorted(_owned(manifest) - {MANIFEST}):
        p = out / rel
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
            removed.append(rel)
        elif p.exists() or p.is_symlink():
            p.unlink()
            removed.append(rel)
    if (out / MANIFEST).exists():
        (out / MANIFEST).unlink()
    return removed


class Run:
    """An open run folder, locked for its one writer (see the module doc).

    Every entry the run writes is claimed first (`write_*`, `path`), and the manifest lists
    exactly the claimed entries, so a later `--overwrite` removes only what a run wrote itself.
    Use it as a context manager: leaving the block releases the lock; an exception leaves the
    manifest "incomplete" (rerun to resume).
    """

    def __init__(self, out: Path, command: str, settings: dict, lock: FolderLock, owned: set[str] = frozenset(),
                 created: Sequence[Path] = ()):
        self.out, self.command, self.settings, self._lock = out, command, settings, lock
        self.created = list(created)  # the folders open_run made for this run, deepest first
        argv = _COMMAND_LINE.get()
        self.command_line = argv if argv is not None else [Path(sys.argv[0]).name, *sys.argv[1:]]
        self.claimed = set(owned) - {MANIFEST, CHECKPOINTS}  # a resumed run keeps what it wrote before

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.release()
        if exc_type is not None and issubclass(exc_type, InputError) and self.created and not self._wrote_any():
            # refused inside the run (a broken model, a diverged training) before any output: like a
            # run refused before it starts, it leaves no folder (this run made it; all in it is its own)
            shutil.rmtree(self.out, ignore_errors=True)
            for d in self.created[1:]:
                if d.is_dir() and not any(d.iterdir()):
                    d.rmdir()

    def _wrote_any(self) -> bool:
        """Whether any claimed entry holds a file (a folder made for checkpoints but still empty
        holds no output)."""
        for name in self.files():
            p = self.out / name
            if not p.is_dir() or any(q.is_file() for q in p.rglob("*")):
                return True
        return False

    def release(self) -> None:
        """Releases the folder's lock (also when the process ends)."""
        self._lock.release()

    def manifest(self, status: str, files: list[str] | None = None) -> dict:
        root = self.out / CHECKPOINTS
        return {"format": FORMAT, "command": self.command, "status": status,
                "settings": self.settings, "versions": fileio.versions(), "command_line": self.command_line,
                "files": self.files() if files is None else files,
                "sweep_checkpoints": sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []}

    def write(self, status: str, files: list[str] | None = None) -> Path:
        return fileio.write_json(self.out / MANIFEST, self.manifest(status, files))

    def claim(self, *names: str) -> None:
        """Records top-level entries as this run's own before it writes them (the manifest says
        so at once, so even a killed run's files are known to be its own)."""
        new = {n for n in names if n not in self.claimed}
        for n in new:
            if "/" in n or n.startswith(".") or n in (MANIFEST, CHECKPOINTS):
                raise ValueError(f"a run claims top-level entries only; got {n!r}")
        if new:
            self.claimed |= new
            self.write("incomplete", sorted(self.claimed))

    # -------------------------------------------------------------- the run's outputs
    def path(self, name: str) -> Path:
        """RUN/name, claimed: where the run writes a figure, a checkpoint or model folder itself."""
        self.claim(name)
        return self.out / name

    def write_csv(self, name: str, rows: Sequence[Mapping[str, Any]]) -> Path:
        """RUN/name from dict rows (columns in first-seen key order)."""
        return fileio.write_csv(self.path(name), rows)

    def write_rows(self, name: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
        """RUN/name from a header and value rows."""
        return fileio.write_rows(self.path(name), header, rows)

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
        fileio.write_json(self.path(SUMMARY), summary)
        return summary

    def write_timing(self, timing: Mapping[str, Any]) -> dict:
        """timing.json: seconds and throughput (apart from summary.json, which stays deterministic)."""
        self.claim(TIMING)
        fileio.write_timing(self.out, timing)
        return dict(timing)

    def files(self) -> list[str]:
        """The entries this run wrote that exist (a folder such as probes/ or model/ is one entry)."""
        return sorted(n for n in self.claimed if (self.out / n).exists() or (self.out / n).is_symlink())

    def complete(self, log: Callable[[str], None] | None = print) -> Path:
        """Writes the run's page (index.html) and the final manifest (status "complete", the files
        written, the page included), then releases the lock. Call it last. A page that cannot be
        built is reported through `log` (rebuild it with `apex-jax report`); it does not fail the run."""
        self.claim(PAGE)
        files = self.files()
        manifest = self.manifest("complete", sorted({*files, PAGE}))
        fileio.write_json(self.out / MANIFEST, manifest)  # first, so the page shows the final file
        try:
            run_page.write_page(self.out, manifest)
        except Exception as e:  # noqa: BLE001 — the results are written; only their page failed
            manifest = self.manifest("complete", [f for f in files if f != PAGE])
            if log:
                log(f"warning: could not write {self.out / PAGE} ({type(e).__name__}: {e}); "
                    f"rebuild it with `apex-jax report {self.out}`")
        path = fileio.write_json(self.out / MANIFEST, manifest)
        self.release()
        return path


def check_apart(out: Path, inputs: Sequence[Any]) -> None:
    """InputError when `out` is, contains or lies inside one of the run's inputs (a model folder,
    a data file, a probe run): a run must never write over, or (with --overwrite) delete, what it
    reads. Inputs that are not paths on disk (a built-in name, an in-memory object) are skipped."""
    target = out.resolve()
    for item in inputs:
        if not isinstance(item, (str, Path)) or not Path(item).exists():
            continue
        src = Path(item).resolve()
        how = ("is" if src == target else "contains" if src.is_relative_to(target)
               else "lies inside" if target.is_relative_to(src) else None)
        if how:
            raise InputError(f"--out {out} {how} the input {item}; a run never writes where it reads: choose an "
                             "--out apart from the model, the data and the probe run")


def _created_dirs(out: Path) -> list[Path]:
    """The folders `out.mkdir(parents=True)` would create, deepest first."""
    missing, p = [], out
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    return missing


def open_run(out: str | Path, command: str, settings: dict, *, overwrite: bool = False,
             log: Callable[[str], None] | None = print, inputs: Sequence[Any] = ()) -> Run:
    """Checks `out` (see the module doc), locks it for this run, prepares it, and writes the
    manifest with status "incomplete". Use the returned `Run` as a context manager.

    Args:
        out: the run folder.
        command: the command's name ("apex", ...).
        settings: what determines the result (the settings record, model and data sha256).
        overwrite: replace the run the folder holds (only its own files are removed).
        log: where the overwrite report goes.
        inputs: the paths the run reads (model folder, data file, probe run): `out` must lie
            apart from all of them.

    Raises:
        InputError: `out` cannot be a run folder, overlaps an input, holds files no run wrote,
            or is being written by another run; RunExistsError: it holds another run and
            `overwrite` is False.
    """
    out = check_out(out)
    check_apart(out, inputs)
    settings = fileio.jsonable(settings)
    created = _created_dirs(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"--out {out} cannot be created ({e.strerror or e}); give a folder you can write to") from None
    lock_is_new = not (out / LOCK).exists()
    lock = FolderLock(out)
    lock.acquire()  # refused: the folder is the holder's, left as it is
    try:
        try:
            old = read_manifest(out)
        except InputError:
            if not overwrite:
                raise
            old = {"settings": None, "files": []}  # corrupt: it owned its manifest and checkpoints only
        owned = _owned(old)
        foreign = [e for e in _entries(out) if e not in owned]
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            what = "no apex-jax run wrote" if old is None else "the run in it did not write"
            raise InputError(f"--out {out} holds files {what} ({shown}); apex-jax never deletes or writes over "
                             "files it did not write: choose another --out (new or empty)")
        same = old is not None and old.get("settings") is not None and not _differences(
            _compared(old.get("command"), old["settings"]), _compared(command, settings))
        if old is not None and not same and not overwrite:
            diff = _differences(_compared(old.get("command"), old["settings"]), _compared(command, settings))
            named = "; ".join(f"{k}: {_short(a)} -> {_short(b)}" for k, (a, b) in diff.items())
            raise RunExistsError(
                f"--out {out} holds another run ({old.get('command')}, {old.get('status')}) whose "
                f"settings differ in {', '.join(diff)} ({named}); choose another --out, or pass "
                "--overwrite (overwrite=True in Python) to replace that run")
        if old is not None and overwrite:
            removed = _remove_previous(out, old)
            if removed and log:
                log(f"--overwrite: removed the previous run's {', '.join(removed)} from {out}")
        run = Run(out, command, settings, lock, owned if (same and not overwrite) else set(), created)
        lock.record_holder(run.command_line)
        run.write("incomplete")
        return run
    except BaseException:
        lock.release()
        if lock_is_new:
            (out / LOCK).unlink(missing_ok=True)
        for d in created:
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        raise


def _compared(command: Any, settings: dict) -> dict:
    """What decides whether two runs are the same: the command and every setting but how the
    inputs were spelled (`RECORD_ONLY`; their sha256 are compared)."""
    return {"command": command, **{k: v for k, v in settings.items() if k not in RECORD_ONLY}}
