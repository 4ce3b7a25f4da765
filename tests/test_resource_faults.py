"""Resource faults: a refused write is one line naming the path and the fix, exit 2, and the run
folder stays resumable — the same command, once the cause is gone, finishes with the results a
run that never failed gives (byte-identical tables).

One table of simulated faults (the file system's answer replaced where apex-jax asks for it), one
real case on a size-limited tmpfs where this machine lets a test mount one (`unshare -rm`), and
the path cases that need no simulation (too long, a file where the cache folder must be).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

import pytest

from apex_jax import cli, fileio
from apex_jax.models.loading import resolve
from tests.helpers.tiny_text import sentiment_csv, tiny_bert_folder
from tests.test_cli_bad_inputs import APEX_BASE, run_cli, tree_hash

FINETUNE_BASE = ["--epochs", "1", "--batch-size", "8", "--max-length", "16", "--n-train", "16", "--quiet"]
TABLES = ("samples.csv", "sigmas.csv", "summary.json")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny model, a CSV, and the results of runs that never failed (the references)."""
    root = tmp_path_factory.mktemp("faults")
    e = {"root": root, "model": tiny_bert_folder(root / "bert", resolve("minilm"), seed=2),
         "task": sentiment_csv(root / "task.csv", 40)}
    e["apex"] = ["apex", e["model"], "--data", e["task"], *APEX_BASE]
    e["finetune"] = ["finetune", e["model"], "--data", e["task"], *FINETUNE_BASE]
    for command in ("apex", "finetune"):
        assert cli.main([str(a) for a in [*e[command], "--out", root / f"ref-{command}"]]) == 0
    return e


class _Usage(NamedTuple):
    total: int
    used: int
    free: int


def _under(path, folder) -> bool:
    return str(os.fspath(path)).startswith(str(folder))


def disk_full_at_the_first_checkpoint(monkeypatch, out):
    real = shutil.disk_usage
    monkeypatch.setattr(fileio.shutil, "disk_usage",
                        lambda p: _Usage(1 << 30, (1 << 30) - 4096, 4096) if _under(p, out) else real(p))


def disk_full_writing_a_table(monkeypatch, out):
    real = tempfile.mkstemp

    def mkstemp(*a, **k):
        if ".samples.csv." in k.get("prefix", ""):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write(2) says it: no path
        return real(*a, **k)

    monkeypatch.setattr(fileio.tempfile, "mkstemp", mkstemp)


def read_only_mid_sweep(monkeypatch, out):
    real_access, real_statvfs = os.access, os.statvfs

    class ReadOnly:
        f_flag = os.ST_RDONLY

    # the folder, run.json and the lock exist already: the file system turns read-only at the
    # first checkpoint
    monkeypatch.setattr(fileio.os, "access", lambda p, m, **k: False if _under(p, out) else real_access(p, m, **k))
    monkeypatch.setattr(fileio.os, "statvfs", lambda p: ReadOnly() if _under(p, out) else real_statvfs(p))


def disk_full_saving_the_model(monkeypatch, out):
    real = shutil.disk_usage
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda p: _Usage(1 << 30, 1 << 30, 0)
                        if _under(p, out / "model") else real(p))


# (case id, command, fault, message fragments)
CASES = [
    ("disk-full-first-checkpoint", "apex", disk_full_at_the_first_checkpoint,
     ["no space left on the device holding", "sweep-checkpoints", "are free", "rerun the same command"]),
    ("disk-full-writing-a-table", "apex", disk_full_writing_a_table,
     ["no space left on the device holding", "samples.csv", "rerun the same command"]),
    ("read-only-mid-sweep", "apex", read_only_mid_sweep,
     ["is on a read-only file system", "sweep-checkpoints", "remount it writable", "rerun the same command"]),
    ("disk-full-saving-the-model", "finetune", disk_full_saving_the_model,
     ["no space left on the device holding", "model", "rerun the same command"]),
]


