"""Multi-process sweeps end to end, in one chain of subprocesses (each start imports JAX and
compiles, so the chain shares the expensive steps instead of repeating them per test):

1. two processes (2 forced CPU devices each: one 4-device mesh) start a sweep; both are SIGKILLed
   once a checkpoint exists;
2. a copy of that run folder is kept; the same two-process command resumes the original and
   finishes: both processes write counts and score sums bitwise equal to one uninterrupted
   in-process run, having computed only the unfinished units;
3. ONE process resumes the copy (the units do not depend on the process count) and ends
   bitwise equal too, again computing only the unfinished units;
4. a one-process rerun of the finished folder restores it and computes nothing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import numpy as np

import apex_jax
from apex_jax.engine import checkpoints_in
from apex_jax.models.loading import resolve
from tests.helpers import kill_once_checkpointed
from tests.helpers.sweep_script import load_scores, sweep
from tests.helpers.tiny_text import tiny_bert_folder
from tests.test_engine import _script

DRAWS = "64"


def _forwards(stderr: str) -> int:
    """The perturbed forwards the sweep script reports it computed."""
    return int(stderr.split("forwards ")[1].split()[0])


def _two_processes(folder, tmp_path, run_dir, tag: str) -> list[subprocess.Popen]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    return [subprocess.Popen(_script(folder, tmp_path / f"{tag}{i}.npy", "--run-dir", str(run_dir),
                                     "--units-per-call", "4", "--draws", DRAWS, "--coordinator", f"127.0.0.1:{port}",
                                     "--process-id", str(i), "--num-processes", "2"),
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for i in range(2)]


def _one_process(folder, out, run_dir) -> subprocess.CompletedProcess:
    r = subprocess.run(_script(folder, out, "--run-dir", str(run_dir), "--draws", DRAWS), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _assert_equal(straight, out) -> None:
    np.testing.assert_array_equal(straight.counts, np.load(out))
    for want, got in zip((straight.margin_sum, straight.kl_sum), load_scores(out)):
        np.testing.assert_array_equal(want, got)  # resumed float sums continue exactly


def test_killed_two_process_sweep_resumes_with_two_or_one_processes(tmp_path):
    folder = tiny_bert_folder(tmp_path / "bert", resolve("minilm"), seed=1)
    straight = sweep(apex_jax.load(folder), draws=int(DRAWS))
    total = int(straight.counts.sum())
    run_dir, copy = tmp_path / "run", tmp_path / "run-copy"

    kill_once_checkpointed(_two_processes(folder, tmp_path, run_dir, "killed"), run_dir, min_step=5)
    assert not (tmp_path / "killed0.npy").exists()
    (info,) = checkpoints_in(run_dir)
    assert not info.complete
    shutil.copytree(run_dir, copy)

    procs = _two_processes(folder, tmp_path, run_dir, "p")
    errs = [p.communicate(timeout=300)[1].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for e in errs]
    assert "devices 4" in errs[0]  # 2 processes x 2 CPU devices in one mesh
    for i in range(2):
        _assert_equal(straight, tmp_path / f"p{i}.npy")
    assert 0 < _forwards(errs[0]) < total  # it did resume: only the unfinished units ran

    r = _one_process(folder, tmp_path / "one.npy", copy)
    _assert_equal(straight, tmp_path / "one.npy")
    assert 0 < _forwards(r.stderr) < total
    (info,) = checkpoints_in(copy)
    assert info.complete

    r = _one_process(folder, tmp_path / "again.npy", run_dir)
    _assert_equal(straight, tmp_path / "again.npy")
    assert _forwards(r.stderr) == 0  # the finished sweep is restored, nothing recomputed
    (info,) = checkpoints_in(run_dir)
    assert info.complete
