"""Fixed-shape batches of encoded inputs: one padding rule for the whole library.

Compiled functions are specialised to their input shapes, so text batches are cropped (or padded)
to a *padded width*: the longest real sequence rounded up to a multiple of `PAD_MULTIPLE`. A run
over sentences of many lengths then compiles a handful of shapes, not one per length. The engine
(length buckets), training (collated batches) and the [CLS] readers (chunks) share the rule.

    batch = encode(model, dataset, max_length=64)      # {key: [n, pos]} or {pixel_values: [n, c, h, w]}
    for chunk in iter_chunks(batch, batch_size=64):    # fixed [64, width] chunks, fillers dropped later
        ...
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterator, Mapping, NamedTuple, Sequence

import numpy as np

if TYPE_CHECKING:  # apex_jax.data imports this module (it re-exports encode); batching stays import-light
    from apex_jax.data.dataset import Dataset

Array = Any

PAD_MULTIPLE = 16  # text batches are cropped / padded to a multiple of this many positions


def padded_width(length: int) -> int:
    """The padded width of a batch whose longest real sequence has `length` tokens (>= 1)."""
    return int(math.ceil(max(int(length), 1) / PAD_MULTIPLE) * PAD_MULTIPLE)


def encode(model, data: "Dataset | Sequence[Dataset]", max_length: int | None = None) -> dict[str, np.ndarray]:
    """Encodes an `apex_jax.data.Dataset` (or several, concatenated in order, into one padded
    width) for `model`: text is tokenized (truncated to `max_length`, default the model's own
    limit: `apex_jax.models.encoding.length_limit`; padded to the longest),
    images are normalized to pixel_values.

    Returns:
        {input_ids, attention_mask[, token_type_ids]: [n, pos]} or {pixel_values: [n, c, h, w]}.
    """
    parts = list(data) if isinstance(data, (list, tuple)) else [data]
    if parts[0].kind == "text":
        return model.encode([x for d in parts for x in d.inputs], max_length=max_length)
    return model.encode(np.concatenate([np.asarray(d.inputs) for d in parts]) if len(parts) > 1 else parts[0].inputs)


def num_rows(inputs: Mapping[str, Array]) -> int:
    """The number of examples in an input dict, checking every array agrees.

    Raises:
        ValueError: no arrays, zero rows, or arrays with different leading sizes.
    """
    if not isinstance(inputs, Mapping) or not inputs:
        raise ValueError(
            "inputs must be a non-empty dict from model.encode(...) (input_ids, attention_mask"
            "[, token_type_ids] or pixel_values)."
        )
    sizes = {k: int(np.shape(v)[0]) if np.ndim(v) else -1 for k, v in inputs.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"input arrays disagree on the number of examples: {sizes}.")
    n = next(iter(sizes.values()))
    if n <= 0:
        raise ValueError(f"inputs hold no examples (sizes {sizes}).")
    return n


class Chunk(NamedTuple):
    """One fixed-shape batch of a larger input set."""

    start: int  # first row of `inputs` in this chunk
    stop: int  # one past the last real row
    rows: np.ndarray  # [batch_size] source row of each batch row (fillers repeat stop - 1)
    batch: dict  # {key: [batch_size, ...]}: inputs[rows], text cropped


def iter_chunks(inputs: Mapping[str, Array], batch_size: int) -> Iterator[Chunk]:
    """Fixed-shape chunks of `inputs` ([n, ...] arrays from `model.encode`).

    The batch size is `min(batch_size, n)`; the last chunk is filled by repeating its last real
    row. Text (inputs with an `attention_mask` [n, pos]) is cropped per chunk to the
    `padded_width` of its last real token, so chunks of short texts cost less and the number of
    distinct shapes (compiles) stays small.
    """
    n = num_rows(inputs)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}.")
    size = min(int(batch_size), n)
    arrays = {k: np.asarray(v) for k, v in inputs.items()}
    mask = arrays.get("attention_mask")
    for start in range(0, n, size):
        stop = min(start + size, n)
        rows = np.minimum(np.arange(start, start + size), stop - 1)
        width = None
        if mask is not None and mask.ndim == 2:
            real = np.flatnonzero(mask[start:stop].any(axis=0))
            last = int(real[-1]) + 1 if real.size else 1
            width = min(mask.shape[1], padded_width(last))
        batch = {}
        for k, v in arrays.items():
            v = v[rows]
            if width is not None and v.ndim == 2 and v.shape[1] == mask.shape[1]:
                v = v[:, :width]
            batch[k] = v
        yield Chunk(start, stop, rows, batch)
