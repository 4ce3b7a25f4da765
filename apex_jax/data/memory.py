"""Data held in Python objects, as a :class:`Dataset` (:func:`from_memory`).

Accepted, besides a `Dataset` itself:

- a pandas ``DataFrame`` or a dict of lists (columns): a text column (``text``, or
  ``text_column``), a label column (``label`` where there is one, or ``label_column``; none:
  unlabelled) and an optional integer ``id`` column; labels follow the file rule
  (:mod:`apex_jax.data.files`: integers as they are, strings as class names);
- a Hugging Face ``datasets.Dataset`` (duck-typed: ``column_names`` and column access), the same
  columns; a ``ClassLabel`` label column keeps its own class names and order;
- a list of strings: unlabelled text;
- an array of images ``[n, H, W]``, ``[n, H, W, C]`` or ``[n, C, H, W]`` (uint8 0..255 or floats
  in [0, 1]): unlabelled images.

    ds = from_memory(pandas.DataFrame({"sentence": texts, "y": labels}), text_column="sentence",
                     label_column="y")
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from apex_jax.data.dataset import Dataset
from apex_jax.data.files import LABEL_COLUMN, TEXT_COLUMN, _channels_first, _text_dataset
from apex_jax.errors import InputError

ACCEPTED = ("an apex_jax Dataset, a data set name or .csv/.jsonl/.npz path, a pandas DataFrame, a dict of "
            "lists, a Hugging Face datasets.Dataset, a list of strings, or an image array [n, H, W(, C)]")


def _columns_of(data: Any) -> tuple[dict[str, list], dict[str, tuple[str, ...]]] | None:
    """(columns as lists, class names of ClassLabel columns) of a table-like object, else None."""
    if hasattr(data, "columns") and hasattr(data, "iloc"):  # pandas.DataFrame
        return {str(c): data[c].tolist() for c in data.columns}, {}
    if hasattr(data, "column_names") and hasattr(data, "features"):  # datasets.Dataset
        names = {c: tuple(f.names) for c, f in dict(data.features).items() if getattr(f, "names", None)}
        return {c: list(data[c]) for c in data.column_names}, names
    if isinstance(data, Mapping):
        return {str(k): (v.tolist() if isinstance(v, np.ndarray) else list(v)) for k, v in data.items()}, {}
    return None


def from_memory(data: Any, text_column: str | None = None, label_column: str | None = None,
                name: str | None = None) -> Dataset:
    """`data` (see the module docstring) as a Dataset named `name` (default: its type's name).

    Raises:
        InputError: an unsupported object, a missing text or label column (the message lists the
            columns), or bad labels (as for files).
    """
    if isinstance(data, Dataset):
        return data
    name = name or f"<in-memory {type(data).__name__}>"
    table = _columns_of(data)
    if table is not None:
        columns, class_names = table
        text = text_column or TEXT_COLUMN
        if text not in columns:
            raise InputError(f"{name}: no text column {text!r} (name it with text_column=, --text-column); "
                             f"the columns are {list(columns)}")
        if label_column is not None and label_column not in columns:
            raise InputError(f"{name}: no label column {label_column!r}; the columns are {list(columns)}")
        label = label_column or (LABEL_COLUMN if LABEL_COLUMN in columns else None)
        keys = [text, *([label] if label else []), *(["id"] if "id" in columns else [])]
        rows = [dict(zip(keys, values)) for values in zip(*(columns[k] for k in keys))]
        if label in class_names:  # a ClassLabel: its integers index its own names, in its order
            ds = _text_dataset(name, rows, name, None, text, None)
            return Dataset(name, "text", list(ds.inputs), np.asarray(columns[label]), class_names[label], ds.ids)
        return _text_dataset(name, rows, name, None, text, label)
    if isinstance(data, (list, tuple)) and data and all(isinstance(t, str) for t in data):
        return Dataset(name, "text", list(data), None)
    if isinstance(data, np.ndarray) and data.dtype.kind in "uif" and data.ndim in (3, 4):
        images = data.astype(np.float32) / 255.0 if data.dtype == np.uint8 else data
        return Dataset(name, "image", _channels_first(np.asarray(images, np.float32), name), None)
    raise InputError(f"cannot read {type(data).__name__} as data; give {ACCEPTED}")
