"""The Dataset type: a data set held in memory, validated and read-only; labels are optional.

Text data sets hold a list of strings; image data sets hold float32 arrays in [0, 1] with shape
``[n, channels, height, width]`` (channels first, like Hugging Face ``pixel_values``). Labels
are class indices into ``label_names``; ids are stable unique row ids from the source. An
unlabelled data set (``labels=None``: a text-only file, a list of strings, an image array) has no
``label_names`` and holds -1 as every label; APEX and feature extraction need no labels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from apex_jax.errors import InputError

ID_MAX = 2**32 - 1  # input ids key the noise as 32-bit values: larger ones would collide

#: Input kinds a Dataset can hold.
KINDS = ("text", "image")


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A data set held in memory, labelled or not.

    Arrays are copied on construction and made read-only, so a Dataset (which may be shared
    through a cache) cannot be changed in place.

    Attributes:
        name: Built-in name or the path it was loaded from.
        kind: ``"text"`` or ``"image"``.
        inputs: ``list[str]`` for text; for images a float32 array in [0, 1] of shape
            ``[n, channels, height, width]``.
        labels: int32 ``[n]``, each in ``[0, n_classes)``; ``None`` for unlabelled inputs (then
            stored as -1 everywhere, and ``label_names`` is empty: see :attr:`labelled`).
        label_names: Class names; ``label_names[k]`` names label ``k`` (empty when unlabelled).
        ids: int64 ``[n]``, stable unique row ids from the source (``None`` -> ``0..n-1``).

    Raises:
        InputError: On construction, if the data set is empty, lengths disagree, labels are out
            of range, ids repeat, or inputs have the wrong type or shape.
    """

    name: str
    kind: str
    inputs: Any
    labels: np.ndarray | None
    label_names: tuple[str, ...] = ()
    ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        where = f"data set {self.name!r}"
        if self.kind not in KINDS:
            raise InputError(f"{where}: kind must be one of {KINDS}, got {self.kind!r}")
        inputs = self._checked_inputs(where)
        n = len(inputs)
        if n == 0:
            raise InputError(f"data set {self.name!r} is empty")
        label_names = tuple(str(x) for x in self.label_names or ())
        if self.labels is None:  # unlabelled: -1 everywhere, no class names
            if label_names:
                raise InputError(f"{where}: label_names {label_names} given but no labels")
            object.__setattr__(self, "labels", np.full(n, -1, np.int64))
        elif not label_names:
            raise InputError(f"{where}: label_names is empty")
        labels = np.asarray(self.labels)
        if labels.ndim != 1 or len(labels) != n:
            raise InputError(f"{where}: {n} inputs but labels have shape {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise InputError(f"{where}: labels must be integers, got dtype {labels.dtype}")
        bad = ((labels < 0) | (labels >= len(label_names))) if label_names else np.zeros(n, bool)
        if bad.any():
            bad_values = np.unique(labels[bad])
            shown = ", ".join(str(v) for v in bad_values[:10])
            more = f" (+{len(bad_values) - 10} more)" if len(bad_values) > 10 else ""
            raise InputError(
                f"{where}: label values [{shown}]{more} are outside the valid range "
                f"[0, {len(label_names)}) given {len(label_names)} label_names {label_names}"
            )
        ids = np.arange(n, dtype=np.int64) if self.ids is None else np.asarray(self.ids)
        if ids.shape != (n,):
            raise InputError(f"{where}: {n} inputs but ids have shape {ids.shape}")
        if not np.issubdtype(ids.dtype, np.integer):
            raise InputError(f"{where}: ids must be integers, got dtype {ids.dtype}")
        if len(np.unique(ids)) != n:
            raise InputError(f"{where}: ids are not unique")
        # frozen dataclass: normalised values are stored with object.__setattr__.
        object.__setattr__(self, "inputs", inputs)
        object.__setattr__(self, "labels", _readonly(labels, np.int32))
        object.__setattr__(self, "label_names", label_names)
        object.__setattr__(self, "ids", _readonly(ids, np.int64))

    def _checked_inputs(self, where: str) -> list[str] | np.ndarray:
        """Validates and normalises ``inputs`` for the data set's kind."""
        if self.kind == "text":
            if isinstance(self.inputs, (str, bytes)) or not isinstance(self.inputs, Sequence):
                raise InputError(f"{where}: text inputs must be a list of str")
            texts = list(self.inputs)
            not_str = [i for i, t in enumerate(texts) if not isinstance(t, str)]
            if not_str:
                raise InputError(
                    f"{where}: text inputs must be str; rows {not_str[:5]} are "
                    f"{type(texts[not_str[0]]).__name__}"
                )
            return texts
        images = np.asarray(self.inputs)
        if images.ndim != 4:
            raise InputError(
                f"{where}: images must have shape [n, channels, height, width], got "
                f"{images.shape}"
            )
        if not np.issubdtype(images.dtype, np.floating):
            raise InputError(f"{where}: images must be floats in [0, 1], got dtype {images.dtype}")
        images = _readonly(images, np.float32)
        if images.size and not (images.min() >= 0.0 and images.max() <= 1.0):
            raise InputError(
                f"{where}: image values must be in [0, 1], got [{images.min()}, {images.max()}]"
            )
        return images

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def labelled(self) -> bool:
        """True if the examples carry labels (``label_names`` is then non-empty)."""
        return bool(self.label_names)

    @property
    def n_classes(self) -> int:
        """Number of classes (``len(label_names)``; some may have no examples)."""
        return len(self.label_names)

    def subset(self, index: np.ndarray | Sequence[int]) -> Dataset:
        """Returns the rows selected by ``index`` (integer positions or a boolean mask), in order.

        Raises:
            InputError: The selection is empty, a boolean mask has the wrong length, or the
                index is not integers.
        """
        idx = np.asarray(index)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise InputError(
                    f"data set {self.name!r}: boolean mask of shape {idx.shape} for "
                    f"{len(self)} rows"
                )
            idx = np.flatnonzero(idx)
        elif idx.size == 0:
            idx = idx.astype(np.int64)  # np.asarray([]) is float64
        elif not np.issubdtype(idx.dtype, np.integer):
            raise InputError(f"data set {self.name!r}: index must be integers, got {idx.dtype}")
        if self.kind == "text":
            inputs: Any = [self.inputs[int(i)] for i in idx]
        else:
            inputs = self.inputs[idx]
        return Dataset(
            name=self.name,
            kind=self.kind,
            inputs=inputs,
            labels=self.labels[idx] if self.labelled else None,
            label_names=self.label_names,
            ids=self.ids[idx],
        )

    def class_counts(self) -> np.ndarray:
        """Examples per class, int64 ``[n_classes]`` (empty when unlabelled)."""
        if not self.labelled:
            return np.zeros(0, np.int64)
        return np.bincount(self.labels, minlength=self.n_classes)

    def __repr__(self) -> str:
        shape = (
            f"{len(self)} texts"
            if self.kind == "text"
            else f"images {tuple(self.inputs.shape)}"
        )
        return (
            f"Dataset(name={self.name!r}, kind={self.kind!r}, {shape}, "
            f"label_names={self.label_names if self.labelled else 'unlabelled'})"
        )


def _readonly(array: np.ndarray, dtype: Any) -> np.ndarray:
    """A read-only copy of ``array`` as ``dtype`` (the copy keeps the caller's array writable)."""
    out = np.array(array, dtype=dtype, copy=True)
    out.flags.writeable = False
    return out
