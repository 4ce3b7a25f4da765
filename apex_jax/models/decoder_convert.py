"""Weight tables of the decoders: our parameter paths <-> Hugging Face state-dict keys.

The generic strict machinery (`convert.to_params` / `convert.from_params`) walks these tables.
GPT-2 keeps HF's Conv1D layout ([in, out], stored as is, q/k/v fused in `c_attn`); the Llama
family uses torch Linear weights ([out, in], transposed).
"""

from __future__ import annotations

from apex_jax.models.convert import Entry
from apex_jax.models.decoder_config import DecoderConfig


def _linear(path, key, d_in, d_out, bias, head=False) -> list[Entry]:
    e = [Entry(path + ("kernel",), f"{key}.weight", "dense", (d_out, d_in), head)]
    if bias:
        e.append(Entry(path + ("bias",), f"{key}.bias", "copy", (d_out,), head))
    return e


def _conv1d(path, key, d_in, d_out) -> list[Entry]:
    return [
        Entry(path + ("kernel",), f"{key}.weight", "copy", (d_in, d_out)),
        Entry(path + ("bias",), f"{key}.bias", "copy", (d_out,)),
    ]


def _norm(cfg: DecoderConfig, path, key) -> list[Entry]:
    d = cfg.d_model
    if cfg.norm_kind == "layernorm":
        return [Entry(path + ("ln", "scale"), f"{key}.weight", "copy", (d,)),
                Entry(path + ("ln", "bias"), f"{key}.bias", "copy", (d,))]
    return [Entry(path + ("scale",), f"{key}.weight", "copy", (d,))]


def decoder_table(cfg: DecoderConfig) -> list[Entry]:
    """The full weight table of a decoder described by `cfg` (keys relative to the base model
    for the body; head keys absolute)."""
    d, f, dh = cfg.d_model, cfg.d_mlp, cfg.d_head
    qd, kvd = cfg.n_heads * dh, cfg.n_kv_heads * dh
    e: list[Entry] = []
    if cfg.arch == "gpt2":
        e += [Entry(("embed", "embedding"), "wte.weight", "copy", (cfg.vocab_size, d)),
              Entry(("position", "embedding"), "wpe.weight", "copy", (cfg.max_positions, d))]
        for i in range(cfg.n_layers):
            b, k = (f"blocks_{i}",), f"h.{i}"
            e += _norm(cfg, b + ("ln_attn",), f"{k}.ln_1")
            e += _conv1d(b + ("attn", "qkv"), f"{k}.attn.c_attn", d, 3 * d)
            e += _conv1d(b + ("attn", "o"), f"{k}.attn.c_proj", d, d)
            e += _norm(cfg, b + ("ln_mlp",), f"{k}.ln_2")
            e += _conv1d(b + ("mlp", "fc_in"), f"{k}.mlp.c_fc", d, f)
            e += _conv1d(b + ("mlp", "fc_out"), f"{k}.mlp.c_proj", f, d)
        e += _norm(cfg, ("ln_final",), "ln_f")
    else:
        e.append(Entry(("embed", "embedding"), "embed_tokens.weight", "copy", (cfg.vocab_size, d)))
        for i in range(cfg.n_layers):
            b, k = (f"blocks_{i}",), f"layers.{i}"
            e += _norm(cfg, b + ("ln_attn",), f"{k}.input_layernorm")
            for ours, d_out in (("q", qd), ("k", kvd), ("v", kvd)):
                e += _linear(b + ("attn", ours), f"{k}.self_attn.{ours}_proj", d, d_out, cfg.qkv_bias)
            e += _linear(b + ("attn", "o"), f"{k}.self_attn.o_proj", qd, d, cfg.o_bias)
            e += _norm(cfg, b + ("ln_mlp",), f"{k}.post_attention_layernorm")
            e += _linear(b + ("mlp", "gate"), f"{k}.mlp.gate_proj", d, f, cfg.mlp_bias)
            e += _linear(b + ("mlp", "up"), f"{k}.mlp.up_proj", d, f, cfg.mlp_bias)
            e += _linear(b + ("mlp", "fc_out"), f"{k}.mlp.down_proj", f, d, cfg.mlp_bias)
        e += _norm(cfg, ("ln_final",), "norm")
    if cfg.n_classes is not None:
        if cfg.lm_head:
            if not cfg.tie_embeddings:  # a tied head reads the token embedding
                e += _linear(("head", "lm_head"), "lm_head", d, cfg.vocab_size, False, head=True)
        else:
            e += _linear(("head", "score"), "score", d, cfg.n_classes, False, head=True)
    return e
