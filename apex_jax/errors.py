"""The exceptions apex-jax raises about what it was given: one family the CLI can catch.

Every error about a user's input (a model folder, a data file, a setting, an intervention) or a
run's own files is an :class:`ApexJaxError`. Its message names the problem and the valid
choices, so a command-line front end can print ``str(error)`` and exit with status 2 instead of
showing a traceback. The classes also derive from the built-in type that code caught before the
family existed (``ValueError``, ``FileNotFoundError``, ``RuntimeError``), so existing ``except``
clauses keep working.

    try:
        model = apex_jax.load(path)
    except apex_jax.errors.ApexJaxError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)

Anything else that escapes apex-jax is a bug in apex-jax (or an environment failure such as
out-of-memory), not a bad input.
"""

from __future__ import annotations

import errno
import os

__all__ = ["ApexJaxError", "CheckpointError", "InputError", "MissingInputError", "ResourceError",
           "RunExistsError", "describe_os_error", "resource_error"]


class ApexJaxError(Exception):
    """Base of every apex-jax error about its inputs or its own files (message: what and how)."""


class InputError(ApexJaxError, ValueError):
    """A bad input: a setting out of range, an unreadable or malformed model folder or data
    file, an unknown name, or data that does not fit the model. The message names the input
    (file and line where there is one) and the valid choices."""


class MissingInputError(InputError, FileNotFoundError):
    """A named file, folder, model or asset does not exist (or cannot be fetched).

    Also a ``FileNotFoundError``, which is what loaders raised before this family existed.
    """


class RunExistsError(InputError):
    """The run folder holds another run (another command, or other settings or inputs). The
    message names the differing settings; pass ``overwrite=True`` (``--overwrite``) to replace
    that run, or choose another folder."""


class CheckpointError(ApexJaxError, RuntimeError):
    """A checkpoint apex-jax wrote (probe set, sweep progress) is incomplete, corrupt, or from
    other settings. The message names the folder and what to do (usually: delete it, or rerun
    the command that wrote it). Also a ``RuntimeError``, as the probe checkpoint's error was."""


class ResourceError(ApexJaxError, OSError):
    """The machine refused a file operation: no space left, a read-only file system, a path too
    long, a file where a folder must be, no permission. The message names the path and what to do;
    what the run had finished stays in its folder, so the same command resumes once the cause is
    gone. Also an ``OSError`` (with the original ``errno`` and ``filename``)."""

    def __init__(self, message: str, errno_: int | None = None, filename: str | None = None):
        super().__init__(message)
        self.errno, self.filename = errno_, filename

    def __str__(self) -> str:  # the message alone, not OSError's "[Errno N] ..." form
        return self.args[0]


_RESUME = "then rerun the same command (it resumes from what is saved)"
_FIXES = {
    errno.ENOSPC: ("no space left on the device holding {path}", "free space there or choose another folder, "
                   + _RESUME),
    errno.EDQUOT: ("disk quota exceeded writing {path}", "free space or choose another folder, " + _RESUME),
    errno.EROFS: ("{path} is on a read-only file system", "remount it writable or choose another folder, "
                  + _RESUME),
    errno.EACCES: ("no permission to write {path}", "fix its permissions or choose another folder"),
    errno.EPERM: ("the operation on {path} is not permitted", "fix its permissions or choose another folder"),
    errno.ENAMETOOLONG: ("the path {path} is too long for the file system ({length} characters; one name at most "
                         "{name_max})", "choose a shorter --out (or a shorter APEX_JAX_CACHE)"),
    errno.ENOTDIR: ("a part of {path} is a file where a folder is needed",
                    "move that file away or choose another folder (the asset and compile cache is "
                    "$APEX_JAX_CACHE, default ~/.cache/apex-jax)"),
    errno.EEXIST: ("{path} exists and is not a folder", "move it away or choose another folder"),
    errno.EISDIR: ("{path} is a folder where a file is needed", "move it away or choose another path"),
}


def _name_max(path: str) -> int:
    folder = os.path.dirname(path) or "."
    while folder and not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    try:
        return os.pathconf(folder or "/", "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def describe_os_error(error: OSError, path: str | os.PathLike | None = None) -> str:
    """One line for an `OSError`: what failed on which path, and what to do.

    Args:
        error: the error (its ``errno`` picks the advice).
        path: the path being written, where the error does not carry one (``error.filename``).

    Example:
        >>> describe_os_error(OSError(28, "No space left on device", "/runs/a/samples.csv"))
        'no space left on the device holding /runs/a/samples.csv: free space there or choose another folder, \
then rerun the same command (it resumes from what is saved)'
    """
    if isinstance(error, ApexJaxError):
        return str(error)
    where = error.filename if error.filename is not None else path
    where = os.fsdecode(where) if where is not None else "(a file the run writes)"
    if error.errno in _FIXES:
        what, fix = _FIXES[error.errno]
        what = what.format(path=where, length=len(where), name_max=_name_max(where))
        return f"{what}: {fix}"
    return f"{error.strerror or error} ({where})" if error.strerror else f"{error} ({where})"


def resource_error(error: OSError, path: str | os.PathLike | None = None) -> ResourceError:
    """`error` as a `ResourceError` whose message is `describe_os_error(error, path)`."""
    if isinstance(error, ResourceError):
        return error
    where = error.filename if error.filename is not None else (os.fsdecode(path) if path is not None else None)
    return ResourceError(describe_os_error(error, path), error.errno, where)
