"""The decoder-only forward shared by GPT-2 (`gpt2`), the Llama family (`llama`), GPT-NeoX
(`neox`, Pythia) and Gemma 1/2/3 (`gemma`).

One `Decoder` module, parameterised by `DecoderConfig`, covers GPT-2 (learned positions,
LayerNorm, GELU MLP, fused q/k/v) and the Llama family (rotary positions, RMSNorm, grouped-query
attention, SwiGLU MLP; Qwen2's q/k/v biases; Mistral's sliding window). All are pre-norm:
`x + attn(norm(x))`, then `x + mlp(norm(x))`, and a final norm before the head. GPT-NeoX adds
two options: a parallel residual (`x + attn(ln1(x)) + mlp(ln2(x))`, `parallel_residual`) and
partial rotary embeddings (the first `rotary_dim` dimensions of each head rotate). Gemma adds
its own options (see `DecoderConfig`): (1 + w) RMSNorm, a scaled embedding, post-norms on the
attention and MLP outputs, soft-capped scores and logits, q/k norms, a local rotary base. The
families differ in options of one forward, not in its structure, so the forward is written once
here; `gpt2`, `llama`, `neox`, `phi3` and `gemma` hold what is theirs: the HF config mapping and
the weight tables. Phi-3 (`phi3`) is the Llama forward with q/k/v fused into one kernel
(`arch == "phi3"`), gate and up fused into one (`mlp_kind="gated_fused"`) and LongRoPE
(`rope_type="longrope"`: per-frequency factors, short or long by the example's length, and cos/sin
scaled).

This module holds:

  * `DecoderConfig` and `finish_config` (the checks and fields every decoder config shares);
  * the forward: Flax (Linen) modules with hook points at every site (`Decoder` is the model);
  * weight-table pieces both families use (`linear`, `norm`, `head_table`) and `hf_class_name`;
  * `init_params`, `init_head`, `load_head`, `with_head`: fresh parameters and the head a loaded
    or created decoder gets; `prepare_tokenizer`.

Padding: positions come from the attention mask (`cumsum(mask) - 1`), attention is causal and
never reads padded keys, so a left- and a right-padded batch give the same values at real
tokens. The classifier token is the last real token of each example (`classifier_positions`).

Sites (same names as the encoders, see `apex_jax.sites`):
  * `attn.hook_q` is [batch, pos, n_heads, d_head]; `attn.hook_k`/`attn.hook_v` are
    [batch, pos, n_kv_heads, d_head] (grouped-query attention shares each kv head between
    n_heads / n_kv_heads query heads). q and k are hooked *before* the rotary embedding
    (TransformerLens' hook_q/hook_k; its hook_rot_q/k has no site here).
  * Parallel residual (GPT-NeoX, `use_parallel_residual`): the MLP reads `hook_resid_pre`
    (through its own norm), not `hook_resid_mid`; `hook_resid_mid` is `resid_pre + attn_out`,
    the partial sum the block output adds `hook_mlp_out` to (`resid_post = resid_mid + mlp_out`
    holds in both variants), so a perturbation there reaches the block output but not the MLP.
  * Post-norms (Gemma 2/3, `sandwich_norms`): `hook_attn_out` / `hook_mlp_out` are taken after
    the post-attention / post-feedforward norm, so `resid_mid = resid_pre + attn_out` and
    `resid_post = resid_mid + mlp_out` hold; the projections' raw outputs have no site. With
    q/k norms (Gemma 3) `attn.hook_q` / `attn.hook_k` are the projections before those norms.
  * Gated MLP: `mlp.hook_pre` = gate projection (before the activation), `mlp.hook_post` =
    act(gate) * up, the neurons the down projection reads.
  * `ln_final.hook_normalized`: the final norm's output [batch, pos, d_model] (= HF
    `hidden_states[-1]`; `blocks.{n-1}.hook_resid_post` is the last block's output before it).
  * `head.hook_cls`: the final-normed vector at the classifier token [batch, d_model];
    `head.hook_logits`: [batch, n_classes] (`score`) or [batch, vocab] (next-token logits).

Segmented execution is the encoder's: a run stopping at block k returns the residual entering
block k before its boundary hook; a run starting at block j applies that hook first.

`head_only`: the last block computes queries, attention output and MLP at the classifier token
only (keys and values for all tokens), so its sites after hook_k/hook_v have one position.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from apex_jax import sites as site_lib
from apex_jax.errors import InputError
from apex_jax.models import common
from apex_jax.models.common import Hooks
from apex_jax.models.convert import Entry

Array = Any


# ================================================================================== config
@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Static description of a decoder; hashable, so it can be a static jit argument."""

    arch: str  # "gpt2" | "llama" (Llama, Qwen2, Mistral) | "neox" (GPT-NeoX, Pythia) | "phi3"
    model_type: str  # the HF model_type: gpt2 | llama | qwen2 | mistral | gpt_neox | phi3
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
    # "plain" (fc_in -> act -> fc_out) | "gated" (down(act(gate) * up)) | "gated_fused" (the
    # gated MLP with gate and up as one kernel, gate first: Phi-3's gate_up_proj)
    mlp_kind: str
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
    # Verbalizer (a causal LM read as a classifier, see `loading.verbalizer`): the label tokens
    # whose next-token logits are the class logits, and the prompt template `encode` fills.
    label_token_ids: tuple[int, ...] = ()
    prompt: str = ""
    dtype: str = "float32"  # "float32" | "bfloat16" (see `common.DTYPES`)
    # GPT-NeoX: attention and MLP both read the block input (see the module docstring), and the
    # rotary embedding covers the first `rotary_dim` dimensions of each head (None: all of them).
    parallel_residual: bool = False
    rotary_dim: int | None = None
    # Gemma (`gemma`; every default leaves the other families as they are): RMSNorm scales by
    # (1 + weight) in float32 (`norm_offset`); the token embedding is multiplied by sqrt(d_model)
    # (`embed_scale`); Gemma 2/3 normalise the attention and MLP outputs before each residual add
    # (`sandwich_norms`); scores are scaled by attn_scalar ** -0.5 (None: divided by sqrt(d_head))
    # and tanh soft-capped (`attn_softcap`), next-token logits too (`final_softcap`); Gemma 3
    # RMS-normalises q and k per head before the rotary embedding (`qk_norm`) and rotates its
    # sliding-window layers with its own base and no scaling (`local_rope_theta`).
    norm_offset: bool = False
    embed_scale: bool = False
    sandwich_norms: bool = False
    attn_scalar: float | None = None
    attn_softcap: float | None = None
    final_softcap: float | None = None
    qk_norm: bool = False
    local_rope_theta: float | None = None

    # Fields the encoder-oriented code paths read (a decoder is a text model without token types).
    is_text = True
    is_decoder = True
    type_vocab_size = 0
    num_channels = 0
    has_pooler = False

    @property
    def compute_dtype(self):
        return common.compute_dtype(self.dtype)

    @property
    def rope_dim(self) -> int:
        """How many dimensions of each head the rotary embedding rotates."""
        return self.d_head if self.rotary_dim is None else self.rotary_dim

    @property
    def rope_type(self) -> str:
        return dict(self.rope_scaling).get("rope_type", "default")

    @property
    def rope_attention_factor(self) -> float:
        """The factor cos and sin are multiplied by (LongRoPE's attention scaling; 1 otherwise)."""
        return float(dict(self.rope_scaling).get("attention_factor", 1.0))


