"""Deterministic stratified splits: :func:`split_dataset` (train / val / test),
:func:`stratified_split` (row indices of a feature matrix) and :func:`get_split` (load, split,
take a prefix).

Splits are stratified by label and depend only on the data, the seed and the fractions: see
:func:`split_dataset` for the exact rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from apex_jax.data.builtin import BUILTIN_DATASETS
from apex_jax.data.dataset import Dataset
from apex_jax.data.loading import load_dataset
from apex_jax.errors import InputError

#: Split names accepted by :func:`get_split`.
SPLITS: tuple[str, ...] = ("train", "val", "test", "all")


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


def default_split(name_or_path: str | Path | None) -> str:
    """The split a run reads when none is asked for: ``"test"`` of a built-in data set (its
    documented held-out part), ``"all"`` of a user's file or in-memory data (the user's own
    examples, used whole)."""
    return "test" if isinstance(name_or_path, str) and name_or_path in BUILTIN_DATASETS else "all"


def get_split(
    name_or_path: str | Path, split: str | None = "test", n: int | None = None, seed: int = 0,
    text_column: str | None = None, label_column: str | None = None,
) -> Dataset:
    """Loads a data set, takes one split of :func:`split_dataset` (default fractions), then its
    first ``n`` examples.

    Args:
        name_or_path: As for :func:`load_dataset`.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"`` (the whole data set in source
            order); ``None``: :func:`default_split` (test of a built-in, all of a file).
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
    split = default_split(str(name_or_path)) if split is None else split
    _check_split(split, n)
    return select(load_dataset(name_or_path, text_column, label_column), split, n, seed)


def _check_split(split: str, n: int | None) -> None:
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0):
        raise InputError(f"n must be a positive integer or None (the whole split), got {n!r}")


def select(ds: Dataset, split: str = "all", n: int | None = None, seed: int = 0) -> Dataset:
    """One split of a data set in memory (:func:`split_dataset`, or ``"all"``), then its first
    ``n`` examples; the rules and errors of :func:`get_split`."""
    _check_split(split, n)
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
