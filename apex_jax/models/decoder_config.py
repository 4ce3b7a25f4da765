"""Architecture description of decoder-only models (GPT-2 and the Llama family).

One frozen dataclass covers GPT-2 (learned positions, LayerNorm, GELU MLP, fused Conv1D q/k/v)
and the Llama family (RMSNorm, rotary embeddings, grouped-query attention, SwiGLU MLP); Qwen2 and
Mistral are Llama with their options (q/k/v biases; a sliding attention window). The HF config
dict is parsed here once; the modules read only this dataclass.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping
from apex_jax.errors import InputError

# model_type -> our decoder family
DECODERS = {"gpt2": "gpt2", "llama": "llama", "qwen2": "llama", "mistral": "llama"}
ROPE_TYPES = ("default", "linear", "llama3")
_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "quick_gelu", "relu", "silu", "swish")


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Static description of a decoder; hashable, so it can be a static jit argument."""

    arch: str  # "gpt2" | "llama" (Llama, Qwen2, Mistral)
    model_type: str  # the HF model_type: gpt2 | llama | qwen2 | mistral
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int  # < n_heads: grouped-query attention
    d_head: int
    d_mlp: int
    act: str
    norm_eps: float
    norm_kind: str  # "layernorm" (GPT-2) | "rms"
    positions: str  # "learned" (GPT-2) | "rope"
    mlp_kind: str  # "plain" (fc_in -> act -> fc_out) | "gated" (down(act(gate) * up))
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    tie_embeddings: bool
    vocab_size: int
    max_positions: int
    pad_token_id: int = 0  # fills padded positions: the config's pad id, else eos
    eos_token_id: int | None = None
    rope_theta: float = 10000.0
    rope_scaling: tuple = ()  # sorted (key, value) items of the rope parameters, e.g. (("factor", 2.0), ("rope_type", "linear"))
    sliding_window: int | None = None
    sliding_layers: tuple[int, ...] = ()  # blocks whose attention is windowed
    n_classes: int | None = None  # None: no head; vocab_size for a causal-LM head
    lm_head: bool = False  # True: `*ForCausalLM` head (next-token logits), else `score`
    # Verbalizer (a causal LM read as a classifier, see `decoder_loading.verbalizer`): the label
    # tokens whose next-token logits are the class logits, and the prompt template `encode` fills.
    label_token_ids: tuple[int, ...] = ()
    prompt: str = ""
    dtype: str = "float32"  # "float32" | "bfloat16" (see models.config.ArchConfig.dtype)

    # Fields the encoder-oriented code paths read (a decoder is a text model without token types).
    is_text = True
    is_decoder = True
    type_vocab_size = 0
    num_channels = 0
    has_pooler = False

    @property
    def compute_dtype(self):
        from apex_jax.models.config import compute_dtype

        return compute_dtype(self.dtype)

    @property
    def rope_type(self) -> str:
        return dict(self.rope_scaling).get("rope_type", "default")


def _get(cfg: Mapping[str, Any], *names, default=None):
    for n in names:
        if n in cfg and cfg[n] is not None:
            return cfg[n]
    return default


def _first(v):
    return v[0] if isinstance(v, (list, tuple)) else v


def decoder_from_hf(hf: Mapping[str, Any]) -> DecoderConfig:
    """Builds a DecoderConfig from an HF config dict (head fields are filled by the loader).

    Raises:
        ValueError: a required entry is missing, or an option this implementation does not
            compute (naming it).
    """
    try:
        return _decoder_from_hf(hf)
    except KeyError as e:
        raise InputError(f"the {hf.get('model_type')} config lacks the entry {e.args[0]!r}.") from None


def _decoder_from_hf(hf: Mapping[str, Any]) -> DecoderConfig:
    model_type = hf.get("model_type")
    arch = DECODERS[model_type]
    if arch == "gpt2":
        for flag in ("scale_attn_by_inverse_layer_idx", "add_cross_attention"):
            if hf.get(flag):
                raise InputError(f"GPT-2 option {flag}=True is not supported.")
        if not hf.get("scale_attn_weights", True):
            raise InputError("GPT-2 option scale_attn_weights=False is not supported.")
        d, h = hf["n_embd"], hf["n_head"]
        common = dict(
            n_layers=hf["n_layer"], d_model=d, n_heads=h, n_kv_heads=h, d_head=d // h,
            d_mlp=_get(hf, "n_inner", default=4 * d), act=hf.get("activation_function", "gelu_new"),
            norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)), norm_kind="layernorm",
            positions="learned", mlp_kind="plain", qkv_bias=True, o_bias=True, mlp_bias=True,
            tie_embeddings=bool(hf.get("tie_word_embeddings", True)), vocab_size=hf["vocab_size"],
            max_positions=hf.get("n_positions", 1024),
        )
        if d % h:
            raise InputError(f"n_embd {d} is not divisible by n_head {h}.")
    else:
        d, h = hf["hidden_size"], hf["num_attention_heads"]
        kv = _get(hf, "num_key_value_heads", default=h)
        if h % kv:
            raise InputError(f"num_attention_heads {h} is not a multiple of num_key_value_heads {kv}.")
        attention_bias = bool(hf.get("attention_bias", False))
        common = dict(
            n_layers=hf["num_hidden_layers"], d_model=d, n_heads=h, n_kv_heads=kv,
            d_head=_get(hf, "head_dim", default=d // h), d_mlp=hf["intermediate_size"],
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
    if common["act"] not in _ACTIVATIONS:
        raise InputError(f"unsupported activation {common['act']!r}; supported: {', '.join(_ACTIVATIONS)}.")
    eos = _first(hf.get("eos_token_id"))
    pad = _first(hf.get("pad_token_id"))
    return DecoderConfig(
        arch=arch, model_type=model_type, **common, eos_token_id=eos,
        # The id that fills padded positions (never read: the mask decides); GPT-2 has no pad
        # token, so eos pads, as `encode` does.
        pad_token_id=pad if pad is not None else (eos if eos is not None else 0),
    )


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