def config_entries(from_hf: Callable[[Mapping[str, Any]], DecoderConfig]) -> Callable:
    """Decorates a family's `from_hf`: a missing config entry is an InputError naming it."""

    @functools.wraps(from_hf)
    def wrapped(hf: Mapping[str, Any]) -> DecoderConfig:
        try:
            return from_hf(hf)
        except KeyError as e:
            raise InputError(f"the {hf.get('model_type')} config lacks the entry {e.args[0]!r}.") from None

    return wrapped


def finish_config(hf: Mapping[str, Any], arch: str, fields: dict) -> DecoderConfig:
    """The DecoderConfig of an HF config dict from a family's architecture `fields`: checks the
    activation and adds the token ids every decoder reads (eos; pad, else eos)."""
    if fields["act"] not in common.ACTIVATIONS:
        raise InputError(f"unsupported activation {fields['act']!r}; supported: {', '.join(common.ACTIVATIONS)}.")
    eos = common.first(hf.get("eos_token_id"))
    pad = common.first(hf.get("pad_token_id"))
    return DecoderConfig(
        arch=arch, model_type=hf.get("model_type"), **fields, eos_token_id=eos,
        # The id that fills padded positions (never read: the mask decides); GPT-2 has no pad
        # token, so eos pads, as `encode` does.
        pad_token_id=pad if pad is not None else (eos if eos is not None else 0),
    )


