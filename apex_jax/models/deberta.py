"""The DeBERTa family: DeBERTa-v2 and v3 (model_type `deberta-v2`) and DeBERTa v1 (`deberta`).

DeBERTa is a post-LN encoder like BERT (`encoder`) whose attention adds *disentangled* relative
position terms to the content score. With q, k the content queries and keys of a head and
P = the relative-position embedding table (shared by all layers), the score of query i for key j is

    (q_i·k_j + [c2p] q_i·Pk[δ(i, j)] + [p2c] k_j·Pq[δ(i, j)]) / sqrt(d_head · scale_factor)

where Pk / Pq are P projected by the layer's key / query projections (`share_att_key`, v3) or by
their own (`pos_key_proj` / `pos_query_proj`), δ(i, j) the (bucketed) relative position i - j
shifted into the table and clamped to its ends, and scale_factor = 1 + len(pos_att_type) (HF
counts the configured terms even when `relative_attention` is off). Positions are log-bucketed
beyond `position_buckets / 2` (v3: 256 buckets over `max_relative_positions` = 512), the table is
LayerNorm-ed first with `norm_rel_ebd: layer_norm` (v3), and absolute position embeddings are
added to the input only with `position_biased_input` (v3: off). v2 checkpoints may add a
convolution to block 0 (`conv_kernel_size`): block 0's output is
`LN(out + act(conv(block input))) · mask`. The embedding output (optionally projected from
`embedding_size`) is multiplied by the attention mask, as HF does, and padding is masked on both
sides of the attention (a padded query attends uniformly to every key, as in HF). The head is HF's
ContextPooler (`pooler_hidden_act`(dense([CLS]))) and a linear classifier.

DeBERTa v1 differs in its weights only: one fused q/k/v projection without bias, laid out per
head as [q, k, v] (as GPT-NeoX), plus `q_bias` and `v_bias`; `pos_proj` (no bias) and
`pos_q_proj`; no buckets, no table LayerNorm, no convolution; the table is cut to the span
min(length, max_relative_positions), which gives the same scores as clamping into the whole table.

Sites (the encoder's names; DESIGN.md, README "Activation sites"):
  * `attn.hook_q/k/v`: the content projections (v1: q + q_bias, v + v_bias), before scaling;
    the relative terms are not sites of their own.
  * `attn.hook_pattern`: the softmax of the full score above (content + c2p + p2c), i.e. HF's
    `attentions`.
  * `hook_resid_post` of block 0 with a convolution: after the convolution (= HF hidden_states[1]).
    The convolution reads the block input (after `hook_resid_pre`'s interventions) with padded
    positions zeroed, so interventions at padding never reach real tokens (HF's own input there
    is already zero).
  * `head.hook_cls`: the ContextPooler's output (the vector the classifier reads).

Options a config sets that this module does not compute are refused by `from_hf`, naming them.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from apex_jax import sites as site_lib
from apex_jax.models import common, encoder
from apex_jax.models.common import Hooks
from apex_jax.models.convert import Entry
from apex_jax.models.encoder import MLP, _dense, _layer_norm, _ln

Array = Any

MODEL_TYPES = {"deberta-v2": "deberta-v2", "deberta": "deberta"}  # model_type -> our architecture
BASE_PREFIX = {"deberta-v2": "deberta", "deberta": "deberta"}
POS_ATT_TYPES = ("c2p", "p2c")
NORM_REL_EBD = ("none", "layer_norm")
# HF's ACT2FN names the block, pooler and convolution activations; the convolution's default is tanh.
ACT: dict[str, Any] = {**common.ACT, "tanh": jnp.tanh}
HF_CLASS = {"deberta-v2": "DebertaV2ForSequenceClassification", "deberta": "DebertaForSequenceClassification"}


# ================================================================================== config
@dataclasses.dataclass(frozen=True)
class DebertaConfig:
    """Static description of a DeBERTa encoder; hashable, so it can be a static jit argument."""

    arch: str  # "deberta-v2" (v2 and v3) | "deberta" (v1)
    n_layers: int
    d_model: int
    n_heads: int
    d_mlp: int
    act: str
    ln_eps: float
    vocab_size: int
    max_positions: int  # max_position_embeddings
    type_vocab_size: int
    pad_token_id: int
    embedding_size: int  # word embeddings' width; != d_model adds a projection (no bias)
    position_biased_input: bool  # absolute position embeddings added to the input
    relative_attention: bool
    pos_att_type: tuple[str, ...]  # a subset of POS_ATT_TYPES
    max_relative_positions: int  # resolved: < 1 in the HF config means max_position_embeddings
    position_buckets: int = 0  # > 0: log-bucketed relative positions (v2 only)
    share_att_key: bool = False  # the relative terms use the content q/k projections (v2 only)
    norm_rel_ebd: bool = False  # LayerNorm on the relative table (v2 only)
    conv_kernel_size: int = 0  # > 0: the convolution of block 0 (v2 only)
    conv_groups: int = 1
    conv_act: str = "tanh"
    pooler_act: str = "gelu"
    n_classes: int | None = None  # None: no classification head
    # precision, as `encoder.ArchConfig.dtype`
    dtype: str = "float32"

    is_decoder = False
    is_text = True
    num_channels = 0
    image_size = 0

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def compute_dtype(self):
        return common.compute_dtype(self.dtype)

    @property
    def scale_factor(self) -> int:
        """1 + the number of relative terms: scores are divided by sqrt(d_head · this)."""
        return 1 + len(self.pos_att_type)

    @property
    def rel_table_size(self) -> int:
        """Rows of the relative-position table (2 × the span of relative positions)."""
        return 2 * (self.position_buckets if self.position_buckets > 0 else self.max_relative_positions)


def _listed(value: Any, what: str) -> list[str]:
    """HF's spelling of a list option: a list, or one string of '|'-separated items."""
    if value is None:
        return []
    if isinstance(value, str):
        return [x.strip() for x in value.lower().split("|") if x.strip()]
    if isinstance(value, (list, tuple)):
        return [str(x).strip().lower() for x in value]
    raise ValueError(f"{what} must be a list or a '|'-separated string; got {value!r}.")


def _check_act(name: str, what: str) -> str:
    if name not in ACT:
        raise ValueError(f"unsupported {what} {name!r}; supported: {', '.join(ACT)}.")
    return name


def from_hf(hf: Mapping[str, Any]) -> DebertaConfig:
    """Builds a DebertaConfig from the HF config dict of a DeBERTa (v1, v2 or v3) encoder (head
    fields are filled by the loader).

    Raises:
        KeyError: a required entry is missing.
        ValueError: an option this implementation does not compute (naming it).
    """
    arch = MODEL_TYPES[hf.get("model_type")]
    v2 = arch == "deberta-v2"
    d, h = hf["hidden_size"], hf["num_attention_heads"]
    if d % h:
        raise ValueError(f"hidden_size {d} is not divisible by num_attention_heads {h}.")
    head_size = hf.get("attention_head_size")
    if v2 and head_size is not None and head_size != d // h:
        raise ValueError(f"attention_head_size {head_size} is not supported: the attention output projection "
                         f"is hidden_size x hidden_size, so heads must be hidden_size / num_attention_heads = {d // h}.")
    if not v2 and hf.get("talking_head"):
        raise ValueError("talking_head (DeBERTa v1's head-mixing projections) is not supported.")
    pos_att = _listed(hf.get("pos_att_type"), "pos_att_type")
    bad = [x for x in pos_att if x not in POS_ATT_TYPES]
    if bad or len(set(pos_att)) != len(pos_att):
        raise ValueError(f"unsupported pos_att_type {pos_att}; each of {', '.join(POS_ATT_TYPES)} at most once.")
    max_pos = hf["max_position_embeddings"]
    max_rel = hf.get("max_relative_positions", -1)
    max_rel = max_pos if max_rel is None or max_rel < 1 else int(max_rel)
    relative = bool(hf.get("relative_attention", False))
    pooler_size = common.hf_get(hf, "pooler_hidden_size", default=d)
    if pooler_size != d:
        raise ValueError(f"pooler_hidden_size {pooler_size} differs from hidden_size {d}; the classifier reads "
                         "a hidden_size vector, so transformers cannot run this config either.")
    fields = dict(
        arch=arch, n_layers=hf["num_hidden_layers"], d_model=d, n_heads=h, d_mlp=hf["intermediate_size"],
        act=_check_act(hf.get("hidden_act", "gelu"), "hidden_act"),
        ln_eps=float(hf.get("layer_norm_eps", 1e-7)), vocab_size=hf["vocab_size"], max_positions=max_pos,
        type_vocab_size=int(hf.get("type_vocab_size", 0) or 0),
        pad_token_id=common.hf_get(hf, "pad_token_id", default=0),
        embedding_size=common.hf_get(hf, "embedding_size", default=d),
        position_biased_input=bool(hf.get("position_biased_input", True)),
        relative_attention=relative, pos_att_type=tuple(pos_att), max_relative_positions=max_rel,
        pooler_act=_check_act(hf.get("pooler_hidden_act", "gelu"), "pooler_hidden_act"),
    )
    if not v2:  # v1 reads none of the v2 options (buckets, shared keys, table norm, convolution)
        return DebertaConfig(**fields)
    buckets = int(common.hf_get(hf, "position_buckets", default=-1))
    if buckets > 0 and (buckets < 2 or max_rel - 1 == buckets // 2):
        raise ValueError(f"position_buckets {buckets} with max_relative_positions {max_rel} leaves the log "
                         "buckets undefined (a division by zero); use >= 2 buckets and "
                         "max_relative_positions - 1 != position_buckets / 2.")
    norm = _listed(hf.get("norm_rel_ebd", "none"), "norm_rel_ebd")
    if [x for x in norm if x not in NORM_REL_EBD]:
        raise ValueError(f"unsupported norm_rel_ebd {norm}; supported: {', '.join(NORM_REL_EBD)}.")
    if "layer_norm" in norm and not relative:
        raise ValueError("norm_rel_ebd 'layer_norm' without relative_attention: its LayerNorm weights would be "
                         "unused; set relative_attention true or norm_rel_ebd 'none'.")
    k = int(common.hf_get(hf, "conv_kernel_size", default=0))
    groups = int(common.hf_get(hf, "conv_groups", default=1))
    if k > 0 and k % 2 == 0:
        raise ValueError(f"conv_kernel_size {k} is even: the padded convolution would shorten the sequence "
                         "(transformers fails on it too); use an odd size.")
    if k > 0 and (groups < 1 or d % groups):
        raise ValueError(f"conv_groups {groups} does not divide hidden_size {d}.")
    return DebertaConfig(
        **fields, position_buckets=max(buckets, 0), share_att_key=bool(hf.get("share_att_key", False)),
        norm_rel_ebd="layer_norm" in norm, conv_kernel_size=max(k, 0), conv_groups=groups,
        conv_act=_check_act(hf.get("conv_act", "tanh"), "conv_act") if k > 0 else "tanh",
    )


# ====================================================================== relative positions
def log_buckets(rel: np.ndarray, buckets: int, max_position: int) -> np.ndarray:
    """Relative positions log-bucketed as DeBERTa-v2 does: exact within ±buckets/2, then
    logarithmic up to ±max_position (in float32, as transformers computes it)."""
    mid = buckets // 2
    sign = np.sign(rel)
    abs_pos = np.where((rel < mid) & (rel > -mid), mid - 1, np.abs(rel))
    ratio = abs_pos.astype(np.float32) / np.float32(mid)
    scale = np.log(np.float32((max_position - 1) / mid))
    log_pos = np.ceil(np.log(ratio) / scale * np.float32(mid - 1)) + np.float32(mid)
    return np.where(abs_pos <= mid, rel, log_pos * sign).astype(np.int64)


def relative_positions(cfg: DebertaConfig, length: int) -> np.ndarray:
    """δ(i, j) = i - j (log-bucketed where the config says so): [length (query), length (key)]."""
    rel = np.arange(length)[:, None] - np.arange(length)[None, :]
    if cfg.position_buckets > 0:
        rel = log_buckets(rel, cfg.position_buckets, cfg.max_relative_positions)
    return rel


def rel_span(cfg: DebertaConfig, length: int) -> tuple[int, int]:
    """(offset, span): the attention reads table rows offset .. offset + 2·span - 1 at `length`
    tokens (v1 cuts the table to the span min(length, max_relative_positions))."""
    if cfg.arch == "deberta":
        span = min(length, cfg.max_relative_positions)
        return cfg.max_relative_positions - span, span
    return 0, cfg.rel_table_size // 2


# ================================================================================= forward
class DisentangledAttention(nn.Module):
    cfg: DebertaConfig

    @nn.compact
    def __call__(self, x: Array, mask: Array, rel: Array | None, hooks: Hooks, prefix: str,
                 cls_only: bool = False) -> Array:
        """x: [batch, pos, d_model]; mask: [batch, pos] (1 = token); rel: the relative table
        [rel_table_size, d_model] (None without relative attention).

        cls_only: queries (and so every output) only for position 0; keys/values for all."""
        cfg = self.cfg
        b, length = x.shape[:2]
        h, dh = cfg.n_heads, cfg.d_head

        def split(y):  # [..., d_model] -> [..., n_heads, d_head]
            return y.reshape(*y.shape[:-1], h, dh)

        if cfg.arch == "deberta":  # one fused projection, per head [q, k, v], and two biases
            qkv = nn.Dense(3 * cfg.d_model, use_bias=False, name="qkv")(x).reshape(b, length, h, 3, dh)
            zeros = nn.initializers.zeros
            q = qkv[..., 0, :] + split(self.param("q_bias", zeros, (cfg.d_model,))).astype(x.dtype)
            k = qkv[..., 1, :]
            v = qkv[..., 2, :] + split(self.param("v_bias", zeros, (cfg.d_model,))).astype(x.dtype)
            q = q[:, :1] if cls_only else q
            q_proj = k_proj = None
        else:
            q_proj, k_proj = nn.Dense(cfg.d_model, name="q"), nn.Dense(cfg.d_model, name="k")
            q = split(q_proj(x[:, :1] if cls_only else x))
            k = split(k_proj(x))
            v = split(nn.Dense(cfg.d_model, name="v")(x))
        q, k, v = (hooks(f"{prefix}.attn.hook_{n}", t) for n, t in (("q", q), ("k", k), ("v", v)))
        rows = np.arange(1 if cls_only else length)  # the query positions computed
        scale = math.sqrt(dh * cfg.scale_factor)
        # scores in float32 whatever the precision (a no-op cast in float32)
        scores = (jnp.einsum("bqhd,bkhd->bhqk", q, k) / scale).astype(jnp.float32)
        if cfg.relative_attention:
            offset, span = rel_span(cfg, length)
            table = rel[offset:offset + 2 * span].astype(x.dtype)  # [2·span, d_model]
            delta = relative_positions(cfg, length)
            if "c2p" in cfg.pos_att_type:
                pos_k = k_proj(table) if cfg.share_att_key else nn.Dense(
                    cfg.d_model, use_bias=cfg.arch != "deberta", name="pos_k")(table)
                c2p = jnp.einsum("bqhd,rhd->bhqr", q, split(pos_k))
                idx = np.clip(delta[rows] + span, 0, 2 * span - 1)  # [query, key]
                scores = scores + (jnp.take_along_axis(c2p, idx[None, None], axis=-1) / scale).astype(jnp.float32)
            if "p2c" in cfg.pos_att_type:
                pos_q = q_proj(table) if cfg.share_att_key else nn.Dense(cfg.d_model, name="pos_q")(table)
                p2c = jnp.einsum("bkhd,rhd->bhkr", k, split(pos_q))  # per key position
                idx = np.clip(-delta[:, rows] + span, 0, 2 * span - 1)  # [key, query], as HF gathers it
                p2c = jnp.swapaxes(jnp.take_along_axis(p2c, idx[None, None], axis=-1), -1, -2)
                scores = scores + (p2c / scale).astype(jnp.float32)
        real = mask > 0
        allowed = real[:, rows, None] & real[:, None, :]  # [batch, query, key]: padding masked both ways
        scores = jnp.where(allowed[:, None], scores, jnp.finfo(scores.dtype).min)
        pattern = hooks(f"{prefix}.attn.hook_pattern", jax.nn.softmax(scores, axis=-1).astype(q.dtype))
        z = hooks(f"{prefix}.attn.hook_z", jnp.einsum("bhqk,bkhd->bqhd", pattern, v))
        return nn.Dense(cfg.d_model, name="o")(z.reshape(b, len(rows), cfg.d_model))


class ConvLayer(nn.Module):
    """Block 0's convolution (DeBERTa-v2 `conv_kernel_size`): LN(out + act(conv(x))) · mask."""

    cfg: DebertaConfig

    @nn.compact
    def __call__(self, x: Array, out: Array, mask: Array) -> Array:
        """x: the block input [batch, pos, d_model]; out: the block's output before the
        convolution [batch, n, d_model] (n = pos, or 1 for [CLS] only); mask: [batch, pos]."""
        cfg = self.cfg
        d, k, g = cfg.d_model, cfg.conv_kernel_size, cfg.conv_groups
        kernel = self.param("kernel", nn.initializers.normal(0.02), (d, d // g, k))  # HF: [out, in/groups, width]
        bias = self.param("bias", nn.initializers.zeros, (d,))
        m = (mask > 0).astype(x.dtype)[..., None]
        y = jax.lax.conv_general_dilated(
            x * m, kernel.astype(x.dtype), window_strides=(1,), padding=[((k - 1) // 2, (k - 1) // 2)],
            dimension_numbers=("NWC", "OIW", "NWC"), feature_group_count=g,
        ) + bias.astype(x.dtype)
        n = out.shape[1]
        y = ACT[cfg.conv_act]((y * m)[:, :n])  # HF zeroes padded positions before the activation
        return _layer_norm(cfg, "ln")(out + y) * m[:, :n]


class Block(nn.Module):
    cfg: DebertaConfig
    index: int
    cls_only: bool = False  # compute only what position 0's output needs (last block, CLS head)

    @nn.compact
    def __call__(self, x: Array, mask: Array, rel: Array | None, hooks: Hooks, conv=None) -> Array:
        """`conv`: block 0's convolution as `conv(block input, block output)`, or None."""
        cfg, p = self.cfg, f"blocks.{self.index}"
        x = hooks(f"{p}.hook_resid_pre", x)
        keep = x[:, :1] if self.cls_only else x
        a = hooks(f"{p}.hook_attn_out", DisentangledAttention(cfg, name="attn")(x, mask, rel, hooks, p, self.cls_only))
        mid = hooks(f"{p}.hook_resid_mid", _layer_norm(cfg, "ln_attn")(keep + a))
        m = hooks(f"{p}.hook_mlp_out", MLP(cfg, name="mlp")(mid, hooks, p))
        out = _layer_norm(cfg, "ln_mlp")(mid + m)
        return out if conv is None else conv(x, out)  # the caller applies hook_resid_post


class Embeddings(nn.Module):
    cfg: DebertaConfig

    @nn.compact
    def __call__(self, input_ids: Array, attention_mask: Array, token_type_ids: Array | None) -> Array:
        cfg = self.cfg
        e = cfg.embedding_size
        x = nn.Embed(cfg.vocab_size, e, name="word")(input_ids)
        if cfg.position_biased_input:
            positions = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
            x = x + nn.Embed(cfg.max_positions, e, name="position")(positions)
        if cfg.type_vocab_size:
            if token_type_ids is None:
                token_type_ids = jnp.zeros_like(input_ids)
            x = x + nn.Embed(cfg.type_vocab_size, e, name="token_type")(token_type_ids)
        if e != cfg.d_model:
            x = nn.Dense(cfg.d_model, use_bias=False, name="proj")(x)
        x = _layer_norm(cfg, "ln")(x)
        return x * (attention_mask > 0).astype(x.dtype)[..., None]  # HF zeroes padded positions


class Head(nn.Module):
    """DeBERTa's ContextPooler and classifier on the [CLS] vector."""

    cfg: DebertaConfig

    @nn.compact
    def __call__(self, cls: Array, hooks: Hooks) -> Array:
        """cls: [batch, d_model] (final [CLS] residual) -> logits [batch, n_classes]."""
        cfg = self.cfg
        pooled = hooks("head.hook_cls", ACT[cfg.pooler_act](nn.Dense(cfg.d_model, name="pooler")(cls)))
        return hooks("head.hook_logits", nn.Dense(cfg.n_classes, name="classifier")(pooled))


class Deberta(nn.Module):
    """The whole model, with `encoder.Encoder`'s interface: `start`/`stop` select a segment of
    blocks, `head_only` runs the last block for [CLS] only (see `encoder`'s module docstring)."""

    cfg: DebertaConfig
    scan: bool = True

    @nn.compact
    def __call__(self, inputs, hooks: Hooks, start: int = 0, stop: int | None = None,
                 head_only: bool = False):
        cfg = self.cfg
        head_only = head_only and stop is None and cfg.n_classes is not None
        if start == 0 and not isinstance(inputs, tuple):
            mask = inputs["attention_mask"]
            x = Embeddings(cfg, name="embed")(inputs["input_ids"], mask, inputs.get("token_type_ids"))
        else:
            x, mask = inputs  # a cached prefix: (residual entering block `start`, mask)
        rel = None
        if cfg.relative_attention:  # the table every layer reads; recomputed by a suffix run (cheap)
            rel = nn.Embed(cfg.rel_table_size, cfg.d_model, name="rel_embed").embedding
            if cfg.norm_rel_ebd:
                rel = _layer_norm(cfg, "rel_ln")(rel)
        conv_layer = ConvLayer(cfg, name="conv") if cfg.conv_kernel_size else None

        def conv_of(i: int):
            if conv_layer is None or i != 0:
                return None
            return lambda block_in, out: conv_layer(block_in, out, mask)

        end = cfg.n_layers if stop is None else stop
        tail = end - 1 if head_only and end > start else end  # head_only: the last block unrolled, [CLS] only
        if self.is_initializing():  # Linen init creates every block's parameters
            for i in range(start, tail):
                x = hooks(site_lib.boundary_site(i), x)
                x = Block(cfg, i, name=f"blocks_{i}")(x, mask, rel, hooks, conv_of(i))
        else:
            params = self.variables["params"]
            x = common.run_blocks(
                x, hooks, range(start, tail),
                lambda i, p, h, hk: Block(cfg, i, parent=None).apply({"params": p}, h, mask, rel, hk, conv_of(i)),
                lambda i: params[f"blocks_{i}"],
                kind_of=lambda i: conv_of(i) is not None,  # block 0 with its convolution never shares a scan
                scan=self.scan, stacked=params.get(common.STACKED),
            )
        if tail < end:
            x = hooks(site_lib.boundary_site(tail), x)
            x = Block(cfg, tail, cls_only=True, name=f"blocks_{tail}")(x, mask, rel, hooks, conv_of(tail))
        if stop is not None:  # prefix mode: the boundary hook of `stop` belongs to the suffix
            return x, mask, None
        x = hooks(site_lib.boundary_site(cfg.n_layers), x)
        logits = None
        if cfg.n_classes is not None:  # the head and the logits in float32 (a no-op cast in float32)
            logits = Head(cfg, name="head")(x[:, 0].astype(jnp.float32), hooks)
        return x, mask, logits


def module(cfg: DebertaConfig) -> Deberta:
    """The Flax module that runs `cfg` (`families.module` builds it for this family)."""
    return Deberta(cfg)


# ================================================================================= weights
def key_renames(arch: str) -> tuple[tuple[str, str], ...]:
    """No renames: DeBERTa checkpoints use one spelling (LayerNorm gamma/beta are `convert`'s)."""
    return ()


def table(cfg: DebertaConfig) -> list[Entry]:
    """The full weight table of a DeBERTa described by `cfg` (keys relative to the base model
    for the body; head keys absolute)."""
    d, f, e_size = cfg.d_model, cfg.d_mlp, cfg.embedding_size
    v1 = cfg.arch == "deberta"
    e = [Entry(("embed", "word", "embedding"), "embeddings.word_embeddings.weight", "copy", (cfg.vocab_size, e_size))]
    if cfg.position_biased_input:
        e.append(Entry(("embed", "position", "embedding"), "embeddings.position_embeddings.weight", "copy",
                       (cfg.max_positions, e_size)))
    if cfg.type_vocab_size:
        e.append(Entry(("embed", "token_type", "embedding"), "embeddings.token_type_embeddings.weight", "copy",
                       (cfg.type_vocab_size, e_size)))
    if e_size != d:
        e.append(Entry(("embed", "proj", "kernel"), "embeddings.embed_proj.weight", "dense", (d, e_size)))
    e += _ln(("embed", "ln"), "embeddings.LayerNorm", d)
    if cfg.relative_attention:
        e.append(Entry(("rel_embed", "embedding"), "encoder.rel_embeddings.weight", "copy", (cfg.rel_table_size, d)))
    if cfg.norm_rel_ebd:
        e += _ln(("rel_ln",), "encoder.LayerNorm", d)
    if cfg.conv_kernel_size:
        e += [
            Entry(("conv", "kernel"), "encoder.conv.conv.weight", "copy", (d, d // cfg.conv_groups, cfg.conv_kernel_size)),
            Entry(("conv", "bias"), "encoder.conv.conv.bias", "copy", (d,)),
        ]
        e += _ln(("conv", "ln"), "encoder.conv.LayerNorm", d)
    for i in range(cfg.n_layers):
        b, k = (f"blocks_{i}",), f"encoder.layer.{i}"
        s = f"{k}.attention.self"
        if v1:
            e += [
                Entry(b + ("attn", "qkv", "kernel"), f"{s}.in_proj.weight", "dense", (3 * d, d)),
                Entry(b + ("attn", "q_bias"), f"{s}.q_bias", "copy", (d,)),
                Entry(b + ("attn", "v_bias"), f"{s}.v_bias", "copy", (d,)),
            ]
        else:
            for ours, theirs in (("q", "query_proj"), ("k", "key_proj"), ("v", "value_proj")):
                e += _dense(b + ("attn", ours), f"{s}.{theirs}", d, d)
        if cfg.relative_attention and not cfg.share_att_key:
            if "c2p" in cfg.pos_att_type:
                e += _dense(b + ("attn", "pos_k"), f"{s}.{'pos_proj' if v1 else 'pos_key_proj'}", d, d)
                if v1:
                    e.pop()  # v1's pos_proj has no bias
            if "p2c" in cfg.pos_att_type:
                e += _dense(b + ("attn", "pos_q"), f"{s}.{'pos_q_proj' if v1 else 'pos_query_proj'}", d, d)
        e += _dense(b + ("attn", "o"), f"{k}.attention.output.dense", d, d)
        e += _ln(b + ("ln_attn",), f"{k}.attention.output.LayerNorm", d)
        e += _dense(b + ("mlp", "fc_in"), f"{k}.intermediate.dense", d, f)
        e += _dense(b + ("mlp", "fc_out"), f"{k}.output.dense", f, d)
        e += _ln(b + ("ln_mlp",), f"{k}.output.LayerNorm", d)
    if cfg.n_classes is not None:
        e += _dense(("head", "pooler"), "pooler.dense", d, d, head=True)
        e += _dense(("head", "classifier"), "classifier", d, cfg.n_classes, head=True)
    return e


def hf_class_name(cfg: DebertaConfig) -> str:
    """The transformers class a saved folder of a classifier declares (`architectures`)."""
    return HF_CLASS[cfg.arch]


# ============================================================================== parameters
def with_head(base: DebertaConfig, num_labels: int | None) -> DebertaConfig:
    """`base` with a head of `num_labels` classes (None: head-less), for `create`."""
    return dataclasses.replace(base, n_classes=num_labels)


def init_params(cfg: DebertaConfig, seed: int) -> Any:
    """Fresh parameters (Linen init) for a model described by `cfg`."""
    dummy = {"input_ids": np.zeros((1, 2), np.int32), "attention_mask": np.ones((1, 2), np.int32)}
    variables = Deberta(cfg).init(jax.random.key(seed), dummy, Hooks({}, frozenset(), {}))
    return jax.tree.map(np.asarray, dict(variables["params"]))


def init_head(cfg: DebertaConfig, seed: int) -> dict:
    """Fresh parameters of the head alone (ContextPooler and classifier)."""
    variables = Head(cfg).init(jax.random.key(seed), np.zeros((1, cfg.d_model), np.float32), Hooks({}, frozenset(), {}))
    return jax.tree.map(np.asarray, dict(variables["params"]))


def load_head(folder: Path, base: DebertaConfig, state: dict[str, np.ndarray], *, num_labels: int | None,
              seed: int) -> tuple[DebertaConfig, dict[str, np.ndarray], bool]:
    """The head a loaded DeBERTa gets, from its (`convert.normalize_keys`-ed) state dict: the
    checkpoint's pooler and classifier (`num_labels` must agree), else a fresh pair (seeded by
    `seed`) when `num_labels` is given, as `AutoModelForSequenceClassification` would, else none.

    Returns:
        (config with n_classes, state with a fresh head's weights added, whether the head is fresh).

    Raises:
        InputError: num_labels disagreeing with the checkpoint, or < 1.
    """
    n_classes, fresh = encoder.head_classes(folder, state, "classifier.weight", num_labels)
    cfg = dataclasses.replace(base, n_classes=n_classes)
    if fresh:
        state = encoder.fill_head(state, table(cfg), init_head(cfg, seed))
    return cfg, state, fresh
