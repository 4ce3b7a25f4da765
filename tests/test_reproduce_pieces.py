"""Finished pieces of a claim run (`reproduce.pieces`): restored equal to computed, files copied
back, nothing kept from uncommitted code, unfinished pieces recomputed, new code -> new keys."""

from __future__ import annotations

import json
import math
import subprocess

import numpy as np

from reproduce import pieces
from apex_jax.data import Dataset
from reproduce.pieces import RESULT, Pieces, content_digest


def _store(tmp_path, fingerprint="trees-a"):
    return Pieces(tmp_path / "pieces", fingerprint, log=lambda message: None)


def test_restored_piece_equals_computed_and_brings_back_its_files(tmp_path):
    calls = []

    def compute(folder):
        calls.append(folder)
        (folder / "table.csv").write_text("a,b\n1,2\n")
        return {"x": np.float32(0.5), "v": np.arange(3), "nan": float("nan"), 7: (1, 2)}

    store = _store(tmp_path)
    out = tmp_path / "report"
    first = store.get("run", {"k": 1}, compute, files=out)
    assert (out / "table.csv").read_text() == "a,b\n1,2\n"
    (out / "table.csv").unlink()
    second = store.get("run", {"k": 1}, lambda folder: {"x": 99}, files=out)
    assert len(calls) == 1 and (out / "table.csv").read_text() == "a,b\n1,2\n"
    # the same types either way: numpy -> lists and floats, int keys -> strings, NaN kept
    assert first.keys() == second.keys() == {"x", "v", "nan", "7"}
    assert first["v"] == second["v"] == [0, 1, 2] and first["x"] == second["x"] == 0.5
    assert math.isnan(first["nan"]) and math.isnan(second["nan"]) and second["7"] == [1, 2]
    assert list(store.restored) == ["run"] and store.timing()["restored_pieces"] == ["run"]


def test_other_settings_or_code_make_a_new_piece(tmp_path):
    store = _store(tmp_path)
    store.get("run", {"k": 1}, lambda folder: {"x": 1})
    assert store.get("run", {"k": 2}, lambda folder: {"x": 2}) == {"x": 2}
    assert _store(tmp_path, "trees-b").get("run", {"k": 1}, lambda folder: {"x": 3}) == {"x": 3}
    assert store.get("run", {"k": 1}, lambda folder: {"x": 4}) == {"x": 1}


def test_unfinished_piece_is_recomputed_and_off_store_keeps_nothing(tmp_path):
    store = _store(tmp_path)
    where = store.folder("run", {"k": 1})
    (where / "files").mkdir(parents=True)
    (where / "files" / "stale.csv").write_text("half-written")  # a piece killed before its result
    out = tmp_path / "report"

    def compute(folder):
        (folder / "new.csv").write_text("1")
        return {"x": 5}

    assert store.get("run", {"k": 1}, compute, files=out) == {"x": 5}
    assert sorted(p.name for p in (where / "files").iterdir()) == ["new.csv"]
    assert json.loads((where / RESULT).read_text())["result"] == {"x": 5}
    off = Pieces(tmp_path / "off", None, log=lambda message: None)
    assert off.get("run", {}, lambda folder: {"x": 1}) == {"x": 1} and not (tmp_path / "off").exists()
    assert off.get("run", {}, lambda folder: {"x": 2}) == {"x": 2}


def test_code_trees_follow_commits_of_code_only(tmp_path):
    repo = tmp_path / "repo"
    for d in ("apex_jax", "scripts", "reports"):
        (repo / d).mkdir(parents=True)
        (repo / d / "f.py").write_text("1\n")

    def git(*args):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)

    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    before = pieces.code_trees(repo)
    assert before is not None and before.count("+") == 1
    (repo / "reports" / "f.py").write_text("2\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "reports only")
    assert pieces.code_trees(repo) == before  # a reports commit keeps the pieces
    (repo / "scripts" / "f.py").write_text("2\n")
    assert pieces.code_trees(repo) is None  # uncommitted code: nothing stored or reused
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "code")
    assert pieces.code_trees(repo) not in (None, before)
    assert pieces.code_trees(tmp_path) is None  # not a git checkout


def test_content_digest_sees_every_value_path_and_row():
    params = {"a": np.arange(4, dtype=np.float32), "b": {"c": np.ones((2, 2), np.float32)}}
    data = Dataset("d", "text", ["one", "two"], np.array([0, 1]), ("neg", "pos"))
    base = content_digest(params, data)
    assert base == content_digest({"b": {"c": np.ones((2, 2), np.float32)}, "a": np.arange(4, dtype=np.float32)},
                                  Dataset("d", "text", ["one", "two"], np.array([0, 1]), ("neg", "pos")))
    others = [content_digest({**params, "a": params["a"] + np.float32(1e-6)}, data),  # one value
              content_digest({**params, "a": params["a"].astype(np.float64)}, data),  # dtype
              content_digest({"a": params["a"], "b": {"d": params["b"]["c"]}}, data),  # a path
              content_digest(params, Dataset("d", "text", ["one", "twO"], np.array([0, 1]), ("neg", "pos"))),
              content_digest(params, Dataset("d", "text", ["one", "two"], np.array([1, 1]), ("neg", "pos"))),
              content_digest(data, params)]  # order
    assert len({base, *others}) == 1 + len(others)
