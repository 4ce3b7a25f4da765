"""GPT-NeoX (Pythia): its HF config mapping and weight table (the forward is `decoder.Decoder`).

GPT-NeoX is a pre-LN decoder with LayerNorm (with bias), a GELU MLP, one fused q/k/v Linear
(`query_key_value`, its outputs laid out per head as [q, k, v]: HF views them as
[heads, 3 * d_head] and chunks the last axis) and rotary embeddings on the first
`rotary_pct * d_head` dimensions of each head (rotate-half layout). By default
(`use_parallel_residual`, Pythia) attention and MLP both read the block input:
`x + attn(ln1(x)) + mlp(ln2(x))`; `hook_resid_mid` is then `x + attn(ln1(x))`, which the MLP does
not read (see `decoder`). With `use_parallel_residual=false` the block is the usual sequential
one. The LM head is untied by default and saved as `embed_out` (as transformers writes it;
4.x and 5.x both load it; `lm_head` is read too). HF stores torch Linear weights ([out, in],
transposed here); the fused q/k/v kernel is kept fused, in HF's per-head order, and split in
the forward.
"""

from __future__ import annotations

from typing import Any, Mapping

from apex_jax.errors import InputError
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

MODEL_TYPES = {"gpt_neox": "neox"}  # model_type -> our architecture
BASE_PREFIX = {"neox": "gpt_neox"}  # the base model's prefix of the body weights
ROPE_TYPES = ("default",)
# The LM head is `embed_out` in checkpoints (transformers 5 too writes it so, though its module is
# `lm_head`); older checkpoints' per-layer buffers (causal-mask constants, rotary frequencies)
# are renamed to the spellings `convert` already drops as buffers.
_RENAMES = (
    (r"^lm_head\.", "embed_out."),
    (r"^layers\.(\d+)\.attention\.rotary_emb\.inv_freq$", r"layers.\1.self_attn.rotary_emb.inv_freq"),
    (r"^layers\.(\d+)\.attention\.(bias|masked_bias)$", r"h.\1.attn.\2"),
)


@config_entries
def from_hf(hf: Mapping[str, Any]) -> DecoderConfig:
    """Builds a DecoderConfig from a GPT-NeoX HF config dict (head fields are filled by the
    loader). Reads transformers 5's `rope_parameters` and the older spelling (`rotary_pct`,
    `rotary_emb_base`) that Pythia's config.json files use.

    Raises:
        InputError: a required entry is missing, or an option this implementation does not
            compute (naming it).
    """
    d, h = hf["hidden_size"], hf["num_attention_heads"]
    if d % h:
        raise InputError(f"hidden_size {d} is not divisible by num_attention_heads {h}.")
    d_head = d // h
    params = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in ROPE_TYPES:
        raise InputError(f"unsupported GPT-NeoX rope type {rope_type!r}; supported: {', '.join(ROPE_TYPES)}.")
    partial = float(params.get("partial_rotary_factor", hf.get("rotary_pct", 0.25)))
    rotary_dim = int(d_head * partial)  # as HF: int(head_size * partial_rotary_factor)
    if not 0 < rotary_dim <= d_head or rotary_dim % 2:
        raise InputError(
            f"rotary_pct {partial} gives {rotary_dim} rotary dimensions of a {d_head}-dimensional head; "
            "it must be an even number between 2 and the head size."
        )
    attention_bias = bool(hf.get("attention_bias", True))
    fields = dict(
        n_layers=hf["num_hidden_layers"], d_model=d, n_heads=h, n_kv_heads=h, d_head=d_head,
        d_mlp=hf["intermediate_size"], act=hf.get("hidden_act", "gelu"),
        norm_eps=float(hf.get("layer_norm_eps", 1e-5)), norm_kind="layernorm", positions="rope",
        mlp_kind="plain", qkv_bias=attention_bias, o_bias=attention_bias, mlp_bias=True,
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)), vocab_size=hf["vocab_size"],
        max_positions=hf.get("max_position_embeddings", 2048),
        rope_theta=float(params.get("rope_theta", hf.get("rotary_emb_base", 10000.0))),
        parallel_residual=bool(hf.get("use_parallel_residual", True)),
        rotary_dim=None if rotary_dim == d_head else rotary_dim,
    )
    return finish_config(hf, "neox", fields)


def key_renames(arch: str) -> tuple[tuple[str, str], ...]:
    """Older GPT-NeoX spellings -> current ones (`convert.normalize_keys`)."""
    return _RENAMES


def table(cfg: DecoderConfig) -> list[Entry]:
    """The full weight table of a GPT-NeoX described by `cfg` (keys relative to the base model
    for the body; head keys absolute)."""
    d, f = cfg.d_model, cfg.d_mlp
    e = [Entry(("embed", "embedding"), "embed_in.weight", "copy", (cfg.vocab_size, d))]
    for i in range(cfg.n_layers):
        b, k = (f"blocks_{i}",), f"layers.{i}"
        e += norm_entries(cfg, b + ("ln_attn",), f"{k}.input_layernorm")
        e += linear_entries(b + ("attn", "qkv"), f"{k}.attention.query_key_value", d, 3 * d, cfg.qkv_bias)
        e += linear_entries(b + ("attn", "o"), f"{k}.attention.dense", d, d, cfg.o_bias)
        e += norm_entries(cfg, b + ("ln_mlp",), f"{k}.post_attention_layernorm")
        e += linear_entries(b + ("mlp", "fc_in"), f"{k}.mlp.dense_h_to_4h", d, f, True)
        e += linear_entries(b + ("mlp", "fc_out"), f"{k}.mlp.dense_4h_to_h", f, d, True)
    e += norm_entries(cfg, ("ln_final",), "final_layer_norm")
    return e + [x._replace(key="embed_out.weight") if x.key == "lm_head.weight" else x for x in head_table(cfg)]


def hf_class_name(cfg: DecoderConfig) -> str:
    """The transformers class a saved folder declares (`architectures` in config.json)."""
    return _class_name(cfg, "GPTNeoX")