# ================================================================================= forward
def classifier_positions(mask: Array) -> Array:
    """Index of the last real token of each example: [batch, pos] mask -> [batch] int32.

    HF's `*ForSequenceClassification` reads the rightmost token whose id is not the pad id; with
    pad ids only at padded positions that is this token, for left and right padding alike.
    """
    idx = jnp.arange(mask.shape[1], dtype=jnp.int32)
    return jnp.max(jnp.where(mask > 0, idx, 0), axis=1)


def position_ids(mask: Array) -> Array:
    """Position of each token among the real ones: [batch, pos] -> [batch, pos] int32
    (padding gets a valid but unused position)."""
    return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=1) - 1, 0)


def rope_inv_freq(cfg: DecoderConfig, long: bool = False) -> np.ndarray:
    """Inverse frequencies [rope_dim / 2] of the rotary embedding, with the config's scaling
    (LongRoPE: the short factors, or the long ones with `long`)."""
    d = cfg.rope_dim
    scaling = dict(cfg.rope_scaling)
    if cfg.rope_type == "longrope":  # each frequency divided by its own factor
        ext = np.asarray(scaling["long_factor" if long else "short_factor"], np.float32)
        base = (np.float32(cfg.rope_theta) ** (np.arange(0, d, 2, dtype=np.float32) / np.float32(d))).astype(np.float32)
        return (np.float32(1.0) / (ext * base)).astype(np.float32)
    inv = 1.0 / (cfg.rope_theta ** (np.arange(0, d, 2, dtype=np.float32) / np.float32(d)))
    inv = inv.astype(np.float32)
    if cfg.rope_type == "linear":  # positions / factor, folded into the frequencies
        inv = inv / np.float32(scaling["factor"])
    elif cfg.rope_type == "llama3":
        # Llama 3.1: long wavelengths slowed by `factor`, short ones kept, a smooth ramp between.
        factor, lo, hi = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        smooth = (old / wavelen - lo) / (hi - lo)
        mid = (1 - smooth) * inv / factor + smooth * inv
        inv = np.where(wavelen > old / lo, inv / factor, np.where(wavelen < old / hi, inv, mid))
    return inv.astype(np.float32)


def rope_tables(inv_freq: np.ndarray, mask: Array, dtype: Any) -> tuple[Array, Array]:
    """(cos, sin), each [batch, pos, rope_dim] in `dtype`, of the positions `mask` gives."""
    angles = position_ids(mask)[..., None].astype(jnp.float32) * jnp.asarray(inv_freq)
    angles = jnp.concatenate([angles, angles], axis=-1)  # [batch, pos, rope_dim]
    return jnp.cos(angles).astype(dtype), jnp.sin(angles).astype(dtype)


def softcap(x: Array, cap: float | None) -> Array:
    """cap * tanh(x / cap) (Gemma 2's soft capping); x itself when cap is None."""
    return x if cap is None else jnp.tanh(x / cap) * cap


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
    """Rotates x [batch, pos, heads, d_head] by cos/sin [batch, pos, rope_dim] (halves layout);
    with rope_dim < d_head (partial rotary) the dimensions after rope_dim pass unchanged."""
    r = cos.shape[-1]
    if r < x.shape[-1]:
        return jnp.concatenate([apply_rope(x[..., :r], cos, sin), x[..., r:]], axis=-1)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, :, None] + rotated * sin[:, :, None]


class Norm(nn.Module):
    """LayerNorm (GPT-2) or RMSNorm (Llama family), statistics in float32; Gemma's RMSNorm
    (`norm_offset`) scales by (1 + weight) in float32 before casting back, as HF does."""

    cfg: DecoderConfig
    dim: int | None = None  # the normalised width (None: d_model; d_head for Gemma 3's q/k norms)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.cfg
        if cfg.norm_kind == "layernorm":
            return nn.LayerNorm(epsilon=cfg.norm_eps, use_fast_variance=False, name="ln")(x)
        init = nn.initializers.zeros if cfg.norm_offset else nn.initializers.ones  # both: identity
        scale = self.param("scale", init, (self.dim or cfg.d_model,))
        h = x.astype(jnp.float32)
        h = h * jax.lax.rsqrt(jnp.mean(jnp.square(h), axis=-1, keepdims=True) + cfg.norm_eps)
        if cfg.norm_offset:
            return (h * (1.0 + scale.astype(jnp.float32))).astype(x.dtype)
        return scale * h.astype(x.dtype)