@pytest.mark.parametrize("case,command,fault,fragments", CASES, ids=[c[0] for c in CASES])
def test_a_refused_write_is_one_line_and_the_rerun_resumes(env, capsys, monkeypatch, case, command, fault,
                                                           fragments):
    out = env["root"] / case
    argv = [*env[command], "--out", out]
    with monkeypatch.context() as m:
        fault(m, out)
        rc, stdout, err = run_cli(argv, capsys)
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"apex-jax {command}: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert (out / "run.json").exists()  # the folder is kept: what was finished is resumed
    rc, _, err = run_cli(argv, capsys)  # the cause is gone
    assert rc == 0, err
    ref = env["root"] / f"ref-{command}"
    names = TABLES if command == "apex" else ("summary.json", "model/model.safetensors", "model/config.json")
    for name in names:
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name


def test_a_path_too_long_for_the_file_system(env, capsys):
    out = env["root"] / ("a" * 300)
    rc, _, err = run_cli([*env["apex"], "--out", out], capsys)
    assert rc == 2 and "too long for the file system" in err and "choose a shorter --out" in err, err
    assert len(err.strip().splitlines()) == 1


def test_a_file_where_the_cache_folder_must_be(env, capsys, monkeypatch, tmp_path):
    """The compile cache is a speed-up: the run goes on without it and says so; fetching assets
    into it is refused with the fix."""
    cache = tmp_path / "cache"
    cache.write_text("a file, not a folder")
    monkeypatch.setenv("APEX_JAX_CACHE", str(cache))
    monkeypatch.delenv("APEX_JAX_NO_COMPILE_CACHE", raising=False)
    rc, _, err = run_cli([*env["apex"], "--out", tmp_path / "run"], capsys)
    assert rc == 0 and "compilation cache off" in err and "is a file where a folder is needed" in err, err
    assert (tmp_path / "run" / "samples.csv").read_bytes() == (env["root"] / "ref-apex" / "samples.csv").read_bytes()
    rc, _, err = run_cli(["fetch-assets", "minilm"], capsys)
    assert rc == 2 and f"{cache} exists and is not a folder" in err, err
    assert cache.read_text() == "a file, not a folder"


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None or sys.platform != "linux":
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="this machine lets no test mount a tmpfs (unshare -rm)")
def test_a_real_full_tmpfs(env, tmp_path):
    """A 2 MiB tmpfs filled to ~16 KiB free: the sweep's first checkpoint is refused in one line
    (exit 2, no traceback); with room made the same command finishes with the reference's tables."""
    mnt, keep = tmp_path / "mnt", tmp_path / "kept"
    mnt.mkdir()
    argv = " ".join(f"'{a}'" for a in [*env["apex"], "--out", mnt / "run"])
    script = f"""
        mount -t tmpfs -o size=2m tmpfs '{mnt}'
        head -c $(( $(df --output=avail -B1 '{mnt}' | tail -1) - 16384 )) /dev/zero > '{mnt}/filler'
        '{sys.executable}' -m apex_jax.cli {argv} > '{tmp_path}/first.out' 2> '{tmp_path}/first.err'
        echo $? > '{tmp_path}/first.rc'
        rm '{mnt}/filler'
        '{sys.executable}' -m apex_jax.cli {argv} > '{tmp_path}/second.out' 2> '{tmp_path}/second.err'
        echo $? > '{tmp_path}/second.rc'
        cp -r '{mnt}/run' '{keep}'
    """
    subprocess.run(["unshare", "-rm", "sh", "-c", script], check=True, cwd=Path(__file__).parents[1],
                   env={**os.environ, "APEX_JAX_NO_COMPILE_CACHE": "1"}, timeout=600)
    first = (tmp_path / "first.err").read_text()
    assert (tmp_path / "first.rc").read_text().strip() == "2", first
    assert "Traceback" not in first and len(first.strip().splitlines()) == 1, first
    assert "no space left on the device holding" in first, first
    assert (tmp_path / "second.rc").read_text().strip() == "0", (tmp_path / "second.err").read_text()
    ref = tree_hash(env["root"] / "ref-apex")
    got = tree_hash(keep)
    for name in TABLES:
        assert got[name] == ref[name], name
