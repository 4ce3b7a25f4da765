"""Strict conversion between Hugging Face state dicts and apex-jax parameter trees.

Each model family (`encoder`, `gpt2`, `llama`) describes its weights as one table of `Entry`s
(our parameter path, HF key, transform, HF shape); this module walks a table, knowing nothing
about any family. Loading walks it forwards: a missing weight, a weight left over, or a weight
of the wrong shape is an error that names it. Saving walks the same table backwards, so a saved
folder is exactly what `transformers` expects.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from apex_jax.errors import InputError

# Buffers some checkpoints carry that are not weights: BERT-family position / token-type id
# tables; GPT-2's causal-mask constants, older Llama checkpoints' rotary frequencies.
_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
_BUFFER_RE = re.compile(r"^(h\.\d+\.attn\.(bias|masked_bias)|(layers\.\d+\.self_attn\.)?rotary_emb\.inv_freq)$")
# Older checkpoint spellings -> current ones (applied in order to every key of every family).
_LEGACY = (
    (r"LayerNorm\.gamma$", "LayerNorm.weight"),
    (r"LayerNorm\.beta$", "LayerNorm.bias"),
)

Renames = Sequence[tuple[str, str]]  # (regex, replacement) pairs applied to every key in order
Placer = Callable[[tuple[str, ...], np.ndarray], Any]  # (params path, host array) -> the leaf kept


class Entry(NamedTuple):
    """One weight of a family's table."""

    path: tuple[str, ...]  # path in our params tree
    key: str  # HF key, relative to the base model for body weights
    kind: str  # "dense" (transpose), "patch" (conv -> matmul), "copy"
    shape: tuple[int, ...]  # HF shape
    head: bool = False  # a head weight (stored without the base-model prefix)


def normalize_keys(state: Mapping[str, np.ndarray], prefix: str, renames: Renames = ()) -> dict[str, np.ndarray]:
    """Strips the base-model prefix and maps legacy spellings to current HF names.

    Args:
        state: an HF state dict.
        prefix: the base model's prefix of the family (`"bert"`, `"transformer"`, ...).
        renames: the family's own (regex, replacement) renames, applied after the shared ones.

    Raises:
        InputError: two keys map to one name.
    """
    prefix = prefix + "."
    out = {}
    for key, value in state.items():
        k = key[len(prefix):] if key.startswith(prefix) else key
        for pat, rep in _LEGACY + tuple(renames):
            k = re.sub(pat, rep, k)
        if k in out:
            raise InputError(
                f"weight {key!r} appears twice, as {k!r} under another spelling (with and without "
                f"the '{prefix}' prefix, or in a legacy and a current name)."
            )
        out[k] = value
    return out


def to_params(entries: Iterable[Entry], state: Mapping[str, Any], ignore: Iterable[str] = (),
              what: str = "model", dtype: Any = np.float32, place: Placer | None = None) -> dict:
    """HF state dict (already `normalize_keys`-ed) -> nested params dict, one weight at a time.

    The whole table is checked first (from the weights' shapes only: nothing is read yet), then
    each weight is read, converted to our layout in `dtype` (one host copy), handed to `place`
    (e.g. `jax.device_put` onto its device(s)) and its host copy dropped, so with lazily read
    values (`loading.read_state`) no second full copy of the model ever exists on the host.

    Args:
        entries: the model's weight table.
        state: the normalized state dict: arrays, or lazy tensors with `.shape` that `np.asarray`
            reads.
        ignore: glob patterns of keys to drop on purpose.
        what: the architecture's name, for messages.
        dtype: the parameters' floating dtype (float32, or bfloat16 from `ml_dtypes` / jnp).
        place: called as `place(path, array)` for each converted weight; its result is the leaf
            (default: the numpy array itself).

    Raises:
        InputError: naming every missing, unused or mis-shaped weight (a ValueError).
    """
    entries = list(entries)
    missing = [e.key for e in entries if e.key not in state]
    mis_shaped = [f"{e.key}: {tuple(state[e.key].shape)}, expected {e.shape}" for e in entries
                  if e.key in state and tuple(state[e.key].shape) != e.shape]
    used = {e.key for e in entries}
    ignore = tuple(ignore)
    unused = sorted(
        k for k in state
        if k not in used and k not in _BUFFERS and not _BUFFER_RE.match(k)
        and not any(fnmatch.fnmatchcase(k, pat) for pat in ignore)
    )
    problems = []
    if missing:
        problems.append(f"missing weights: {missing}")
    if mis_shaped:
        problems.append(f"mis-shaped weights: {mis_shaped}")
    if unused:
        problems.append(
            f"unused weights: {unused} (a head of another task? pass ignore=['pattern*'] to load "
            "without them)"
        )
    if problems:
        raise InputError(f"cannot load {what} weights: " + "; ".join(problems) + ".")
    params: dict = {}
    for entry in entries:
        value = to_ours(entry, np.asarray(state[entry.key]), dtype)  # reads this weight only
        set_path(params, entry.path, place(entry.path, value) if place is not None else value)
        del value  # the host copy goes as soon as it is placed
    return params


def from_params(entries: Iterable[Entry], params: Mapping, prefix: str) -> dict[str, np.ndarray]:
    """Params tree -> HF state dict (body keys under `prefix.`, head keys as they are), float32."""
    prefix = prefix + "."
    state = {}
    for entry in entries:
        value = np.asarray(get_path(params, entry.path), dtype=np.float32)
        key = entry.key if entry.head else prefix + entry.key
        state[key] = np.ascontiguousarray(to_hf(entry, value))
    return state


def to_ours(entry: Entry, value: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
    """An HF weight in our layout, C-contiguous in `dtype`: cast and transposed in a single copy
    (a bf16 weight never passes through float32 on its way to bf16), and no copy at all where
    neither is needed (the result may then be `value` itself)."""
    if entry.kind == "dense":
        value = value.T
    elif entry.kind == "patch":  # [d, c, s, s] -> [c*s*s, d], matching the (c, s, s) patch order
        value = value.reshape(value.shape[0], -1).T
    return np.ascontiguousarray(value, dtype=dtype)


def to_hf(entry: Entry, value: np.ndarray) -> np.ndarray:
    """One of our parameters in HF's layout."""
    if entry.kind == "dense":
        return value.T
    if entry.kind == "patch":
        return value.T.reshape(entry.shape)
    return value


def set_path(tree: dict, path: tuple[str, ...], value) -> None:
    """Sets `tree[path[0]][path[1]]...` = value, creating the dicts on the way."""
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def get_path(tree: Mapping, path: tuple[str, ...]):
    """`tree[path[0]][path[1]]...`."""
    for p in path:
        tree = tree[p]
    return tree
