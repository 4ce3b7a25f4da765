"""Gemma 1, 2 and 3 (text): HF config mapping and weight table (the forward is `decoder.Decoder`).

All three are Llama-shaped pre-norm decoders (rotary positions, grouped-query attention, a gated
MLP, here GeGLU with the tanh GELU) with Gemma's own parts:

  * RMSNorm that scales by (1 + weight), computed in float32 (`norm_offset`), and the token
    embedding multiplied by sqrt(d_model), a float32 cast to the model's dtype (`embed_scale`);
  * Gemma 2 and 3: four norms per block, `x + post_attn(attn(pre_attn(x)))` then
    `x + post_ff(mlp(pre_ff(x)))` (`sandwich_norms`); attention scaled by
    query_pre_attn_scalar ** -0.5; sliding-window and global layers (`layer_types`, else Gemma 2
    alternates starting with a sliding layer and Gemma 3 makes every 6th layer global);
  * Gemma 2: tanh soft-capping of the attention scores (`attn_logit_softcapping`) and of the
    causal LM's logits (`final_logit_softcapping`; a `score` head is never capped, as in HF);
  * Gemma 3: RMSNorm of each query and key head before the rotary embedding (`q_norm`,
    `k_norm`), the sliding layers rotating with their own base (`rope_local_base_freq`, or
    rope_parameters["sliding_attention"]) and only the global layers scaled (linear, as the
    published checkpoints do), and the causal LM's final soft-capping when set. Gemma 3's
    attention never soft-caps (transformers ignores `attn_logit_softcapping` there, so do we).

Gemma 1 uses `hidden_act` ("gelu" means the tanh GELU, as transformers reads it), Gemma 2/3
`hidden_activation`. Entries a config.json lacks take the transformers config class's default
(head_dim 256, query_pre_attn_scalar 256, Gemma 2's soft caps 50 / 30, ...), as transformers
would. The multimodal `gemma3` model type (a vision tower and `text_config`) is not read.
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

MODEL_TYPES = {"gemma": "gemma", "gemma2": "gemma", "gemma3_text": "gemma"}  # model_type -> our architecture
BASE_PREFIX = {"gemma": "model"}  # the base model's prefix of the body weights
ROPE_TYPES = ("default", "linear")
LAYER_TYPES = ("sliding_attention", "full_attention")
# model_type -> (class-name prefix, causal-LM class)
_HF_NAMES = {"gemma": ("Gemma", None), "gemma2": ("Gemma2", None), "gemma3_text": ("Gemma3Text", "Gemma3ForCausalLM")}
# The transformers config classes' defaults for entries that change the computation.
_DEFAULTS = {
    "gemma2": {"attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, "rope_theta": 10000.0},
    "gemma3_text": {"attn_logit_softcapping": None, "final_logit_softcapping": None, "rope_theta": 1_000_000.0,
                    "rope_local_base_freq": 10000.0},
}


@config_entries
def from_hf(hf: Mapping[str, Any]) -> DecoderConfig:
    """Builds a DecoderConfig from a Gemma / Gemma 2 / Gemma 3 text HF config dict (head fields
    are filled by the loader).

    Raises:
        InputError: a required entry is missing, or an option this implementation does not
            compute (naming it): bidirectional attention, a rope type other than default and
            linear (on sliding layers: other than default), unknown layer types, sliding layers
            without a window.
    """
    model_type = hf.get("model_type")
    d, h = hf["hidden_size"], hf["num_attention_heads"]
    kv = hf_get(hf, "num_key_value_heads", default=16 if model_type == "gemma" else 4)  # transformers' defaults
    if h % kv:
        raise InputError(f"num_attention_heads {h} is not a multiple of num_key_value_heads {kv}.")
    if hf.get("use_bidirectional_attention"):
        raise InputError(f"use_bidirectional_attention is not supported ({model_type} runs causal attention only).")
    if model_type == "gemma":
        act = hf.get("hidden_act", "gelu_pytorch_tanh")
        act = "gelu_pytorch_tanh" if act == "gelu" else act  # transformers reads Gemma 1's "gelu" so
    else:
        act = hf.get("hidden_activation", "gelu_pytorch_tanh")
    attention_bias = bool(hf.get("attention_bias", False))
    d_head = hf_get(hf, "head_dim", default=256)
    fields = dict(
        n_layers=hf["num_hidden_layers"], d_model=d, n_heads=h, n_kv_heads=kv, d_head=d_head,
        d_mlp=hf["intermediate_size"], act=act, norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        norm_kind="rms", positions="rope", mlp_kind="gated", qkv_bias=attention_bias,
        o_bias=attention_bias, mlp_bias=False, tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        vocab_size=hf["vocab_size"],
        max_positions=hf.get("max_position_embeddings", 131_072 if model_type == "gemma3_text" else 8192),
        norm_offset=True, embed_scale=True,
    )
    if model_type == "gemma":
        # transformers 5 `rope_parameters`, or the 4.x `rope_theta` + `rope_scaling` of published checkpoints
        rope = _rope(hf.get("rope_parameters") or hf.get("rope_scaling"), float(hf.get("rope_theta", 10000.0)))
        return finish_config(hf, "gemma", {**fields, "attn_scalar": float(d_head), **rope})
    defaults = _DEFAULTS[model_type]
    fields.update(
        sandwich_norms=True, attn_scalar=float(hf.get("query_pre_attn_scalar", 256)),
        final_softcap=_cap(hf, "final_logit_softcapping", defaults), **_sliding(hf, model_type),
    )
    if model_type == "gemma2":
        theta = float(hf.get("rope_theta", defaults["rope_theta"]))
        rope = _rope(hf.get("rope_parameters") or hf.get("rope_scaling"), theta)
        fields.update(attn_softcap=_cap(hf, "attn_logit_softcapping", defaults), **rope)
    else:
        fields.update(qk_norm=True, **_gemma3_rope(hf, defaults))
    return finish_config(hf, "gemma", fields)


def _cap(hf: Mapping[str, Any], key: str, defaults: Mapping[str, Any]) -> float | None:
    """A soft cap (None: none); the config class's default where the entry is absent."""
    cap = hf.get(key, defaults[key])
    if cap is not None and not cap > 0:
        raise InputError(f"{key} must be a positive number or null; got {cap!r}.")
    return None if cap is None else float(cap)


