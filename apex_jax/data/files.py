"""Readers of data set files: ``.csv``, ``.jsonl`` (text) and ``.npz`` (images).

- ``.csv`` (header row) and ``.jsonl`` (one object per line): fields ``text`` and ``label`` (other
  names: ``text_column`` / ``label_column``, the CLI's ``--text-column`` / ``--label-column``), and
  optionally an integer ``id`` (default: 0-based row number). Without a label field (a text-only
  file) the data set is unlabelled: APEX and feature extraction need no labels. If every label is an integer (in
  a CSV: a string of digits), labels are used as they are and ``label_names`` are ``"0"`` ...
  ``str(max label)``; otherwise all labels are taken as strings, their sorted unique values
  become ``label_names`` and each label is its index there.
- ``.npz``: arrays ``images`` and ``labels`` (without it: unlabelled), optionally ``ids`` and
  ``label_names``. ``images``
  is ``[n, H, W]`` (one channel), ``[n, H, W, C]`` (recognised when the last axis has 1, 3 or 4
  entries and axis 1 has more than 4) or ``[n, C, H, W]`` (every other 4-d shape); ``uint8``
  values are divided by 255, float values must already be in [0, 1]. ``labels`` are integers, or
  strings mapped like text labels.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from apex_jax.data.dataset import ID_MAX, Dataset
from apex_jax.errors import InputError

#: File suffixes accepted by :func:`apex_jax.data.load_dataset`.
FILE_TYPES: tuple[str, ...] = (".csv", ".jsonl", ".npz")


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


#: Default field names of a text record.
TEXT_COLUMN, LABEL_COLUMN = "text", "label"


def _text_dataset(
    name: str, rows: list[dict[str, Any]], where: str, lines: Sequence[int] | None = None,
    text_column: str = TEXT_COLUMN, label_column: str | None = LABEL_COLUMN,
) -> Dataset:
    """Builds a text Dataset from records with a text field, a label field (``label_column``;
    None: unlabelled) and an optional ``id``.

    ``lines`` (the file line of each record) makes messages point at ``file:line``.
    """
    if not rows:
        raise InputError(
            f"{where}: no examples (the file has no data rows); expected one example per row "
            f"with the field {text_column!r} (and a label field {label_column or LABEL_COLUMN!r})"
        )
    at = (lambda k: f"{where}:{lines[k]}") if lines is not None else (
        lambda k: f"{where}: record {k + 1}")
    texts: list[str] = []
    raw_labels: list[Any] = []
    raw_ids: list[Any] = []
    fields = (text_column,) if label_column is None else (text_column, label_column)
    for k, row in enumerate(rows):
        missing = [f"{f!r}" for f in fields if row.get(f) in (None, "")]
        if missing:
            raise InputError(f"{at(k)}: the record has no {' or '.join(missing)} field")
        if not isinstance(row[text_column], str):
            raise InputError(f"{at(k)}: text must be a string, got {type(row[text_column]).__name__}")
        texts.append(row[text_column])
        raw_labels.append(row.get(label_column) if label_column else None)
        raw_ids.append(row.get("id"))
    labels, names = _encode_labels(raw_labels, where, at) if label_column else (None, ())
    ids = None
    if rows and all(i not in (None, "") for i in raw_ids):
        try:
            ints = [int(i) for i in raw_ids]
        except (TypeError, ValueError):
            raise InputError(f"{where}: the id field must hold integers") from None
        wide = next((k for k, i in enumerate(ints) if not 0 <= i <= ID_MAX), None)
        if wide is not None:  # ids key the noise as 32-bit values: others would collide
            raise InputError(f"{at(wide)}: id {ints[wide]} is outside [0, {ID_MAX}] (ids key the noise as 32-bit "
                             "values); renumber the ids, or drop the id column to number the rows 0, 1, ...")
        ids = np.array(ints, dtype=np.int64)
    return Dataset(name, "text", texts, labels, names, ids)


def read_text(path: Path) -> str:
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


def _columns(where: str, fields: Sequence[str], text_column: str | None, label_column: str | None,
             ) -> tuple[str, str | None]:
    """The text and label fields of a file with these ``fields``: the columns asked for (which must
    exist), else ``text`` and, if there is one, ``label`` (none: the data set is unlabelled)."""
    text = text_column or TEXT_COLUMN
    if text not in fields:
        flag = "" if text_column else " (or name another with --text-column / text_column=)"
        raise InputError(f"{where}: no text column {text!r}{flag}; its fields are {list(fields)}")
    if label_column is not None and label_column not in fields:
        raise InputError(f"{where}: no label column {label_column!r} (--label-column); its fields are "
                         f"{list(fields)}")
    label = label_column or (LABEL_COLUMN if LABEL_COLUMN in fields else None)
    return text, label


def load_csv(path: Path, text_column: str | None = None, label_column: str | None = None) -> Dataset:
    """A CSV with a header naming a text column (``text``, or ``text_column``) and optionally a
    label column (``label``, or ``label_column``; none: unlabelled)."""
    text = read_text(path)
    if not text.strip():
        raise InputError(
            f"{path}: the file is empty; expected a header row naming the columns 'text' (and "
            "'label'), then one example per row"
        )
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    with _long_csv_fields():
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            fields = reader.fieldnames or []
            text_field, label_field = _columns(str(path), fields, text_column, label_column)
            for row in reader:
                if None in row:  # DictReader files surplus fields under None: a comma not quoted
                    raise InputError(
                        f"{path}:{reader.line_num}: {len(fields) + len(row[None])} fields but the header names "
                        f"{len(fields)} ({', '.join(fields)}); quote a text holding a comma: \"a, b\""
                    )
                rows.append(row)
                lines.append(reader.line_num)
        except csv.Error as err:
            raise InputError(f"{path}:{reader.line_num}: malformed CSV ({err})") from None
    if not rows:
        raise InputError(
            f"{path}: only a header ({', '.join(fields)}), no data rows; expected one example "
            "per row after the header"
        )
    return _text_dataset(str(path), rows, str(path), lines, text_field, label_field)


def load_jsonl(path: Path, text_column: str | None = None, label_column: str | None = None) -> Dataset:
    """JSON lines: one object per non-blank line with a text field (``text``, or ``text_column``)
    and a label field (``label`` / ``label_column``; in no record: unlabelled)."""
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    # Split on line ends only: str.splitlines would also split on U+2028 etc. inside a string.
    for lineno, line in enumerate(read_text(path).split("\n"), start=1):
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
    # A label field in any record makes the file labelled (a record without one is then an error).
    seen = {key for record in rows for key in record}
    text_field, label_field = _columns(str(path), sorted(seen), text_column, label_column)
    return _text_dataset(str(path), rows, str(path), lines, text_field, label_field)


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


def load_npz(path: Path) -> Dataset:
    """An ``.npz`` with ``images`` and ``labels`` (optional ``ids``, ``label_names``)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "images" not in npz.files:
                raise InputError(
                    f"{path}: missing arrays ['images']; it has {npz.files}. An image .npz needs "
                    "'images' (optional 'labels', 'ids', 'label_names')"
                )
            images = npz["images"]
            raw_labels = npz["labels"] if "labels" in npz.files else None
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
    if raw_labels is None:  # unlabelled images
        return Dataset(where, "image", images, None, (), ids)
    if raw_labels.ndim != 1:
        raise InputError(f"{where}: labels must be 1-d, got shape {raw_labels.shape}")
    labels, names = _encode_labels(raw_labels.tolist(), where)
    if given_names is not None:
        if not np.issubdtype(raw_labels.dtype, np.integer):
            raise InputError(f"{where}: label_names given but labels are not integers")
        names = tuple(str(x) for x in given_names.tolist())
    return Dataset(where, "image", images, labels, names, ids)