class Attention(nn.Module):
    """Causal (optionally windowed) multi-head attention with grouped key/value heads."""

    cfg: DecoderConfig
    window: int | None = None

    @nn.compact
    def __call__(self, x: Array, mask: Array, q_index: Array, rope: tuple | None,
                 hooks: Hooks, prefix: str) -> Array:
        """Attention of the queries at `q_index` over all (real, earlier) tokens.

        Args:
            x: [batch, pos, d_model] normed residual (every token: the keys and values).
            mask: [batch, pos], 1 = real token.
            q_index: [batch, q] token index of each query (arange(pos), or the classifier token).
            rope: (cos, sin), each [batch, pos, d_head], or None for learned positions.

        Returns:
            [batch, q, d_model] attention output.
        """
        cfg = self.cfg
        b, p, _ = x.shape
        h, kv, dh = cfg.n_heads, cfg.n_kv_heads, cfg.d_head
        full = q_index.shape[1] == p  # queries at every token
        if cfg.arch == "gpt2":  # one fused projection (HF Conv1D c_attn)
            qkv = nn.Dense(3 * h * dh, name="qkv")(x)
            q, k, v = jnp.split(qkv, 3, axis=-1)
            if not full:
                q = jnp.take_along_axis(q, q_index[..., None], axis=1)
        elif cfg.arch == "neox":  # one fused Linear, its outputs laid out per head as [q, k, v]
            qkv = nn.Dense(3 * h * dh, use_bias=cfg.qkv_bias, name="qkv")(x).reshape(b, p, h, 3, dh)
            q, k, v = qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :]
            if not full:
                q = jnp.take_along_axis(q, q_index[..., None, None], axis=1)
        elif cfg.arch == "phi3":  # one fused Linear: all query heads, then the kv heads' k, then v
            qkv = nn.Dense((h + 2 * kv) * dh, use_bias=cfg.qkv_bias, name="qkv")(x)
            q, k, v = jnp.split(qkv, [h * dh, (h + kv) * dh], axis=-1)
            if not full:
                q = jnp.take_along_axis(q, q_index[..., None], axis=1)
        else:
            xq = x if full else jnp.take_along_axis(x, q_index[..., None], axis=1)
            q = nn.Dense(h * dh, use_bias=cfg.qkv_bias, name="q")(xq)
            k = nn.Dense(kv * dh, use_bias=cfg.qkv_bias, name="k")(x)
            v = nn.Dense(kv * dh, use_bias=cfg.qkv_bias, name="v")(x)
        nq = q.shape[1]
        q = hooks(f"{prefix}.attn.hook_q", q.reshape(b, nq, h, dh))
        k = hooks(f"{prefix}.attn.hook_k", k.reshape(b, p, kv, dh))
        v = hooks(f"{prefix}.attn.hook_v", v.reshape(b, p, kv, dh))
        if cfg.qk_norm:  # Gemma 3: per-head RMSNorm of q and k, after their hooks, before rope
            q, k = Norm(cfg, dh, name="q_norm")(q), Norm(cfg, dh, name="k_norm")(k)
        if rope is not None:
            cos, sin = rope
            take = lambda t: t if full else jnp.take_along_axis(t, q_index[..., None], axis=1)
            q, k = apply_rope(q, take(cos), take(sin)), apply_rope(k, cos, sin)
        # Query head j reads kv head j // group: group the query heads per kv head.
        group = h // kv
        qg = q.reshape(b, nq, kv, group, dh)
        scores = jnp.einsum("bqkgd,bskd->bkgqs", qg, k).reshape(b, h, nq, p)
        scores = scores / math.sqrt(dh) if cfg.attn_scalar is None else scores * cfg.attn_scalar ** -0.5
        if cfg.attn_softcap is not None:  # Gemma 2: capped before the mask, in float32
            scores = softcap(scores.astype(jnp.float32), cfg.attn_softcap)
        k_index = jnp.arange(p)[None, None, :]
        allowed = (mask[:, None, :] > 0) & (k_index <= q_index[:, :, None])  # [batch, q, key]
        if self.window is not None:
            allowed &= k_index > q_index[:, :, None] - self.window
        scores = jnp.where(allowed[:, None], scores.astype(jnp.float32), jnp.finfo(jnp.float32).min)
        pattern = hooks(f"{prefix}.attn.hook_pattern", jax.nn.softmax(scores, axis=-1).astype(x.dtype))
        z = jnp.einsum("bkgqs,bskd->bqkgd", pattern.reshape(b, kv, group, nq, p), v).reshape(b, nq, h, dh)
        z = hooks(f"{prefix}.attn.hook_z", z)
        return nn.Dense(cfg.d_model, use_bias=cfg.o_bias, name="o")(z.reshape(b, nq, h * dh))


