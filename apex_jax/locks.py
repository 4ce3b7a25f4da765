"""One writer per folder: an advisory lock on FOLDER/.apex-jax.lock, held for a writer's life.

`fcntl.flock` locks an open file, so the operating system releases the lock when its process
ends, however it ends: a lock left by a dead process never blocks. flock would grant a second
lock on the same file to the same process, so the locks this process holds are also kept here. The file records the holder
(pid, host, command line) for the message a second writer gets.

Who takes it: a run folder's writer (`apex_jax.runs.open_run`) and a resumable sweep
(`run_sweep(..., run_dir=...)`), which in a multi-process job takes it once, on process 0, for
the whole job (the other processes write through orbax's coordinated saves); a sweep into the
folder of the run layer that called it joins that layer's lock (`within=True`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
from pathlib import Path
from typing import Iterator, Sequence

from apex_jax.errors import InputError

__all__ = ["LOCK", "FolderLock", "hold"]

LOCK = ".apex-jax.lock"  # hidden: never listed as an output, never removed by --overwrite
_HELD: dict[str, "FolderLock"] = {}  # realpath of the folder -> this process's lock on it


class FolderLock:
    """The advisory lock on `folder` (see the module doc)."""

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / LOCK
        self.fd: int | None = None
        self._depth = 0
        self._outer: FolderLock | None = None

    def acquire(self, within: bool = False) -> None:
        """Takes the lock without changing the file (a refused writer leaves the folder as it was).

        Args:
            within: join a lock this process already holds (a run layer's sweep into its own
                run folder) instead of refusing it as a second writer.

        Raises:
            InputError: another writer holds it (another process, or another run of this
                process); the message names the holder and the way out.
        """
        key = os.path.realpath(self.path.parent)
        outer = _HELD.get(key)
        if outer is not None and within:
            self._outer = outer
            outer._depth += 1
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if outer is not None:  # flock would grant it again to this process: refuse it here
                raise BlockingIOError
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                holder = {}
            os.close(fd)
            raise InputError(
                f"{self.path.parent} is being written by another run (pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}: {' '.join(map(str, holder.get('command_line', [])))}); wait for it to "
                "finish, or choose another folder (--out)") from None
        self.fd, self._depth = fd, 1
        _HELD[key] = self

    def record_holder(self, command_line: Sequence[str]) -> None:
        """Writes who holds the lock, for the message another writer gets."""
        if self._outer is not None:
            return
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                       "command_line": list(command_line)}).encode(), 0)

    def release(self) -> None:
        """Gives the lock up (the outermost holder in this process unlocks the file)."""
        if self._outer is not None:
            self._outer._depth -= 1
            self._outer = None
            return
        if self.fd is None:
            return
        self._depth -= 1
        if self._depth > 0:
            return
        _HELD.pop(os.path.realpath(self.path.parent), None)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


@contextlib.contextmanager
def hold(folder: str | os.PathLike, command_line: Sequence[str] | None = None,
         within: bool = False) -> Iterator[FolderLock]:
    """Holds `folder`'s lock for the block (creating the folder); `within` as for `acquire`.

    Example:
        >>> import tempfile
        >>> with hold(tempfile.mkdtemp()) as lock:
        ...     lock.fd is not None
        True
    """
    Path(folder).mkdir(parents=True, exist_ok=True)
    lock = FolderLock(folder)
    lock.acquire(within)
    try:
        lock.record_holder(command_line if command_line is not None else [Path(sys.argv[0]).name, *sys.argv[1:]])
        yield lock
    finally:
        lock.release()
