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

__all__ = ["ApexJaxError", "CheckpointError", "InputError", "MissingInputError", "RunExistsError"]


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
