"""Strict conversion between Hugging Face state dicts and apex-jax parameter trees.

Each architecture has one table of (our parameter path, HF key, transform, HF shape). Loading
walks the table: a missing weight, a weight left over, or a weight of the wrong shape is an
error that names it (DESIGN.md principle 7). Saving walks the same table backwards, so a saved
folder is exactly what `transformers` expects.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Iterable, Mapping, NamedTuple

import numpy as np

from apex_jax.errors import InputError
from apex_jax.models.config import ArchConfig

BASE_PREFIX = {"bert": "bert", "roberta": "roberta", "distilbert": "distilbert", "vit": "vit",
               "gpt2": "transformer", "llama": "model"}
# Buffers some checkpoints carry that are not weights.
_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
# Decoder buffers: GPT-2's causal-mask constants, older Llama checkpoints' rotary frequencies.
_BUFFER_RE = re.compile(r"^(h\.\d+\.attn\.(bias|masked_bias)|(layers\.\d+\.self_attn\.)?rotary_emb\.inv_freq)$")
# Older checkpoint spellings -> current ones (applied in order to every key).
_LEGACY = (
    (r"LayerNorm\.gamma$", "LayerNorm.weight"),
    (r"LayerNorm\.beta$", "LayerNorm.bias"),
)
# ViT: transformers 5.x names its modules `layers.N.attention.q_proj`, `layers.N.mlp.fc1`, ...
# but reads and writes checkpoints with the names every transformers version knows
# (`encoder.layer.N.attention.attention.query`, ...). Those on-disk names are canonical here
# (`Model.save` writes them, so 4.x can read our folders too); 5.x module names are mapped to them.
_LEGACY_VIT = (
    (r"^layers\.(\d+)\.attention\.q_proj\.", r"encoder.layer.\1.attention.attention.query."),
    (r"^layers\.(\d+)\.attention\.k_proj\.", r"encoder.layer.\1.attention.attention.key."),
    (r"^layers\.(\d+)\.attention\.v_proj\.", r"encoder.layer.\1.attention.attention.value."),
    (r"^layers\.(\d+)\.attention\.o_proj\.", r"encoder.layer.\1.attention.output.dense."),
    (r"^layers\.(\d+)\.mlp\.fc1\.", r"encoder.layer.\1.intermediate.dense."),
    (r"^layers\.(\d+)\.mlp\.fc2\.", r"encoder.layer.\1.output.dense."),
    (r"^layers\.(\d+)\.", r"encoder.layer.\1."),
)
HEAD_KEYS = ("classifier.", "pre_classifier.")


class Entry(NamedTuple):
    path: tuple[str, ...]  # path in our params tree
    key: str  # HF key, relative to the base model for body weights
    kind: str  # "dense" (transpose), "patch" (conv -> matmul), "copy"
    shape: tuple[int, ...]  # HF shape
    head: bool = False  # a head weight (stored without the base-model prefix)


def _dense(path, key, d_in, d_out, head=False):
    return [
        Entry(path + ("kernel",), f"{key}.weight", "dense", (d_out, d_in), head),
        Entry(path + ("bias",), f"{key}.bias", "copy", (d_out,), head),
    ]


def _ln(path, key, d):
    return [
        Entry(path + ("scale",), f"{key}.weight", "copy", (d,)),
        Entry(path + ("bias",), f"{key}.bias", "copy", (d,)),
    ]


def table(cfg: ArchConfig) -> list[Entry]:
    """The full weight table of a model described by `cfg`."""
    if getattr(cfg, "is_decoder", False):
        from apex_jax.models.decoder_convert import decoder_table

        return decoder_table(cfg)
    d, f = cfg.d_model, cfg.d_mlp
    e: list[Entry] = []
    if cfg.arch == "vit":
        c, s = cfg.num_channels, cfg.patch_size
        e += [
            Entry(("embed", "cls"), "embeddings.cls_token", "copy", (1, 1, d)),
            Entry(("embed", "position"), "embeddings.position_embeddings", "copy", (1, cfg.n_patches + 1, d)),
            Entry(("embed", "patch", "kernel"), "embeddings.patch_embeddings.projection.weight", "patch", (d, c, s, s)),
            Entry(("embed", "patch", "bias"), "embeddings.patch_embeddings.projection.bias", "copy", (d,)),
        ]
        for i in range(cfg.n_layers):
            b, k = (f"blocks_{i}",), f"encoder.layer.{i}"
            for ours, theirs in (("q", "query"), ("k", "key"), ("v", "value")):
                e += _dense(b + ("attn", ours), f"{k}.attention.attention.{theirs}", d, d)
                if not cfg.qkv_bias:
                    e.pop()
            e += _dense(b + ("attn", "o"), f"{k}.attention.output.dense", d, d)
            e += _ln(b + ("ln_attn",), f"{k}.layernorm_before", d)
            e += _dense(b + ("mlp", "fc_in"), f"{k}.intermediate.dense", d, f)
            e += _dense(b + ("mlp", "fc_out"), f"{k}.output.dense", f, d)
            e += _ln(b + ("ln_mlp",), f"{k}.layernorm_after", d)
        e += _ln(("final_ln",), "layernorm", d)
    else:
        e += [
            Entry(("embed", "word", "embedding"), "embeddings.word_embeddings.weight", "copy", (cfg.vocab_size, d)),
            Entry(("embed", "position", "embedding"), "embeddings.position_embeddings.weight", "copy", (cfg.max_positions, d)),
        ]
        if cfg.type_vocab_size:
            e.append(Entry(("embed", "token_type", "embedding"), "embeddings.token_type_embeddings.weight", "copy", (cfg.type_vocab_size, d)))
        e += _ln(("embed", "ln"), "embeddings.LayerNorm", d)
        for i in range(cfg.n_layers):
            b = (f"blocks_{i}",)
            if cfg.arch == "distilbert":
                k = f"transformer.layer.{i}"
                names = dict(q=f"{k}.attention.q_lin", k=f"{k}.attention.k_lin", v=f"{k}.attention.v_lin",
                             o=f"{k}.attention.out_lin", ln_attn=f"{k}.sa_layer_norm", fc_in=f"{k}.ffn.lin1",
                             fc_out=f"{k}.ffn.lin2", ln_mlp=f"{k}.output_layer_norm")
            else:
                k = f"encoder.layer.{i}"
                names = dict(q=f"{k}.attention.self.query", k=f"{k}.attention.self.key", v=f"{k}.attention.self.value",
                             o=f"{k}.attention.output.dense", ln_attn=f"{k}.attention.output.LayerNorm",
                             fc_in=f"{k}.intermediate.dense", fc_out=f"{k}.output.dense", ln_mlp=f"{k}.output.LayerNorm")
            for ours in ("q", "k", "v", "o"):
                e += _dense(b + ("attn", ours), names[ours], d, d)
            e += _ln(b + ("ln_attn",), names["ln_attn"], d)
            e += _dense(b + ("mlp", "fc_in"), names["fc_in"], d, f)
            e += _dense(b + ("mlp", "fc_out"), names["fc_out"], f, d)
            e += _ln(b + ("ln_mlp",), names["ln_mlp"], d)
    if cfg.has_pooler:
        e += _dense(("head", "pooler"), "pooler.dense", d, d)
    if cfg.n_classes is not None:
        n = cfg.n_classes
        if cfg.arch == "roberta":
            e += _dense(("head", "dense"), "classifier.dense", d, d, head=True)
            e += _dense(("head", "classifier"), "classifier.out_proj", d, n, head=True)
        else:
            if cfg.arch == "distilbert":
                e += _dense(("head", "pre_classifier"), "pre_classifier", d, d, head=True)
            e += _dense(("head", "classifier"), "classifier", d, n, head=True)
    return e


def normalize_keys(cfg_arch: str, state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Strips the base-model prefix and maps legacy spellings to current HF names."""
    prefix = BASE_PREFIX[cfg_arch] + "."
    out = {}
    for key, value in state.items():
        k = key[len(prefix):] if key.startswith(prefix) else key
        for pat, rep in _LEGACY + (_LEGACY_VIT if cfg_arch == "vit" else ()):
            k = re.sub(pat, rep, k)
        if k in out:
            raise InputError(
                f"weight {key!r} appears twice, as {k!r} under another spelling (with and without "
                f"the '{prefix}' prefix, or in a legacy and a current name)."
            )
        out[k] = value
    return out


