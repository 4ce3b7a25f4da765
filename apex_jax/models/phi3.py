"""Phi-3 (model_type `phi3`: Phi-3, Phi-3.5-mini, Phi-4-mini): HF config mapping and weight table
(the forward is `decoder.Decoder`).

Phi-3 is the Llama forward (pre-norm, RMSNorm, rotary positions, grouped-query attention,
SwiGLU MLP, no biases) with two projections fused: `qkv_proj` (its outputs all query heads, then
the kv heads' keys, then their values) and `gate_up_proj` (the gate, then the up projection).
Both are kept fused here, as HF stores them (`attn/qkv`, `mlp/gate_up`), and split in the
forward. Options computed: `partial_rotary_factor` (the first `int(d_head * factor)` dimensions
of each head rotate), a `sliding_window` on every layer (as HF, which windows all layers when it
is set), and rope types `default` and `longrope` (the 128k variants: each frequency divided by
its own factor, `short_factor` for an example of at most `original_max_position_embeddings`
tokens and `long_factor` beyond, and cos/sin multiplied by the attention factor). The older
spellings `rope_scaling` with type `su` or `yarn` mean `longrope`, as transformers reads them.

LongRoPE: HF picks short or long factors for a whole batch from its padded length; here each
example's own length decides, so an input gets the same values in any batch (identical to HF on
an unpadded input, and on any batch whose real and padded lengths are on the same side). As in
transformers' `Phi3Config`, the top-level `original_max_position_embeddings` (default 4096) is the
switch point, and the attention factor, when not given, is
`sqrt(1 + ln(factor) / ln(original))` with `factor` the config's, else
`max_position_embeddings / original` (1 when factor <= 1).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from apex_jax.errors import InputError
from apex_jax.models.common import hf_get
from apex_jax.models.convert import Entry
from apex_jax.models.decoder import (
    DecoderConfig,
    config_entries,
    finish_config,
    head_table,
    linear_entries,
    norm_entries,
)
from apex_jax.models.decoder import hf_class_name as _class_name

MODEL_TYPES = {"phi3": "phi3"}  # model_type -> our architecture
BASE_PREFIX = {"phi3": "model"}  # the base model's prefix of the body weights
ROPE_TYPES = ("default", "longrope")
_LEGACY_LONGROPE = ("su", "yarn")  # older Phi-3 configs' names of longrope (transformers maps them)
_ORIGINAL_MAX = 4096  # Phi3Config's default original_max_position_embeddings


@config_entries
def from_hf(hf: Mapping[str, Any]) -> DecoderConfig:
    """Builds a DecoderConfig from a Phi-3 HF config dict (head fields are filled by the loader).

    Raises:
        InputError: a required entry is missing, or an option this implementation does not
            compute (naming it).
    """
    d, h = hf["hidden_size"], hf["num_attention_heads"]
    kv = hf_get(hf, "num_key_value_heads", default=h)
    if h % kv:
        raise InputError(f"num_attention_heads {h} is not a multiple of num_key_value_heads {kv}.")
    d_head = hf_get(hf, "head_dim", default=d // h)
    window = hf.get("sliding_window")
    n = hf["num_hidden_layers"]
    fields = dict(
        n_layers=n, d_model=d, n_heads=h, n_kv_heads=kv, d_head=d_head, d_mlp=hf["intermediate_size"],
        act=hf.get("hidden_act", "silu"), norm_eps=float(hf.get("rms_norm_eps", 1e-5)),
        norm_kind="rms", positions="rope", mlp_kind="gated_fused",
        qkv_bias=False, o_bias=False, mlp_bias=False,  # Phi-3 has no biases (HF reads no option)
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)), vocab_size=hf["vocab_size"],
        max_positions=hf.get("max_position_embeddings", 4096),
        **_rope(hf, d_head),
        # HF windows every layer when sliding_window is set (Phi-3-mini-4k: 2047)
        **({"sliding_window": int(window), "sliding_layers": tuple(range(n))} if window is not None else {}),
    )
    return finish_config(hf, "phi3", fields)


def _rope(hf: Mapping[str, Any], d_head: int) -> dict:
    """rope_theta, the rotary dimensions and the LongRoPE parameters, from transformers 5's
    `rope_parameters` or the 4.x spelling (`rope_theta`, `rope_scaling`, `partial_rotary_factor`
    at the top level)."""
    params = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    if any(isinstance(v, Mapping) for v in params.values()):
        raise InputError("per-layer-type rope parameters are not supported for Phi-3.")
    rope_type = params.get("rope_type", params.get("type", "default"))
    rope_type = "longrope" if rope_type in _LEGACY_LONGROPE else rope_type
    if rope_type not in ROPE_TYPES:
        raise InputError(f"unsupported Phi-3 rope type {rope_type!r}; supported: {', '.join(ROPE_TYPES)}.")
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
    partial = float(params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)))
    rotary_dim = int(d_head * partial)  # as HF: int(head_dim * partial_rotary_factor)
    if not 0 < rotary_dim <= d_head or rotary_dim % 2:
        raise InputError(
            f"partial_rotary_factor {partial} gives {rotary_dim} rotary dimensions of a {d_head}-dimensional "
            "head; it must be an even number between 2 and the head size."
        )
    out = {"rope_theta": theta, "rotary_dim": None if rotary_dim == d_head else rotary_dim}
    if rope_type == "default":
        return out
    missing = [k for k in ("short_factor", "long_factor") if k not in params]
    if missing:
        raise InputError(f"rope type 'longrope' needs {missing} in the config's rope parameters.")
    short, long = _factors(params, "short_factor", rotary_dim), _factors(params, "long_factor", rotary_dim)
    # Phi3Config's top-level field wins over the rope parameters' copy (transformers does so)
    original = int(hf.get("original_max_position_embeddings", _ORIGINAL_MAX))
    factor = params.get("factor")
    factor = float(factor) if factor is not None else hf.get("max_position_embeddings", 4096) / original
    attention = params.get("attention_factor")
    if attention is None:
        attention = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    scaling = {"rope_type": "longrope", "short_factor": short, "long_factor": long,
               "original_max_position_embeddings": original, "attention_factor": float(attention)}
    return {**out, "rope_scaling": tuple(sorted(scaling.items()))}


def _factors(params: Mapping[str, Any], name: str, rotary_dim: int) -> tuple[float, ...]:
    """A LongRoPE factor list as a tuple (the config is hashable), one factor per frequency."""
    value = params[name]
    if not isinstance(value, (list, tuple)) or len(value) != rotary_dim // 2:
        raise InputError(
            f"longrope {name} must list {rotary_dim // 2} numbers (one per rotary frequency); got {value!r}."
        )
    return tuple(float(v) for v in value)


def key_renames(arch: str) -> tuple[tuple[str, str], ...]:
    """Phi-3 checkpoints need no renames (`convert.normalize_keys`)."""
    return ()


def table(cfg: DecoderConfig) -> list[Entry]:
    """The full weight table of a Phi-3 described by `cfg` (keys relative to the base model for
    the body; head keys absolute). q/k/v and gate/up stay fused, in HF's order."""
    d, f, dh = cfg.d_model, cfg.d_mlp, cfg.d_head
    qd, kvd = cfg.n_heads * dh, cfg.n_kv_heads * dh
    e = [Entry(("embed", "embedding"), "embed_tokens.weight", "copy", (cfg.vocab_size, d))]
    for i in range(cfg.n_layers):
        b, k = (f"blocks_{i}",), f"layers.{i}"
        e += norm_entries(cfg, b + ("ln_attn",), f"{k}.input_layernorm")
        e += linear_entries(b + ("attn", "qkv"), f"{k}.self_attn.qkv_proj", d, qd + 2 * kvd, False)
        e += linear_entries(b + ("attn", "o"), f"{k}.self_attn.o_proj", qd, d, False)
        e += norm_entries(cfg, b + ("ln_mlp",), f"{k}.post_attention_layernorm")
        e += linear_entries(b + ("mlp", "gate_up"), f"{k}.mlp.gate_up_proj", d, 2 * f, False)
        e += linear_entries(b + ("mlp", "fc_out"), f"{k}.mlp.down_proj", f, d, False)
    e += norm_entries(cfg, ("ln_final",), "norm")
    return e + head_table(cfg)


def hf_class_name(cfg: DecoderConfig) -> str:
    """The transformers class a saved folder declares (`architectures` in config.json)."""
    return _class_name(cfg, "Phi3")
