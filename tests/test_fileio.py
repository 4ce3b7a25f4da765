"""apex_jax.fileio: strict JSON with non-finite numbers as null, CSV cells, atomic writes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from apex_jax import fileio


def _strict_load(text: str):
    """json.loads that refuses NaN / Infinity (which Python's json accepts by default)."""
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_json_non_finite_is_null_and_valid(tmp_path):
    obj = {"nan": float("nan"), "inf": np.float32(np.inf), "ninf": -math.inf, "ok": np.float64(0.25),
           "arr": np.array([1.0, np.nan, np.inf]), "int": np.int64(3), "flag": np.bool_(True), 7: (1, 2)}
    path = fileio.write_json(tmp_path / "s.json", obj)
    back = _strict_load(path.read_text())
    assert back == {"nan": None, "inf": None, "ninf": None, "ok": 0.25, "arr": [1.0, None, None], "int": 3,
                    "flag": True, "7": [1, 2]}
    with pytest.raises(ValueError, match="non-standard"):
        _strict_load('{"x": NaN}')


def test_json_layout_is_indented_without_trailing_newline(tmp_path):
    path = fileio.write_json(tmp_path / "s.json", {"b": 1, "a": [0.1]})
    assert path.read_text() == json.dumps({"b": 1, "a": [0.1]}, indent=2)
    assert fileio.write_json(tmp_path / "t.json", {"b": 1, "a": 2}, sort_keys=True).read_text().startswith('{\n  "a"')


def test_csv_cells(tmp_path):
    path = fileio.write_csv(tmp_path / "t.csv", [{"a": 0.123456789, "b": float("nan")},
                                             {"a": np.inf, "c": [1.5, 2]}, {"a": -np.inf, "b": 3}])
    assert path.read_bytes().decode() == 'a,b,c\r\n0.123457,,\r\ninf,,"[""1.5"", ""2""]"\r\n-inf,3,\r\n'
    fileio.write_rows(tmp_path / "r.csv", ["x", "y"], [(1, 0.5)])
    assert (tmp_path / "r.csv").read_bytes() == b"x,y\r\n1,0.5\r\n"
    with pytest.raises(ValueError, match="header of 2 columns"):
        fileio.write_rows(tmp_path / "bad.csv", ["x", "y"], [(1,)])


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    fileio.write_json(tmp_path / "a.json", {"x": 1})
    fileio.write_csv(tmp_path / "a.csv", [{"x": 1}])
    fileio.write_timing(tmp_path, {"seconds": 1.0})
    plt = fileio.pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    fileio.save_figure(fig, tmp_path / "a.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "a.json", "a.png", "timing.json"]
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_failed_write_keeps_the_old_file(tmp_path):
    target = fileio.write_json(tmp_path / "a.json", {"x": 1})
    with pytest.raises(TypeError):
        fileio.write_json(target, {"x": object()})  # not serializable: fails before the rename
    assert _strict_load(target.read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_interrupted_write_removes_its_temporary_file(tmp_path):
    target = fileio.write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError, match="interrupted"):
        with fileio.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_files_get_the_permissions_of_a_new_file(tmp_path):
    """mkstemp makes owner-only files; a run's tables are as readable as any file the user makes."""
    import os

    from apex_jax import fileio

    mask = os.umask(0o022)
    os.umask(mask)
    path = fileio.write_csv(tmp_path / "t.csv", [{"a": 1}])
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask
