"""One orbax wrapper for every resumable state in apex-jax (sweeps, training, ensembles, probes).

    store = Checkpoints(folder)                       # keeps the latest step only by default
    store.save(step, {"counts": counts}, meta={"epoch": 3})
    if store.latest_step() is not None:
        state, meta = store.restore(like={"counts": counts})

A step holds an array pytree (orbax `StandardSave`) and a JSON dict (`JsonSave`: orbax rejects
string leaves in array trees) as one composite. Saves are synchronous (`wait_until_finished`),
so a step on disk is complete once `save` returns: a kill between steps loses at most the
current step. Restores take an abstract target (shapes and dtypes of `like`), so they are
bit-exact and never depend on how the arrays were sharded when saved. Anything that goes wrong
while restoring becomes one `CheckpointError` naming the folder and what to do.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from apex_jax.errors import CheckpointError  # one error type for every checkpoint (re-exported)
from apex_jax.errors import resource_error
from apex_jax.fileio import check_room


def _dtype(x: Any) -> np.dtype:
    """A leaf's dtype (np.result_type of an array is deprecated; Python scalars have none)."""
    return np.dtype(x.dtype) if hasattr(x, "dtype") else np.result_type(x)


class Checkpoints:
    """orbax `CheckpointManager` of (array pytree, JSON metadata) steps in one folder.

    Args:
        folder: the checkpoint folder (created on the first save).
        max_to_keep: steps kept on disk (older ones are deleted after a save).
        In a multi-process run every process calls `save`/`restore` with the same state (orbax
        coordinates them: the primary process writes host arrays, a step is final once all are
        done), so `folder` must be on storage every process sees.
    """

    def __init__(self, folder: str | Path, max_to_keep: int = 1):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.folder = Path(folder).absolute()
        self._manager = ocp.CheckpointManager(
            self.folder, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep))

    def latest_step(self) -> int | None:
        """The newest complete step, or None when there is none."""
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: dict | None = None) -> None:
        """Writes `state` (array pytree) and `meta` (JSON-serializable dict) as `step`; returns
        once both are on disk.

        Raises:
            ResourceError: the folder's file system is full or read-only (checked before orbax
                starts, and mapped from orbax's own errors when it changes during the write).
        """
        ocp = self._ocp
        check_room(self.folder, sum(int(getattr(a, "nbytes", 0)) for a in jax.tree.leaves(state)))
        try:
            self._manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta or {}))))
            self._manager.wait_until_finished()
        except OSError as e:
            raise resource_error(e, self.folder) from e
        except Exception as e:  # orbax/tensorstore report a refused write as ValueError text
            for code in (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES):
                if os.strerror(code) in str(e):
                    raise resource_error(OSError(code, os.strerror(code), str(self.folder))) from e
            raise

    def restore(self, like: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restores (state, meta) of `step` (default: the latest).

        Args:
            like: a pytree with the state's structure, shapes and dtypes (values unused).

        Raises:
            CheckpointError: no step, or the step cannot be read into `like`'s structure.
        """
        ocp = self._ocp
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.folder}.")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        try:
            got = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        except Exception as e:  # orbax raises many types (ValueError, KeyError, tensorstore ...)
            raise CheckpointError(
                f"checkpoint {self.folder}/{step} cannot be restored ({type(e).__name__}: {e}); it "
                "is corrupt or was written by other settings. Delete that folder to start over."
            ) from e
        state = got["state"]
        # orbax restores numpy leaves with their saved shape whatever the target says: check
        want = [(np.shape(x), _dtype(x)) for x in jax.tree.leaves(like)]
        have = [(np.shape(x), _dtype(x)) for x in jax.tree.leaves(state)]
        if jax.tree.structure(state) != jax.tree.structure(like) or want != have:
            raise CheckpointError(
                f"checkpoint {self.folder}/{step} holds arrays {have}, not the expected {want}: it "
                "was written by other settings. Delete that folder to start over.")
        return state, dict(got["meta"] or {})

    def read_meta(self, step: int | None = None) -> dict:
        """Only the JSON metadata of `step` (default: the latest), e.g. to size `restore`'s `like`.

        Raises:
            CheckpointError: no step, or its metadata cannot be read.
        """
        ocp = self._ocp
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.folder}.")
        try:
            got = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except Exception as e:  # orbax raises many types
            raise CheckpointError(
                f"checkpoint {self.folder}/{step} has no readable metadata ({type(e).__name__}: {e}); it is "
                "corrupt. Delete that folder to start over.") from e
        return dict(got["meta"] or {})

    def close(self) -> None:
        """Releases orbax's background resources."""
        self._manager.close()
