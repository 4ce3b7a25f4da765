"""One writer per folder (`apex_jax.locks`): a second writer is refused with the holder's pid and
command, in another process or in this one; a run layer's sweep joins its own lock; a resumable
sweep holds its folder; the lock dies with its process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from apex_jax import locks
from apex_jax.engine import run_sweep
from apex_jax.errors import InputError

HOLDER = textwrap.dedent("""
    import sys, time
    from apex_jax import locks
    with locks.hold(sys.argv[1], ["apex-jax", "apex", "held-by-test"]):
        print("held", flush=True)
        time.sleep(60)
""")


@pytest.fixture
def other_process(tmp_path):
    """A process holding tmp_path/"held"'s lock (killed at the end)."""
    folder = tmp_path / "held"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.stdout.readline().strip() == "held"
    yield folder, proc.pid
    proc.kill()
    proc.wait()


def test_another_process_is_refused_and_the_lock_dies_with_it(other_process):
    folder, pid = other_process
    with pytest.raises(InputError, match=rf"being written by another run \(pid {pid} on .*held-by-test"):
        with locks.hold(folder):
            pass
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    with locks.hold(folder) as lock:  # a dead holder never blocks
        assert lock.fd is not None


def test_a_resumable_sweep_holds_its_folder(other_process):
    """The lock is taken before anything else: the arguments are never looked at."""
    folder, pid = other_process
    with pytest.raises(InputError, match=rf"pid {pid}"):
        run_sweep(None, None, {}, [], None, None, sites=[], draws=1, run_dir=folder)


def test_within_this_process(tmp_path):
    """A second writer of this process is refused too (flock alone would grant it); a sweep into
    the folder of the run that holds it joins, and the file is unlocked when the outer one ends."""
    folder = tmp_path / "run"
    with locks.hold(folder, ["apex-jax", "apex", "outer"]):
        with pytest.raises(InputError, match=rf"pid {os.getpid()} .*outer"):
            with locks.hold(folder):
                pass
        with locks.hold(folder, within=True) as inner:
            assert inner.fd is None  # joined, not a second lock
        with pytest.raises(InputError):  # still held by the outer writer after the inner one left
            locks.FolderLock(folder).acquire()
    probe = subprocess.run([sys.executable, "-c", HOLDER.replace("time.sleep(60)", "pass"), str(folder)],
                           capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert probe.returncode == 0 and "held" in probe.stdout, probe.stderr
