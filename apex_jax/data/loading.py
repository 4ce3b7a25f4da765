"""Loading a data set by built-in name or file path (:func:`load_dataset`)."""

from __future__ import annotations

import difflib
from pathlib import Path

from apex_jax import assets
from apex_jax.data.builtin import BUILTIN_DATASETS, load_builtin
from apex_jax.data.dataset import Dataset
from apex_jax.data.files import FILE_TYPES, load_csv, load_jsonl, load_npz
from apex_jax.errors import InputError


def _unknown(name_or_path: str, reason: str) -> InputError:
    close = difflib.get_close_matches(name_or_path, BUILTIN_DATASETS, n=1)
    if close:
        reason += f" (did you mean {close[0]!r}?)"
    return InputError(
        f"cannot load data set {name_or_path!r}: {reason}. Built-in data sets: "
        f"{', '.join(BUILTIN_DATASETS)}; files: {', '.join(FILE_TYPES)} "
        f"(see apex_jax.data for their layout)"
    )


def load_dataset(name_or_path: str | Path, text_column: str | None = None,
                 label_column: str | None = None) -> Dataset:
    """Loads a built-in data set by name, or a ``.csv`` / ``.jsonl`` / ``.npz`` file.

    Args:
        name_or_path: One of :data:`BUILTIN_DATASETS` or a path to a supported file.
        text_column: a CSV/JSONL file's text field (default ``text``).
        label_column: a CSV/JSONL file's label field (default ``label`` where the file has one;
            else the data set is unlabelled).

    Returns:
        The whole data set, in source order.

    Raises:
        InputError: Neither a built-in name nor an existing supported file, or invalid content
            (not UTF-8, malformed CSV/JSON, empty, only a header, bad labels, ...): the message
            names the file and, where there is one, the line.
        apex_jax.assets.AssetMissingError: A built-in's asset has not been fetched.
    """
    key = str(name_or_path)
    if key in BUILTIN_DATASETS:
        asset = "vader" if key in assets.VADER_FILES else key
        # The folder is part of the cache key: $APEX_JAX_CACHE may change within a process.
        return load_builtin(key, assets.asset_path(asset))
    path = Path(name_or_path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in FILE_TYPES:
        reason = (
            f"unsupported file type {path.suffix!r}"
            if path.is_file()
            else "not a built-in name or a supported file"
        )
        raise _unknown(key, reason)
    if not path.is_file():
        raise _unknown(key, f"no such file {path}")
    if suffix == ".npz":
        return load_npz(path)
    loader = load_csv if suffix == ".csv" else load_jsonl
    return loader(path, text_column, label_column)
