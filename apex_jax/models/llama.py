"""The Llama family (Llama, Qwen2, Mistral): HF config mapping and weight table (the forward is
`decoder.Decoder`).

Llama is a pre-norm decoder with RMSNorm, rotary position embeddings (optionally scaled:
linear, llama3), grouped-query attention and a SwiGLU MLP; Qwen2 and Mistral are Llama with
their options (q/k/v biases; a sliding attention window). HF stores torch Linear weights
([out, in], transposed here).
"""

from __future__ import annotations

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

MODEL_TYPES = {"llama": "llama", "qwen2": "llama", "mistral": "llama"}  # model_type -> our architecture
BASE_PREFIX = {"llama": "model"}  # the base model's prefix of the body weights
ROPE_TYPES = ("default", "linear", "llama3")
_HF_NAMES = {"llama": "Llama", "qwen2": "Qwen2", "mistral": "Mistral"}


@config_entries
def from_hf(hf: Mapping[str, Any]) -> DecoderConfig:
    """Builds a DecoderConfig from a Llama / Qwen2 / Mistral HF config dict (head fields are
    filled by the loader).

    Raises:
        InputError: a required entry is missing, or an option this implementation does not
            compute (naming it).
    """
    model_type = hf.get("model_type")
    d, h = hf["hidden_size"], hf["num_attention_heads"]
    kv = hf_get(hf, "num_key_value_heads", default=h)
    if h % kv:
        raise InputError(f"num_attention_heads {h} is not a multiple of num_key_value_heads {kv}.")
    attention_bias = bool(hf.get("attention_bias", False))
    fields = dict(
        n_layers=hf["num_hidden_layers"], d_model=d, n_heads=h, n_kv_heads=kv,
        d_head=hf_get(hf, "head_dim", default=d // h), d_mlp=hf["intermediate_size"],
        act=hf.get("hidden_act", "silu"), norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        norm_kind="rms", positions="rope", mlp_kind="gated",
        # Qwen2: q/k/v always carry biases, o_proj never; Llama: `attention_bias` for all four.
        qkv_bias=model_type == "qwen2" or attention_bias,
        o_bias=model_type != "qwen2" and attention_bias,
        mlp_bias=bool(hf.get("mlp_bias", False)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)), vocab_size=hf["vocab_size"],
        max_positions=hf.get("max_position_embeddings", 2048),
        **_rope(hf), **_sliding(hf, model_type),
    )
    return finish_config(hf, "llama", fields)


def _rope(hf: Mapping[str, Any]) -> dict:
    """rope_theta and the scaling parameters, from transformers 5 `rope_parameters` or the
    4.x spelling (`rope_theta` + `rope_scaling`) that most published checkpoints use."""
    params = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    if any(isinstance(v, Mapping) for v in params.values()):
        raise InputError("per-layer-type rope parameters are not supported.")
    rope_type = params.pop("rope_type", params.pop("type", "default"))
    if rope_type not in ROPE_TYPES:
        raise InputError(f"unsupported rope type {rope_type!r}; supported: {', '.join(ROPE_TYPES)}.")
    theta = float(params.pop("rope_theta", hf.get("rope_theta", 10000.0)))
    partial = params.pop("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
    if partial not in (None, 1, 1.0):
        raise InputError(f"partial_rotary_factor {partial} is not supported (only 1.0).")
    if rope_type == "default":
        return {"rope_theta": theta, "rope_scaling": ()}
    need = {"linear": ("factor",), "llama3": ("factor", "low_freq_factor", "high_freq_factor")}[rope_type]
    missing = [k for k in need if k not in params]
    if missing:
        raise InputError(f"rope type {rope_type!r} needs {missing} in the config's rope parameters.")
    kept = {k: float(params[k]) for k in need}
    if rope_type == "llama3":
        kept["original_max_position_embeddings"] = int(
            params.get("original_max_position_embeddings", hf.get("max_position_embeddings", 2048))
        )
    kept["rope_type"] = rope_type
    return {"rope_theta": theta, "rope_scaling": tuple(sorted(kept.items()))}


def _sliding(hf: Mapping[str, Any], model_type: str) -> dict:
    """Which blocks attend through a sliding window (Mistral: all; Qwen2: its layer_types)."""
    n = hf["num_hidden_layers"]
    window = hf.get("sliding_window")
    if model_type == "qwen2":
        if not hf.get("use_sliding_window", False) or window is None:
            return {}
        types = hf.get("layer_types") or [
            "sliding_attention" if i >= hf.get("max_window_layers", n) else "full_attention" for i in range(n)
        ]
        layers = tuple(i for i, t in enumerate(types) if t == "sliding_attention")
    elif model_type == "mistral":
        if window is None:
            return {}
        layers = tuple(range(n))
    else:
        return {}
    return {"sliding_window": int(window), "sliding_layers": layers} if layers else {}


def key_renames(arch: str) -> tuple[tuple[str, str], ...]:
    """Llama-family checkpoints need no renames (`convert.normalize_keys`)."""
    return ()


def table(cfg: DecoderConfig) -> list[Entry]:
    """The full weight table of a Llama-family decoder described by `cfg` (keys relative to the
    base model for the body; head keys absolute)."""
    d, f, dh = cfg.d_model, cfg.d_mlp, cfg.d_head
    qd, kvd = cfg.n_heads * dh, cfg.n_kv_heads * dh
    e = [Entry(("embed", "embedding"), "embed_tokens.weight", "copy", (cfg.vocab_size, d))]
    for i in range(cfg.n_layers):
        b, k = (f"blocks_{i}",), f"layers.{i}"
        e += norm_entries(cfg, b + ("ln_attn",), f"{k}.input_layernorm")
        for ours, d_out in (("q", qd), ("k", kvd), ("v", kvd)):
            e += linear_entries(b + ("attn", ours), f"{k}.self_attn.{ours}_proj", d, d_out, cfg.qkv_bias)
        e += linear_entries(b + ("attn", "o"), f"{k}.self_attn.o_proj", qd, d, cfg.o_bias)
        e += norm_entries(cfg, b + ("ln_mlp",), f"{k}.post_attention_layernorm")
        e += linear_entries(b + ("mlp", "gate"), f"{k}.mlp.gate_proj", d, f, cfg.mlp_bias)
        e += linear_entries(b + ("mlp", "up"), f"{k}.mlp.up_proj", d, f, cfg.mlp_bias)
        e += linear_entries(b + ("mlp", "fc_out"), f"{k}.mlp.down_proj", f, d, cfg.mlp_bias)
    e += norm_entries(cfg, ("ln_final",), "norm")
    return e + head_table(cfg)


def hf_class_name(cfg: DecoderConfig) -> str:
    """The transformers class a saved folder declares (`architectures` in config.json)."""
    return _class_name(cfg, _HF_NAMES[cfg.model_type])