class MLP(nn.Module):
    cfg: DecoderConfig

    @nn.compact
    def __call__(self, x: Array, hooks: Hooks, prefix: str) -> Array:
        """[batch, pos, d_model] -> [batch, pos, d_model]."""
        cfg, act = self.cfg, common.ACT[self.cfg.act]
        if cfg.mlp_kind == "gated":  # SwiGLU: down(act(gate(x)) * up(x))
            pre = hooks(f"{prefix}.mlp.hook_pre", nn.Dense(cfg.d_mlp, use_bias=cfg.mlp_bias, name="gate")(x))
            up = nn.Dense(cfg.d_mlp, use_bias=cfg.mlp_bias, name="up")(x)
            post = hooks(f"{prefix}.mlp.hook_post", act(pre) * up)
        elif cfg.mlp_kind == "gated_fused":  # Phi-3: one Linear, its first half the gate, then up
            pre, up = jnp.split(nn.Dense(2 * cfg.d_mlp, use_bias=cfg.mlp_bias, name="gate_up")(x), 2, axis=-1)
            post = hooks(f"{prefix}.mlp.hook_post", act(hooks(f"{prefix}.mlp.hook_pre", pre)) * up)
        else:
            pre = hooks(f"{prefix}.mlp.hook_pre", nn.Dense(cfg.d_mlp, use_bias=cfg.mlp_bias, name="fc_in")(x))
            post = hooks(f"{prefix}.mlp.hook_post", act(pre))
        return nn.Dense(cfg.d_model, use_bias=cfg.mlp_bias, name="fc_out")(post)


class Block(nn.Module):
    """Pre-norm decoder block: x + attn(norm(x)), then + mlp(norm(x)); with a parallel
    residual x + attn(norm(x)) + mlp(norm'(x))."""

    cfg: DecoderConfig
    index: int

    @nn.compact
    def __call__(self, x: Array, mask: Array, q_index: Array, rope: tuple | None,
                 hooks: Hooks) -> Array:
        """x: [batch, pos, d_model] -> [batch, q, d_model], q = q_index.shape[1].

        With `sandwich_norms` (Gemma 2/3) the attention and MLP outputs pass their post-norm
        before their hooks, so hook_attn_out / hook_mlp_out are what the residual adds."""
        cfg, p = self.cfg, f"blocks.{self.index}"
        window = cfg.sliding_window if self.index in cfg.sliding_layers else None
        x = hooks(f"{p}.hook_resid_pre", x)
        a = Attention(cfg, window, name="attn")(Norm(cfg, name="ln_attn")(x), mask, q_index, rope, hooks, p)
        if cfg.sandwich_norms:
            a = Norm(cfg, name="ln_attn_post")(a)
        a = hooks(f"{p}.hook_attn_out", a)
        keep = x if q_index.shape[1] == x.shape[1] else jnp.take_along_axis(x, q_index[..., None], axis=1)
        mid = hooks(f"{p}.hook_resid_mid", keep + a)
        # Parallel residual: the MLP reads the block input, resid_mid only carries to the output.
        mlp_in = Norm(cfg, name="ln_mlp")(keep if cfg.parallel_residual else mid)
        m = MLP(cfg, name="mlp")(mlp_in, hooks, p)
        if cfg.sandwich_norms:
            m = Norm(cfg, name="ln_mlp_post")(m)
        m = hooks(f"{p}.hook_mlp_out", m)
        return mid + m  # the caller applies hook_resid_post (a boundary site)


class _Kernel(nn.Module):
    """A bias-free projection's kernel [d_in, features] (an LM head that may be read in part)."""

    features: int

    @nn.compact
    def __call__(self, d_in: int) -> Array:
        return self.param("kernel", nn.initializers.lecun_normal(), (d_in, self.features))


class DecoderHead(nn.Module):
    """`score` (sequence classification, no bias) or the LM head on the classifier token; with
    `label_token_ids` (a verbalizer) the LM head's columns of those tokens only."""

    cfg: DecoderConfig

    @nn.compact
    def __call__(self, cls: Array, hooks: Hooks, embedding: Array | None = None) -> Array:
        """cls: [batch, d_model] (final-normed) -> logits [batch, n_classes] (n_classes = vocab
        for a plain LM head, the number of label tokens for a verbalizer).

        embedding: the token embedding [vocab, d_model] of a tied LM head."""
        cfg = self.cfg
        # the head and the logits in float32 whatever the precision (a no-op cast in float32)
        cls = hooks("head.hook_cls", cls.astype(jnp.float32))
        if not cfg.lm_head:
            return hooks("head.hook_logits", nn.Dense(cfg.n_classes, use_bias=False, name="score")(cls))
        if cfg.tie_embeddings:
            w = embedding.T  # [d_model, vocab]
        else:
            w = _Kernel(cfg.vocab_size, name="lm_head")(cfg.d_model)
        if cfg.label_token_ids:  # only the label tokens' logits: no vocabulary-wide matmul
            w = jnp.take(w, jnp.asarray(cfg.label_token_ids), axis=1)
        return hooks("head.hook_logits", softcap(cls @ w.astype(cls.dtype), cfg.final_softcap))


class Decoder(nn.Module):
    """The whole decoder; `start`/`stop` select a segment of blocks (see module docstring)."""

    cfg: DecoderConfig
    scan: bool = True  # run the block stack as scans over stacked layers (`common.run_blocks`)

    @nn.compact
    def __call__(self, inputs, hooks: Hooks, start: int = 0, stop: int | None = None,
                 head_only: bool = False):
        cfg = self.cfg
        head_only = head_only and stop is None and cfg.n_classes is not None
        wte = nn.Embed(cfg.vocab_size, cfg.d_model, name="embed")
        if start == 0 and not isinstance(inputs, tuple):
            mask = jnp.asarray(inputs["attention_mask"])
            x = wte(inputs["input_ids"])
            if cfg.embed_scale:  # Gemma: sqrt(d_model) as a float32, cast to the model's dtype (as HF)
                x = x * jnp.asarray(np.float32(math.sqrt(cfg.d_model))).astype(x.dtype)
            if cfg.positions == "learned":
                wpe = nn.Embed(cfg.max_positions, cfg.d_model, name="position")
                x = x + wpe(position_ids(mask))
        else:
            x, mask = inputs  # a cached prefix: (residual entering block `start`, mask)
        b, p = mask.shape
        cls_index = classifier_positions(mask)  # [batch]
        rope = rope_local = None
        if cfg.positions == "rope":
            if cfg.rope_type == "longrope":
                # LongRoPE: the long factors for an example longer than the original context
                # (chosen per example from its real length; HF chooses per batch)
                angles = position_ids(mask)[..., None].astype(jnp.float32) * jnp.asarray(rope_inv_freq(cfg))
                long = jnp.sum(mask, axis=1) > dict(cfg.rope_scaling)["original_max_position_embeddings"]
                long_angles = position_ids(mask)[..., None].astype(jnp.float32) * jnp.asarray(rope_inv_freq(cfg, True))
                angles = jnp.where(long[:, None, None], long_angles, angles)
                angles = jnp.concatenate([angles, angles], axis=-1)  # [batch, pos, rope_dim]
                cos, sin = jnp.cos(angles), jnp.sin(angles)
                if cfg.rope_attention_factor != 1.0:  # LongRoPE's attention scaling, as HF: on cos and sin
                    cos, sin = cos * cfg.rope_attention_factor, sin * cfg.rope_attention_factor
                rope = rope_local = (cos.astype(x.dtype), sin.astype(x.dtype))
            else:
                rope = rope_local = rope_tables(rope_inv_freq(cfg), mask, x.dtype)
            if cfg.local_rope_theta is not None:  # Gemma 3's sliding layers: their own base
                local = dataclasses.replace(cfg, rope_theta=cfg.local_rope_theta, rope_scaling=())
                rope_local = rope_tables(rope_inv_freq(local), mask, x.dtype)
        rope_of = lambda i: rope_local if i in cfg.sliding_layers else rope  # noqa: E731
        all_index = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
        end = cfg.n_layers if stop is None else stop
        tail = end - 1 if head_only and end > start else end  # head_only: the last block runs unrolled, one query
        if self.is_initializing():  # Linen init creates every block's parameters
            for i in range(start, tail):
                x = hooks(site_lib.boundary_site(i), x)
                x = Block(cfg, i, name=f"blocks_{i}")(x, mask, all_index, rope_of(i), hooks)
        else:
            params = self.variables["params"]
            x = common.run_blocks(
                x, hooks, range(start, tail),
                lambda i, p, h, hk: Block(cfg, i, parent=None).apply({"params": p}, h, mask, all_index, rope_of(i), hk),
                lambda i: params[f"blocks_{i}"],
                kind_of=lambda i: i in cfg.sliding_layers,  # windowed and full attention never share a scan
                scan=self.scan,
                stacked=params.get(common.STACKED),
            )
        if tail < end:
            x = hooks(site_lib.boundary_site(tail), x)
            x = Block(cfg, tail, name=f"blocks_{tail}")(x, mask, cls_index[:, None], rope_of(tail), hooks)
        if stop is not None:  # prefix mode: the boundary hook of `stop` belongs to the suffix
            return x, mask, None
        x = hooks(site_lib.boundary_site(cfg.n_layers), x)
        normed = hooks("ln_final.hook_normalized", Norm(cfg, name="ln_final")(x))
        logits = None
        if cfg.n_classes is not None:
            if normed.shape[1] == 1 and head_only:
                cls = normed[:, 0]
            else:
                cls = jnp.take_along_axis(normed, cls_index[:, None, None], axis=1)[:, 0]
            embedding = wte.embedding if cfg.lm_head and cfg.tie_embeddings else None
            logits = DecoderHead(cfg, name="head")(cls, hooks, embedding)
        return x, mask, logits


# ================================================================================= weights
def linear_entries(path: tuple[str, ...], key: str, d_in: int, d_out: int, bias: bool, head: bool = False) -> list[Entry]:
    """A torch Linear ([out, in] weight, transposed) and its optional bias."""
    e = [Entry(path + ("kernel",), f"{key}.weight", "dense", (d_out, d_in), head)]
    if bias:
        e.append(Entry(path + ("bias",), f"{key}.bias", "copy", (d_out,), head))
    return e


def conv1d_entries(path: tuple[str, ...], key: str, d_in: int, d_out: int) -> list[Entry]:
    """An HF Conv1D ([in, out] weight, stored as is) and its bias."""
    return [
        Entry(path + ("kernel",), f"{key}.weight", "copy", (d_in, d_out)),
        Entry(path + ("bias",), f"{key}.bias", "copy", (d_out,)),
    ]


def norm_entries(cfg: DecoderConfig, path: tuple[str, ...], key: str) -> list[Entry]:
    """A LayerNorm (scale and bias) or an RMSNorm (scale)."""
    d = cfg.d_model
    if cfg.norm_kind == "layernorm":
        return [Entry(path + ("ln", "scale"), f"{key}.weight", "copy", (d,)),
                Entry(path + ("ln", "bias"), f"{key}.bias", "copy", (d,))]
    return [Entry(path + ("scale",), f"{key}.weight", "copy", (d,))]


def head_table(cfg: DecoderConfig) -> list[Entry]:
    """The head's weights (absolute keys): `score`, or an untied `lm_head`, or none."""
    d = cfg.d_model
    e: list[Entry] = []
    if cfg.n_classes is not None:
        if cfg.lm_head:
            if not cfg.tie_embeddings:  # a tied head reads the token embedding
                e += linear_entries(("head", "lm_head"), "lm_head", d, cfg.vocab_size, False, head=True)
        else:
            e += linear_entries(("head", "score"), "score", d, cfg.n_classes, False, head=True)
    return e


_LM_CLASSES = ("ForCausalLM", "LMHeadModel")
# An LM head's weight key (relative): `lm_head`, GPT-NeoX's `embed_out` (what transformers writes).
_LM_HEAD_KEYS = ("lm_head.weight", "embed_out.weight")


def hf_class_name(cfg: DecoderConfig, name: str, lm_class: str | None = None) -> str:
    """The transformers class a saved folder declares (`architectures` in config.json).

    Args:
        name: the family's class-name prefix ("GPT2", "Llama", ...).
        lm_class: the causal-LM class, when it is not `{name}ForCausalLM`.
    """
    if cfg.n_classes is None:
        return f"{name}Model"
    if cfg.lm_head:
        return lm_class or f"{name}ForCausalLM"
    return f"{name}ForSequenceClassification"