def to_params(cfg: ArchConfig, state: Mapping[str, np.ndarray], ignore: Iterable[str] = ()) -> dict:
    """HF state dict (already `normalize_keys`-ed) -> nested params dict of numpy arrays.

    Raises:
        InputError: naming every missing, unused or mis-shaped weight (a ValueError).
    """
    remaining = dict(state)
    params: dict = {}
    missing, mis_shaped = [], []
    for entry in table(cfg):
        if entry.key not in remaining:
            missing.append(entry.key)
            continue
        value = np.asarray(remaining.pop(entry.key))
        if tuple(value.shape) != entry.shape:
            mis_shaped.append(f"{entry.key}: {tuple(value.shape)}, expected {entry.shape}")
            continue
        _set(params, entry.path, _to_ours(entry, value))
    ignore = tuple(ignore)
    unused = sorted(
        k for k in remaining
        if k not in _BUFFERS and not _BUFFER_RE.match(k) and not any(fnmatch.fnmatchcase(k, pat) for pat in ignore)
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
        raise InputError(f"cannot load {cfg.arch} weights: " + "; ".join(problems) + ".")
    return params


def from_params(cfg: ArchConfig, params: Mapping) -> dict[str, np.ndarray]:
    """Params tree -> HF state dict with the names of `*For{Sequence,Image}Classification`."""
    prefix = BASE_PREFIX[cfg.arch] + "."
    state = {}
    for entry in table(cfg):
        value = np.asarray(_get(params, entry.path), dtype=np.float32)
        key = entry.key if entry.head else prefix + entry.key
        state[key] = np.ascontiguousarray(_to_hf(entry, value))
    return state


def _to_ours(entry: Entry, value: np.ndarray) -> np.ndarray:
    value = value.astype(np.float32)
    if entry.kind == "dense":
        return value.T
    if entry.kind == "patch":  # [d, c, s, s] -> [c*s*s, d], matching the (c, s, s) patch order
        return value.reshape(value.shape[0], -1).T
    return value


def _to_hf(entry: Entry, value: np.ndarray) -> np.ndarray:
    if entry.kind == "dense":
        return value.T
    if entry.kind == "patch":
        return value.T.reshape(entry.shape)
    return value


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def _get(tree: Mapping, path: tuple[str, ...]):
    for p in path:
        tree = tree[p]
    return tree
