"""Finished pieces of a long claim run, kept in the work folder so that a run stopped part-way (a
killed process, the end of a working session) resumes where it stopped instead of starting over.

A piece is one self-contained part of a claim (SYNAPSE: a domain's layer-wise arm, one reference
run of a task), stored as its JSON result plus, optionally, the files it wrote into the report
folder (restored on reuse). Its key hashes the piece's name, its settings (which carry a
`content_digest` of the weights and data it runs on, so a fine-tune or data file replaced by hand
is not mistaken for the cached one) and the code that computes it: the git hashes of
`apex_jax/`, `scripts/` and `pyproject.toml` at HEAD (`code_trees`, over `provenance.CODE_PATHS`).
A commit that changes only reports, tests or documents keeps the pieces; any change of code makes new keys,
so a reused piece always comes from the code the summary names. From a tree with uncommitted code
changes nothing is stored or reused (its numbers would come from code no commit holds), and the
log says so once.

The stored JSON is a cache, not a result: NaN is kept as NaN so that a restored piece equals a
computed one. Every piece goes through that JSON round trip, computed or restored, so later code
sees the same types either way (numpy arrays become lists).

Example:
    >>> import tempfile, pathlib
    >>> store = Pieces(pathlib.Path(tempfile.mkdtemp()), fingerprint="abc", log=lambda message: None)
    >>> store.get("demo", {"k": 1}, lambda folder: {"x": 1.5})
    {'x': 1.5}
    >>> store.get("demo", {"k": 1}, lambda folder: {"x": 99.0}), store.restored
    ({'x': 1.5}, {'demo': 0.0})
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from apex_jax import fileio
from apex_jax.data import Dataset

from .provenance import CODE_PATHS, DIRTY, REPO, _git, code_commit

RESULT = "result.json"  # written last: a piece folder without it is unfinished and recomputed


def code_trees(repo: Path = REPO) -> str | None:
    """The git hashes of `CODE_PATHS` at HEAD (those it holds), joined; None outside git or when
    tracked files there have uncommitted changes (`provenance.code_commit` says "-dirty")."""
    commit = code_commit(repo)
    if commit is None or commit.endswith(DIRTY):
        return None
    return "+".join(t for t in (_git(["rev-parse", f"HEAD:{p}"], repo) for p in CODE_PATHS) if t) or None


def content_digest(*values: Any) -> str:
    """A short hash of what a piece computes on: parameter trees (every leaf's path, dtype, shape
    and bytes) and data sets (inputs, labels, ids, label names), in order.

    Example:
        >>> import numpy as np
        >>> a = {"w": np.zeros((2, 2), np.float32)}
        >>> content_digest(a) == content_digest({"w": np.zeros((2, 2), np.float32)})
        True
        >>> content_digest(a) == content_digest({"w": np.eye(2, dtype=np.float32)})
        False
    """
    h = hashlib.sha256()
    for i, value in enumerate(values):
        if isinstance(value, Dataset):
            value = {"dataset": (value.kind, list(value.inputs) if value.kind == "text" else value.inputs,
                                 value.labels, value.ids, list(value.label_names))}
        for path, leaf in jax.tree_util.tree_leaves_with_path(value):
            a = np.ascontiguousarray(np.asarray(leaf))
            h.update(f"{i}{jax.tree_util.keystr(path)}|{a.dtype}|{a.shape}|".encode())
            h.update(a.tobytes())
    return h.hexdigest()[:16]


def _plain(obj: Any) -> Any:
    """JSON's fallback for numpy values (arrays and numpy scalars -> Python lists / numbers)."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"a piece's result holds a {type(obj).__name__}, which JSON cannot store")


class Pieces:
    """The finished pieces of one claim under `root` (None: store nothing, reuse nothing).

    `restored` maps each piece reused in this process to the wall seconds it took when computed.
    """

    def __init__(self, root: Path | None, fingerprint: str | None, log: Callable[[str], Any] = print):
        self.root = root if fingerprint is not None else None
        self.fingerprint = fingerprint
        self.log = log
        self.restored: dict[str, float] = {}

    @classmethod
    def for_claim(cls, work: Path, claim: str, log: Callable[[str], Any] = print) -> "Pieces":
        """The store of claim `claim` under the work folder, keyed by the code now checked out."""
        fingerprint = code_trees()
        if fingerprint is None:
            log(f"[{claim}] uncommitted code changes (or no git): finished pieces are neither stored nor reused")
        return cls(Path(work) / claim / "pieces", fingerprint, log)

    def folder(self, name: str, settings: Any) -> Path | None:
        """Where piece `name` with `settings` (anything JSON can hold) lives; None when off."""
        if self.root is None:
            return None
        blob = json.dumps({"name": name, "settings": settings, "code": self.fingerprint}, sort_keys=True,
                          default=_plain)
        return self.root / f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"

    def get(self, name: str, settings: Any, compute: Callable[[Path | None], dict],
            files: Path | None = None) -> dict:
        """Piece `name`'s result: restored when a finished copy exists (its files copied back into
        `files`), else computed and stored. `compute(folder)` writes the piece's files into
        `folder` (a fresh one; None when `files` is None), which are then copied into `files`."""
        where = self.folder(name, settings)
        if where is not None and (where / RESULT).exists():
            stored = json.loads((where / RESULT).read_text())
            if files is not None and (where / "files").exists():
                shutil.copytree(where / "files", files, dirs_exist_ok=True)
            self.restored[name] = stored["seconds"]
            self.log(f"[pieces] {name}: restored (computed in {stored['seconds']} s by this code)")
            return stored["result"]
        with tempfile.TemporaryDirectory(prefix="apex-jax-piece-") as tmp:
            staging = None if files is None else Path(tmp)
            t0 = time.perf_counter()
            text = json.dumps(compute(staging), default=_plain)  # NaN stays NaN: a cache, not a result
            seconds = round(time.perf_counter() - t0, 1)
            if staging is not None:
                shutil.copytree(staging, files, dirs_exist_ok=True)
            if where is not None:
                if staging is not None:
                    if (where / "files").exists():  # an unfinished earlier copy of this piece's own files
                        shutil.rmtree(where / "files")
                    shutil.copytree(staging, where / "files")
                fileio.write_text(where / RESULT, json.dumps({"seconds": seconds, "result": json.loads(text)}))
        return json.loads(text)

    def timing(self) -> dict:
        """For a summary's `timing`: the pieces this process restored and their computed seconds."""
        return {"restored_pieces": sorted(self.restored), "restored_seconds": round(sum(self.restored.values()), 1)}