def _rope(params: Mapping[str, Any] | None, theta: float, where: str = "",
          types: tuple[str, ...] = ROPE_TYPES) -> dict:
    """rope_theta and scaling of one rope parameter dict (its `rope_theta`, else `theta`)."""
    params = dict(params or {})
    rope_type = params.pop("rope_type", params.pop("type", "default"))
    if rope_type not in types:
        raise InputError(f"unsupported rope type {rope_type!r}{where}; supported: {', '.join(types)}.")
    theta = float(params.pop("rope_theta", theta))
    if rope_type == "default":
        return {"rope_theta": theta, "rope_scaling": ()}
    if "factor" not in params:
        raise InputError(f"rope type {rope_type!r}{where} needs 'factor' in the config's rope parameters.")
    return {"rope_theta": theta, "rope_scaling": (("factor", float(params["factor"])), ("rope_type", rope_type))}


def _gemma3_rope(hf: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict:
    """Gemma 3's two rotary embeddings: rope_parameters keyed by layer type (transformers 5), or
    `rope_theta` + `rope_scaling` for the global layers and `rope_local_base_freq` for the
    sliding ones (the spelling of published checkpoints)."""
    params = dict(hf.get("rope_parameters") or {})
    unknown = sorted(set(params) - set(LAYER_TYPES))
    if unknown:
        raise InputError(
            f"gemma3_text rope_parameters must be keyed by layer type ({', '.join(LAYER_TYPES)}); got {unknown}."
        )
    full = dict(params.get("full_attention") or {})
    full.update(hf.get("rope_scaling") or {})  # as transformers: the 4.x scaling is the global layers'
    out = _rope(full, float(hf.get("rope_theta", defaults["rope_theta"])), " on full_attention layers")
    local_theta = float(hf.get("rope_local_base_freq", defaults["rope_local_base_freq"]))
    local = _rope(params.get("sliding_attention"), local_theta, " on sliding_attention layers", ("default",))
    return {**out, "local_rope_theta": local["rope_theta"]}


def _sliding(hf: Mapping[str, Any], model_type: str) -> dict:
    """The sliding-window blocks: `layer_types`, else transformers' default pattern (Gemma 2:
    every other layer from the first; Gemma 3: all but every `sliding_window_pattern`-th)."""
    n = hf["num_hidden_layers"]
    types = hf.get("layer_types")
    if types is None:
        every = 2 if model_type == "gemma2" else int(hf.get("sliding_window_pattern", 6))
        types = ["sliding_attention" if (i + 1) % every else "full_attention" for i in range(n)]
    if len(types) != n:
        raise InputError(f"layer_types has {len(types)} entries for {n} layers.")
    unknown = sorted(set(types) - set(LAYER_TYPES))
    if unknown:
        raise InputError(f"unsupported layer types {unknown}; supported: {', '.join(LAYER_TYPES)}.")
    layers = tuple(i for i, t in enumerate(types) if t == "sliding_attention")
    window = hf.get("sliding_window", 4096)
    if not layers:
        return {}
    if window is None:
        raise InputError(f"layer_types names sliding_attention layers {list(layers)} but sliding_window is null.")
    return {"sliding_window": int(window), "sliding_layers": layers}


def key_renames(arch: str) -> tuple[tuple[str, str], ...]:
    """Gemma checkpoints need no renames (`convert.normalize_keys`)."""
    return ()


def table(cfg: DecoderConfig) -> list[Entry]:
    """The full weight table of a Gemma decoder described by `cfg` (keys relative to the base
    model for the body; head keys absolute)."""
    d, f, dh = cfg.d_model, cfg.d_mlp, cfg.d_head
    qd, kvd = cfg.n_heads * dh, cfg.n_kv_heads * dh
    e = [Entry(("embed", "embedding"), "embed_tokens.weight", "copy", (cfg.vocab_size, d))]
    for i in range(cfg.n_layers):
        b, k = (f"blocks_{i}",), f"layers.{i}"
        e += norm_entries(cfg, b + ("ln_attn",), f"{k}.input_layernorm")
        for ours, d_out in (("q", qd), ("k", kvd), ("v", kvd)):
            e += linear_entries(b + ("attn", ours), f"{k}.self_attn.{ours}_proj", d, d_out, cfg.qkv_bias)
        e += linear_entries(b + ("attn", "o"), f"{k}.self_attn.o_proj", qd, d, cfg.o_bias)
        if cfg.qk_norm:
            e += [Entry(b + ("attn", f"{x}_norm", "scale"), f"{k}.self_attn.{x}_norm.weight", "copy", (dh,))
                  for x in ("q", "k")]
        if cfg.sandwich_norms:  # Gemma 2/3: post_attention_layernorm is the attention's post-norm
            e += norm_entries(cfg, b + ("ln_attn_post",), f"{k}.post_attention_layernorm")
            e += norm_entries(cfg, b + ("ln_mlp",), f"{k}.pre_feedforward_layernorm")
            e += norm_entries(cfg, b + ("ln_mlp_post",), f"{k}.post_feedforward_layernorm")
        else:  # Gemma 1: post_attention_layernorm is the MLP's pre-norm, as in Llama
            e += norm_entries(cfg, b + ("ln_mlp",), f"{k}.post_attention_layernorm")
        e += linear_entries(b + ("mlp", "gate"), f"{k}.mlp.gate_proj", d, f, False)
        e += linear_entries(b + ("mlp", "up"), f"{k}.mlp.up_proj", d, f, False)
        e += linear_entries(b + ("mlp", "fc_out"), f"{k}.mlp.down_proj", f, d, False)
    e += norm_entries(cfg, ("ln_final",), "norm")
    return e + head_table(cfg)


def hf_class_name(cfg: DecoderConfig) -> str:
    """The transformers class a saved folder declares (`architectures` in config.json)."""
    name, lm_class = _HF_NAMES[cfg.model_type]
    return _class_name(cfg, name, lm_class)
