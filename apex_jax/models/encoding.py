"""Inputs for a model: texts -> token arrays, images -> normalized pixel values (`Model.encode`).

    batch = encode(model, ["a fine film", "a dull film"])   # {"input_ids", "attention_mask", ...}
    batch = encode(vit, images)                              # {"pixel_values": [n, c, h, w]}

Texts: `input_ids`, `attention_mask` (and `token_type_ids` where the model has token types),
each [batch, pos] int32, padded to the longest text; decoders pad on the right (the classifier
token is the last real one) and fill a verbalizer's prompt template first. Images: float32
[batch, channels, height, width], normalized with the model's image mean/std.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from apex_jax.errors import InputError
from apex_jax.models.decoder import prepare_tokenizer


def encode(
    model: Any, items: Sequence[str] | np.ndarray, *, max_length: int | None = None,
    pad_to_multiple_of: int | None = None,
) -> dict[str, np.ndarray]:
    """Texts -> token arrays (padded to the longest), or images -> normalized pixel_values.

    Images: [n, height, width] or [n, channels, height, width], uint8 (0-255) or float
    in [0, 1]; they are normalized with the model's image mean/std.

    Args:
        model: the `Model` (its config, tokenizer, image mean/std and source are read).
        items: a list of strings for a text model; an image array for an image model.
        max_length: text only: truncate to this many tokens (>= 1; default and upper
            bound: `length_limit`, the model's own limit). `count_truncated` counts the cuts.
        pad_to_multiple_of: text only: pad the length up to a multiple of this (>= 1).

    Raises:
        InputError: the kind of input does not match the model (images for a text model
            or texts for an image model: the message says which kind it expects), no
            tokenizer, no texts, max_length or pad_to_multiple_of not a positive integer,
            or images of the wrong rank.
    """
    kind = f"a text model ({model.config.arch})" if model.config.is_text else (
        f"an image model ({model.config.arch}, {model.config.num_channels}x"
        f"{model.config.image_size}x{model.config.image_size})")
    for name, value in (("max_length", max_length), ("pad_to_multiple_of", pad_to_multiple_of)):
        # 0 used to mean "the default" silently; a non-positive length is a mistake.
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                  or value < 1):
            raise InputError(f"{name} must be a positive integer or None (the default); got {value!r}.")
    if model.config.is_text:
        if isinstance(items, str):
            items = [items]
        texts = _as_texts(items)
        if texts is None:
            raise InputError(
                f"{model.source!r} is {kind}: encode() expects a list of strings, got "
                f"{_describe(items)} (image data? use an image model, or a text data set: "
                ".csv/.jsonl or a built-in text set)."
            )
        if model.tokenizer is None:
            raise InputError(
                f"{model.source!r} has no tokenizer (none of tokenizer.json, vocab.txt, "
                "vocab.json in its folder): copy the tokenizer files of the model it was "
                "trained from into the folder, or pass token arrays to apply()."
            )
        texts = _prepared(model, texts)
        if len(texts) == 0:
            raise InputError("encode() got no texts; give at least one string.")
        enc = model.tokenizer(
            texts, padding=True, truncation=True,
            max_length=length_limit(model, max_length), pad_to_multiple_of=pad_to_multiple_of,
            return_tensors="np",
        )
        keep = ["input_ids", "attention_mask"] + (["token_type_ids"] if getattr(model.config, "type_vocab_size", 0) else [])
        out = {k: np.asarray(enc[k], np.int32) for k in keep if k in enc}
        vocab = getattr(model.config, "vocab_size", 0)
        if vocab and out["input_ids"].size and (out["input_ids"].max() >= vocab or out["input_ids"].min() < 0):
            # an id outside the embedding table reads as NaN, not as an error: refuse it here
            raise InputError(f"{model.source!r}: its tokenizer gives token id {int(out['input_ids'].max())} but the "
                             f"model's embedding table has {vocab} rows: the tokenizer files do not belong to this "
                             "model; copy the tokenizer of the model it was trained with")
        return out
    if isinstance(items, str) or (
        isinstance(items, (list, tuple)) and any(isinstance(i, str) for i in items)
    ) or (isinstance(items, np.ndarray) and items.dtype.kind in "USO"):
        raise InputError(
            f"{model.source!r} is {kind}: encode() expects images [n, height, width] or "
            f"[n, channels, height, width], got {_describe(items)} (text data? use a text "
            "model, or an image data set: .npz or a built-in image set)."
        )
    x = np.asarray(items)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise InputError(
            f"{model.source!r} is {kind}: images must be [n, height, width] or "
            f"[n, channels, height, width]; got shape {x.shape}."
        )
    if x.dtype.kind not in "uif":
        raise InputError(f"images must be uint8 (0-255) or floats in [0, 1]; got dtype {x.dtype}.")
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    mean = np.asarray(model.image_mean, np.float32)[None, :, None, None]
    std = np.asarray(model.image_std, np.float32)[None, :, None, None]
    return {"pixel_values": (x - mean) / std}


#: The longest default input: the model's own limit is used up to this many tokens (attention
#: cost grows with the square of the length).
MAX_DEFAULT_LENGTH = 512


def length_limit(model: Any, max_length: int | None = None) -> int:
    """The tokens a text input keeps: `max_length`, at most the model's own limit (its position
    embeddings, less RoBERTa's two offset positions, and the tokenizer's `model_max_length`),
    which is also the default, capped at `MAX_DEFAULT_LENGTH`."""
    limit = model.config.max_positions - (2 if model.config.arch == "roberta" else 0)
    tok_limit = getattr(model.tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < 1_000_000:  # unset ones are ~1e30
        limit = min(limit, tok_limit)
    limit = min(limit, MAX_DEFAULT_LENGTH)
    return min(max_length, limit) if max_length else limit


def _prepared(model: Any, texts: list[str]) -> list[str]:
    """Texts as the tokenizer reads them: a decoder's tokenizer set to pad on the right, and a
    verbalizer's prompt template filled."""
    if model.config.is_decoder:  # right padding, eos as pad when there is no pad token
        prepare_tokenizer(model.tokenizer)
        if model.config.prompt:  # a verbalizer's template: the label token comes next
            texts = [model.config.prompt.replace("{text}", t) for t in texts]
    return texts


def count_truncated(model: Any, texts: Sequence[str], max_length: int | None = None) -> tuple[int, int]:
    """(the length limit, how many of `texts` are longer and so cut by `encode`) for a text model."""
    limit = length_limit(model, max_length)
    if model.tokenizer is None or not texts:
        return limit, 0
    ids = model.tokenizer(_prepared(model, list(texts)), truncation=False)["input_ids"]
    return limit, sum(len(x) > limit for x in ids)


def _as_texts(items: Any) -> list[str] | None:
    """`items` as a list of str, or None if it is not a sequence of strings (e.g. an array of
    pixels)."""
    if isinstance(items, np.ndarray):
        if items.dtype.kind not in "UO":
            return None
        items = items.tolist()
    if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
        return None
    items = list(items)  # any iterable of str (a tuple, a pandas Series, a generator)
    return items if all(isinstance(t, str) for t in items) else None


def _describe(items: Any) -> str:
    """A short description of what `encode` was given, for messages."""
    if isinstance(items, np.ndarray):
        return f"an array of shape {items.shape}, dtype {items.dtype}"
    if isinstance(items, str):
        return f"a string {items[:40]!r}"
    if isinstance(items, Sequence) and len(items):
        return f"a {type(items).__name__} of {len(items)} {type(items[0]).__name__}"
    return f"a {type(items).__name__}"