# ============================================================================== parameters
def init_params(cfg: DecoderConfig, seed: int) -> Any:
    """Fresh parameters (Linen init) of a decoder."""
    dummy = {"input_ids": np.zeros((1, 2), np.int32), "attention_mask": np.ones((1, 2), np.int32)}
    variables = Decoder(cfg).init(jax.random.key(seed), dummy, Hooks({}, frozenset(), {}))
    return jax.tree.map(np.asarray, dict(variables["params"]))


def init_head(cfg: DecoderConfig, seed: int) -> dict:
    """Fresh parameters of the head alone (`score` kernel [d_model, n_classes])."""
    hooks = Hooks({}, frozenset(), {})
    variables = DecoderHead(cfg).init(jax.random.key(seed), np.zeros((1, cfg.d_model), np.float32), hooks)
    return jax.tree.map(np.asarray, dict(variables["params"]))


def load_head(folder: Path, hf: Mapping[str, Any], base: DecoderConfig, state: dict[str, np.ndarray], *,
              num_labels: int | None, seed: int) -> tuple[DecoderConfig, dict[str, np.ndarray], bool]:
    """The head a loaded decoder gets, from its (`convert.normalize_keys`-ed) state dict.

      * a `score` weight (`*ForSequenceClassification`): that classifier (num_labels must agree);
      * a causal LM (`*ForCausalLM` / `GPT2LMHeadModel`, or an `lm_head` weight): the next-token
        head, logits [batch, vocab] at the classifier token, unless `num_labels` is given: then a
        fresh `score` head replaces it, as `AutoModelForSequenceClassification` does;
      * a base model: a fresh `score` head with `num_labels`, else no head.

    Returns:
        (config with its head fields, state with a fresh head's weights added, whether the head
        is fresh).

    Raises:
        InputError: num_labels disagreeing with the checkpoint or < 1; a tied head saved with
            other values than the embedding.
    """
    fresh = False  # a new, untrained score head
    lm_key = next((k for k in _LM_HEAD_KEYS if k in state), None)
    is_lm = lm_key is not None or any(a.endswith(_LM_CLASSES) for a in hf.get("architectures") or [])
    if "score.weight" in state:
        n = state["score.weight"].shape[0]
        if num_labels is not None and num_labels != n:
            raise InputError(
                f"{folder} has a {n}-class score head but num_labels={num_labels} was asked; drop "
                "num_labels, or remove the score weights to train a new head."
            )
        cfg = dataclasses.replace(base, n_classes=n)
    elif is_lm and num_labels is None:
        cfg = dataclasses.replace(base, n_classes=base.vocab_size, lm_head=True)
        if base.tie_embeddings and lm_key is not None:
            # A tied head saved twice: it must be the embedding, then it carries nothing new.
            lm, emb = state.pop(lm_key), next(
                (state[k] for k in ("embed_tokens.weight", "wte.weight", "embed_in.weight") if k in state), None)
            if emb is None or lm.shape != emb.shape or not np.array_equal(lm, emb):
                raise InputError(
                    f"{folder}: tie_word_embeddings is set but {lm_key} differs from the token "
                    "embedding; set tie_word_embeddings=false in config.json to load an untied head."
                )
    else:
        cfg = dataclasses.replace(base, n_classes=num_labels)
        if num_labels is not None:
            if num_labels < 1:
                raise InputError(f"num_labels must be >= 1; got {num_labels}.")
            state = {k: v for k, v in state.items() if k not in _LM_HEAD_KEYS}  # replaced by `score`
            kernel = init_head(cfg, seed)["score"]["kernel"]
            state["score.weight"] = np.ascontiguousarray(kernel.T)
            fresh = True
    return cfg, state, fresh


def with_head(base: DecoderConfig, *, num_labels: int | None, lm_head: bool) -> DecoderConfig:
    """The config of a created decoder: a `score` head with `num_labels` classes, or the
    next-token head (`lm_head=True`), or none."""
    if lm_head and num_labels is not None:
        raise InputError("give num_labels (a score head) or lm_head=True, not both.")
    n = base.vocab_size if lm_head else num_labels
    return dataclasses.replace(base, n_classes=n, lm_head=lm_head)


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Decoder tokenizers pad on the right, with eos as the pad token when they have none
    (GPT-2); the classifier token is found from the attention mask, so either side works."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer
