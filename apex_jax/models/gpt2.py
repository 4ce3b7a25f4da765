"""GPT-2: its HF config mapping and weight table (the forward is `decoder.Decoder`).

GPT-2 is a pre-LN decoder with learned positions, LayerNorm, a GELU MLP and one fused q/k/v
projection. HF stores its projections as Conv1D weights ([in, out], kept as they are, q/k/v
fused in `c_attn`).
"""

from __future__ import annotations

from typing import Any, Mapping

from apex_jax.errors import InputError
from apex_jax.models.common import hf_get
from apex_jax.models.convert import Entry
from apex_jax.models.decoder import (
    DecoderConfig,
    config_entries,
    conv1d_entries,
    finish_config,
    head_table,
    norm_entries,
)
from apex_jax.models.decoder import hf_class_name as _class_name

MODEL_TYPES = {"gpt2": "gpt2"}  # model_type -> our architecture
BASE_PREFIX = {"gpt2": "transformer"}  # the base model's prefix of the body weights


@config_entries
def from_hf(hf: Mapping[str, Any]) -> DecoderConfig:
    """Builds a DecoderConfig from a GPT-2 HF config dict (head fields are filled by the loader).

    Raises:
        InputError: a required entry is missing, or an option this implementation does not
            compute (naming it).
    """
    for flag in ("scale_attn_by_inverse_layer_idx", "add_cross_attention"):
        if hf.get(flag):
            raise InputError(f"GPT-2 option {flag}=True is not supported.")
    if not hf.get("scale_attn_weights", True):
        raise InputError("GPT-2 option scale_attn_weights=False is not supported.")
    d, h = hf["n_embd"], hf["n_head"]
    fields = dict(
        n_layers=hf["n_layer"], d_model=d, n_heads=h, n_kv_heads=h, d_head=d // h,
        d_mlp=hf_get(hf, "n_inner", default=4 * d), act=hf.get("activation_function", "gelu_new"),
        norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)), norm_kind="layernorm",
        positions="learned", mlp_kind="plain", qkv_bias=True, o_bias=True, mlp_bias=True,
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)), vocab_size=hf["vocab_size"],
        max_positions=hf.get("n_positions", 1024),
    )
    if d % h:
        raise InputError(f"n_embd {d} is not divisible by n_head {h}.")
    return finish_config(hf, "gpt2", fields)


def key_renames(arch: str) -> tuple[tuple[str, str], ...]:
    """GPT-2 checkpoints need no renames (`convert.normalize_keys`)."""
    return ()


def table(cfg: DecoderConfig) -> list[Entry]:
    """The full weight table of a GPT-2 described by `cfg` (keys relative to the base model for
    the body; head keys absolute)."""
    d, f = cfg.d_model, cfg.d_mlp
    e = [Entry(("embed", "embedding"), "wte.weight", "copy", (cfg.vocab_size, d)),
         Entry(("position", "embedding"), "wpe.weight", "copy", (cfg.max_positions, d))]
    for i in range(cfg.n_layers):
        b, k = (f"blocks_{i}",), f"h.{i}"
        e += norm_entries(cfg, b + ("ln_attn",), f"{k}.ln_1")
        e += conv1d_entries(b + ("attn", "qkv"), f"{k}.attn.c_attn", d, 3 * d)
        e += conv1d_entries(b + ("attn", "o"), f"{k}.attn.c_proj", d, d)
        e += norm_entries(cfg, b + ("ln_mlp",), f"{k}.ln_2")
        e += conv1d_entries(b + ("mlp", "fc_in"), f"{k}.mlp.c_fc", d, f)
        e += conv1d_entries(b + ("mlp", "fc_out"), f"{k}.mlp.c_proj", f, d)
    e += norm_entries(cfg, ("ln_final",), "ln_f")
    return e + head_table(cfg)


def hf_class_name(cfg: DecoderConfig) -> str:
    """The transformers class a saved folder declares (`architectures` in config.json)."""
    return _class_name(cfg, "GPT2", lm_class="GPT2LMHeadModel")
