"""Data sets with deterministic, documented train/val/test splits.

    ds = load_dataset("vader-movies")                 # a built-in name, or a .csv / .jsonl / .npz path
    parts = split_dataset(ds, seed=0)                 # {"train", "val", "test"}, stratified
    test = get_split("vader-movies", "test", n=100)   # load, split, first n examples

Modules (each documents its part):

- :mod:`~apex_jax.data.dataset`: the :class:`Dataset` type (text or images, read-only arrays).
- :mod:`~apex_jax.data.builtin`: the built-in data sets (:data:`BUILTIN_DATASETS`: the VADER
  sentence sets, ``banking77`` (77 intents), ``mnist5k``, ``digits``), their labels, ids and sizes.
- :mod:`~apex_jax.data.files`: the file layouts (:data:`FILE_TYPES`: ``.csv``, ``.jsonl``,
  ``.npz``) and their readers.
- :mod:`~apex_jax.data.loading`: :func:`load_dataset`, by built-in name or file path.
- :mod:`~apex_jax.data.memory`: :func:`from_memory`: a pandas DataFrame, a dict of lists, a Hugging
  Face ``datasets.Dataset``, a list of strings or an image array as a :class:`Dataset`.
- :mod:`~apex_jax.data.splits`: :func:`split_dataset`, :func:`stratified_split`,
  :func:`get_split`, :func:`select`, :func:`default_split` (:data:`SPLITS`); the exact splitting
  rule.
- :mod:`~apex_jax.data.checks`: model vs. data checks, :func:`check_input_kind` and
  :func:`check_label_space` (:class:`LabelSpace`, :data:`LABEL_PURPOSES`), :func:`align_labels`.

:func:`encode` (from :mod:`apex_jax.batching`) turns one or more data sets into a model's inputs;
:func:`padded_width` is the width a batch of a given longest length is padded to.
"""

from apex_jax.batching import encode, padded_width
from apex_jax.data.builtin import BUILTIN_DATASETS
from apex_jax.data.checks import LABEL_PURPOSES, LabelSpace, align_labels, check_input_kind, check_label_space
from apex_jax.data.dataset import Dataset
from apex_jax.data.files import FILE_TYPES
from apex_jax.data.loading import load_dataset
from apex_jax.data.memory import from_memory
from apex_jax.data.splits import SPLITS, default_split, get_split, select, split_dataset, stratified_split

__all__ = [
    "BUILTIN_DATASETS",
    "FILE_TYPES",
    "SPLITS",
    "Dataset",
    "LABEL_PURPOSES",
    "LabelSpace",
    "align_labels",
    "check_input_kind",
    "check_label_space",
    "encode",
    "padded_width",
    "default_split",
    "from_memory",
    "get_split",
    "load_dataset",
    "select",
    "stratified_split",
    "split_dataset",
]
