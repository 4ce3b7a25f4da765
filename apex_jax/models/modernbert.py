"""ModernBERT: its HF config mapping, forward and weight table (model_type `modernbert`).

ModernBERT is a pre-norm text encoder: a token embedding followed by a LayerNorm (no position
table), then blocks `x + attn(attn_norm(x))`, `x + mlp(mlp_norm(x))` whose first block has no
attention norm (HF's `nn.Identity`), a final LayerNorm over every token, and the
sequence-classification head `classifier(norm(act(dense(pool(x)))))`, where `pool` is the [CLS]
token (`classifier_pooling="cls"`) or the mean over real tokens (`"mean"`).

  * Norms are LayerNorms without bias unless `norm_bias`; the linear layers have no bias
    unless `attention_bias` (Wqkv, Wo), `mlp_bias` (Wi, Wo) or `classifier_bias` (the head's
    dense layer; the final classifier always has one, as in HF).
  * Attention: one fused `Wqkv` Linear whose outputs are laid out [q | k | v] (HF views them as
    [3, heads, d_head]); rotary embeddings on every dimension of each head (rotate-half layout,
    positions 0..pos-1 whatever the padding, as HF's default `position_ids`). Layers alternate
    between global attention (`full_attention`, rope theta `global_rope_theta`) and local
    attention (`sliding_attention`, rope theta `local_rope_theta`, each query seeing the keys
    within `local_attention // 2` positions of it). transformers 5 lists the kinds in
    `layer_types` and the thetas in `rope_parameters`; older configs give
    `global_attn_every_n_layers` (layer i is global when i % n == 0) and the two thetas.
  * MLP: GLU. `Wi` projects to 2 * d_mlp features split into `input` and `gate` halves;
    the output is `Wo(act(input) * gate)`.

The forward is the padded one (HF's `eager` and `sdpa` attention): padding keys are masked,
padding queries are computed and never read. HF's flash-attention path (unpadded sequences)
computes the same values at real tokens.

Sites (the encoders' names, `apex_jax.sites`): `hook_embed` is the embedding after its norm
(= HF `hidden_states[0]`); `hook_q`/`hook_k` are before the rotary embedding; `mlp.hook_pre` is
the `input` half of Wi (before the activation), `mlp.hook_post` = act(input) * gate (what Wo
reads); `hook_resid_mid` = resid_pre + attn_out (what mlp_norm reads). `blocks.{n-1}.hook_resid_post`
is the last block's output *before* the final norm; `ln_final.hook_normalized` is the final norm's
output (= HF `last_hidden_state` and its last `hidden_states`). `head.hook_cls` is the vector the
classifier reads: norm(act(dense(pooled))), pooled = the final-normed [CLS] vector under
`cls` pooling, the mean of the final-normed real tokens under `mean` pooling.

`head_only` (`Model.apply`): under `cls` pooling the last block computes its queries, attention
output and MLP for [CLS] only (as the other encoders); under `mean` pooling every token reaches
the logits, so it runs in full.
"""

from __future__ import annotations

import dataclasses
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
from apex_jax.models.decoder import apply_rope, linear_entries
from apex_jax.models.encoder import ArchConfig

Array = Any

MODEL_TYPES = {"modernbert": "modernbert"}  # model_type -> our architecture
BASE_PREFIX = {"modernbert": "model"}  # the base model's prefix of the body weights
GLOBAL, LOCAL = "full_attention", "sliding_attention"  # HF's layer_types
LAYER_TYPES = (GLOBAL, LOCAL)
POOLINGS = ("cls", "mean")
ROPE_TYPES = ("default",)
# HF ModernBertConfig defaults of the optional entries read here.
_DEFAULT_THETA = {GLOBAL: 160_000.0, LOCAL: 10_000.0}
HF_CLASS = "ModernBertForSequenceClassification"


# ================================================================================== config
@dataclasses.dataclass(frozen=True)
class ModernBertConfig(ArchConfig):
    """ModernBERT's static description: the encoder fields (`ArchConfig`, `norm="pre"`, no
    position table or token types) plus its own; hashable, a static jit argument."""

    layer_types: tuple[str, ...] = ()  # per layer: GLOBAL or LOCAL
    window: int = 64  # local layers: a query sees keys within `window` positions (local_attention // 2)
    global_rope_theta: float = _DEFAULT_THETA[GLOBAL]
    local_rope_theta: float = _DEFAULT_THETA[LOCAL]
    norm_bias: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    classifier_bias: bool = False  # the head's dense layer (the classifier always has a bias)
    classifier_act: str = "gelu"
    pooling: str = "cls"  # "cls" | "mean"

    final_norm_site = True  # `ln_final.hook_normalized` is one of its sites (not a field)


def from_hf(hf: Mapping[str, Any]) -> ModernBertConfig:
    """Builds a ModernBertConfig from an HF config dict (head fields are filled by the loader).

    Reads transformers 5's spelling (`layer_types`, `rope_parameters`) and the older one
    (`global_attn_every_n_layers`, `global_rope_theta`, `local_rope_theta`); the newer wins
    where both are given, as in transformers.

    Raises:
        KeyError: a required entry is missing.
        ValueError: an option this implementation does not compute (naming it and the choices).
    """
    d, n_heads, n = hf["hidden_size"], hf["num_attention_heads"], hf["num_hidden_layers"]
    if d % n_heads:
        raise ValueError(f"hidden size {d} is not divisible by the number of heads {n_heads}.")
    if hf.get("head_dim") not in (None, d // n_heads):
        raise ValueError(f"head_dim {hf['head_dim']} differs from hidden_size / num_attention_heads = "
                         f"{d // n_heads}; ModernBERT's attention uses the latter.")
    act = hf.get("hidden_activation", "gelu")
    classifier_act = hf.get("classifier_activation", "gelu")
    for name, value in (("hidden_activation", act), ("classifier_activation", classifier_act)):
        if value not in common.ACT:
            raise ValueError(f"unsupported {name} {value!r}; supported: {', '.join(common.ACTIVATIONS)}.")
    pooling = hf.get("classifier_pooling", "cls")
    if pooling not in POOLINGS:
        raise ValueError(f"unsupported classifier_pooling {pooling!r}; supported: {', '.join(POOLINGS)}.")
    local_attention = int(hf.get("local_attention", 128))
    if local_attention < 0:
        raise ValueError(f"local_attention must be >= 0; got {local_attention}.")
    types = _layer_types(hf, n)
    theta = _rope_thetas(hf)
    return ModernBertConfig(
        arch="modernbert", n_layers=n, d_model=d, n_heads=n_heads, d_mlp=hf["intermediate_size"],
        act=act, ln_eps=float(hf.get("norm_eps", 1e-5)), norm="pre", qkv_bias=bool(hf.get("attention_bias", False)),
        vocab_size=hf["vocab_size"], max_positions=int(hf.get("max_position_embeddings", 8192)),
        type_vocab_size=0, pad_token_id=common.hf_get(hf, "pad_token_id", default=0),
        layer_types=types, window=local_attention // 2,
        global_rope_theta=theta[GLOBAL], local_rope_theta=theta[LOCAL],
        norm_bias=bool(hf.get("norm_bias", False)), attention_bias=bool(hf.get("attention_bias", False)),
        mlp_bias=bool(hf.get("mlp_bias", False)), classifier_bias=bool(hf.get("classifier_bias", False)),
        classifier_act=classifier_act, pooling=pooling,
    )


def _layer_types(hf: Mapping[str, Any], n: int) -> tuple[str, ...]:
    """Each layer's attention kind: `layer_types`, else from `global_attn_every_n_layers`."""
    types = hf.get("layer_types")
    if types is None:
        every = int(hf.get("global_attn_every_n_layers", 3))
        if every < 1:
            raise ValueError(f"global_attn_every_n_layers must be >= 1; got {every}.")
        return tuple(GLOBAL if i % every == 0 else LOCAL for i in range(n))
    types = tuple(types)
    bad = sorted({t for t in types if t not in LAYER_TYPES})
    if bad or len(types) != n:
        raise ValueError(f"layer_types must give one of {list(LAYER_TYPES)} for each of the {n} layers; "
                         f"got {list(types)}.")
    return types


def _rope_thetas(hf: Mapping[str, Any]) -> dict[str, float]:
    """The rope theta of global and local layers (`rope_parameters`, else `global_rope_theta` /
    `local_rope_theta`, else HF's defaults); any rope scaling is refused, naming it."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling")
    if scaling and scaling.get("rope_type", scaling.get("type", "default")) not in ROPE_TYPES:
        raise ValueError(f"unsupported ModernBERT rope_scaling {dict(scaling)}; supported rope types: "
                         f"{', '.join(ROPE_TYPES)}.")
    out = {}
    for kind, legacy in ((GLOBAL, "global_rope_theta"), (LOCAL, "local_rope_theta")):
        p = params.get(kind) or {}
        rope_type = p.get("rope_type", "default")
        if rope_type not in ROPE_TYPES:
            raise ValueError(f"unsupported ModernBERT rope type {rope_type!r} ({kind} layers); supported: "
                             f"{', '.join(ROPE_TYPES)}.")
        out[kind] = p["rope_theta"] if "rope_theta" in p else hf.get(legacy, _DEFAULT_THETA[kind])
    if out[GLOBAL] is None:
        out[GLOBAL] = _DEFAULT_THETA[GLOBAL]
    if out[LOCAL] is None:  # ModernBERT's original code: local layers then use the global theta
        out[LOCAL] = out[GLOBAL]
    return {k: float(v) for k, v in out.items()}


# ================================================================================= forward
def _layer_norm(cfg: ModernBertConfig, name: str) -> nn.LayerNorm:
    # use_fast_variance=False: E[(x-μ)²] like PyTorch; no bias unless norm_bias
    return nn.LayerNorm(epsilon=cfg.ln_eps, use_bias=cfg.norm_bias, use_fast_variance=False, name=name)


def rope_tables(cfg: ModernBertConfig, theta: float, pos: int) -> tuple[Array, Array]:
    """cos, sin [1, pos, d_head] float32 of positions 0..pos-1 (frequencies as HF computes them,
    in float32)."""
    d = cfg.d_head
    inv = (1.0 / (np.float32(theta) ** (np.arange(0, d, 2, dtype=np.float32) / np.float32(d)))).astype(np.float32)
    angles = jnp.arange(pos, dtype=jnp.float32)[:, None] * jnp.asarray(inv)
    angles = jnp.concatenate([angles, angles], axis=-1)[None]
    return jnp.cos(angles), jnp.sin(angles)


class Attention(nn.Module):
    """Bidirectional multi-head attention, global or windowed, with rotary positions."""

    cfg: ModernBertConfig
    window: int | None = None  # None: global attention

    @nn.compact
    def __call__(self, x: Array, mask: Array, rope: tuple[Array, Array], hooks: Hooks, prefix: str,
                 cls_only: bool = False) -> Array:
        """x: [batch, pos, d_model] normed residual; mask: [batch, pos] (1 = token); rope: cos,
        sin [1, pos, d_head]. cls_only: queries (and so every output) for position 0 only.

        Returns [batch, q, d_model] (q = 1 under cls_only, else pos)."""
        cfg = self.cfg
        b, p, _ = x.shape
        h, dh = cfg.n_heads, cfg.d_head
        qkv = nn.Dense(3 * cfg.d_model, use_bias=cfg.attention_bias, name="qkv")(x).reshape(b, p, 3, h, dh)
        q = qkv[:, :1, 0] if cls_only else qkv[:, :, 0]
        q = hooks(f"{prefix}.attn.hook_q", q)
        k = hooks(f"{prefix}.attn.hook_k", qkv[:, :, 1])
        v = hooks(f"{prefix}.attn.hook_v", qkv[:, :, 2])
        nq = q.shape[1]
        cos, sin = rope
        # rotary embedding in float32 whatever the precision (as HF), then back
        q = apply_rope(q.astype(jnp.float32), cos[:, :nq], sin[:, :nq]).astype(x.dtype)
        k = apply_rope(k.astype(jnp.float32), cos, sin).astype(x.dtype)
        scores = (jnp.einsum("bqhd,bkhd->bhqk", q, k) * dh ** -0.5).astype(jnp.float32)
        allowed = jnp.broadcast_to(mask[:, None, :] > 0, (b, nq, p))  # [batch, query, key]
        if self.window is not None:
            dist = jnp.abs(jnp.arange(p)[None, :] - jnp.arange(nq)[:, None])
            allowed = allowed & (dist <= self.window)[None]
        scores = jnp.where(allowed[:, None], scores, jnp.finfo(jnp.float32).min)
        pattern = hooks(f"{prefix}.attn.hook_pattern", jax.nn.softmax(scores, axis=-1).astype(x.dtype))
        z = hooks(f"{prefix}.attn.hook_z", jnp.einsum("bhqk,bkhd->bqhd", pattern, v))
        return nn.Dense(cfg.d_model, use_bias=cfg.attention_bias, name="o")(z.reshape(b, nq, cfg.d_model))


class MLP(nn.Module):
    """GLU: Wo(act(input) * gate), [input | gate] = Wi(x)."""

    cfg: ModernBertConfig

    @nn.compact
    def __call__(self, x: Array, hooks: Hooks, prefix: str) -> Array:
        """[batch, pos, d_model] -> [batch, pos, d_model]."""
        cfg = self.cfg
        pre, gate = jnp.split(nn.Dense(2 * cfg.d_mlp, use_bias=cfg.mlp_bias, name="fc_in")(x), 2, axis=-1)
        pre = hooks(f"{prefix}.mlp.hook_pre", pre)
        post = hooks(f"{prefix}.mlp.hook_post", common.ACT[cfg.act](pre) * gate)
        return nn.Dense(cfg.d_model, use_bias=cfg.mlp_bias, name="fc_out")(post)


class Block(nn.Module):
    """Pre-norm block: x + attn(attn_norm(x)), then + mlp(mlp_norm(x)); block 0 has no attn_norm."""

    cfg: ModernBertConfig
    index: int
    cls_only: bool = False  # compute only what position 0's output needs (last block, [CLS] head)

    @nn.compact
    def __call__(self, x: Array, mask: Array, ropes: dict, hooks: Hooks) -> Array:
        cfg, p = self.cfg, f"blocks.{self.index}"
        kind = cfg.layer_types[self.index]
        x = hooks(f"{p}.hook_resid_pre", x)
        normed = x if self.index == 0 else _layer_norm(cfg, "ln_attn")(x)
        attn = Attention(cfg, cfg.window if kind == LOCAL else None, name="attn")
        a = hooks(f"{p}.hook_attn_out", attn(normed, mask, ropes[kind], hooks, p, self.cls_only))
        keep = x[:, :1] if self.cls_only else x  # the residual of the positions computed
        x = hooks(f"{p}.hook_resid_mid", keep + a)
        m = hooks(f"{p}.hook_mlp_out", MLP(cfg, name="mlp")(_layer_norm(cfg, "ln_mlp")(x), hooks, p))
        return x + m  # the caller applies hook_resid_post (a boundary site)


class Head(nn.Module):
    """HF's ModernBertPredictionHead (dense, activation, norm) and the classifier."""

    cfg: ModernBertConfig

    @nn.compact
    def __call__(self, pooled: Array, hooks: Hooks) -> Array:
        """pooled: [batch, d_model] ([CLS] or mean of the final-normed tokens) -> [batch, n_classes]."""
        cfg = self.cfg
        h = common.ACT[cfg.classifier_act](nn.Dense(cfg.d_model, use_bias=cfg.classifier_bias, name="dense")(pooled))
        h = hooks("head.hook_cls", _layer_norm(cfg, "ln")(h))
        return hooks("head.hook_logits", nn.Dense(cfg.n_classes, name="classifier")(h))


class ModernBert(nn.Module):
    """The whole model; `start`/`stop` select a segment of blocks, as `encoder.Encoder`'s."""

    cfg: ModernBertConfig
    scan: bool = True  # run the block stack as scans over stacked layers (`common.run_blocks`)

    @nn.compact
    def __call__(self, inputs, hooks: Hooks, start: int = 0, stop: int | None = None,
                 head_only: bool = False):
        cfg = self.cfg
        # mean pooling reads every token of the last block: no [CLS]-only shortcut there
        head_only = head_only and stop is None and cfg.n_classes is not None and cfg.pooling == "cls"
        if start == 0 and not isinstance(inputs, tuple):
            mask = jnp.asarray(inputs["attention_mask"])
            x = nn.Embed(cfg.vocab_size, cfg.d_model, name="word")(inputs["input_ids"])
            x = _layer_norm(cfg, "embed_ln")(x)
        else:
            x, mask = inputs  # a cached prefix: (residual entering block `start`, mask)
        p = mask.shape[1]
        ropes = {GLOBAL: rope_tables(cfg, cfg.global_rope_theta, p),
                 LOCAL: rope_tables(cfg, cfg.local_rope_theta, p)}
        end = cfg.n_layers if stop is None else stop
        tail = end - 1 if head_only and end > start else end  # head_only: the last block runs unrolled, [CLS] only
        if self.is_initializing():  # Linen init creates every block's parameters
            for i in range(start, tail):
                x = hooks(site_lib.boundary_site(i), x)
                x = Block(cfg, i, name=f"blocks_{i}")(x, mask, ropes, hooks)
        else:
            params = self.variables["params"]
            x = common.run_blocks(
                x, hooks, range(start, tail),
                lambda i, prm, h, hk: Block(cfg, i, parent=None).apply({"params": prm}, h, mask, ropes, hk),
                lambda i: params[f"blocks_{i}"],
                # block 0 (no attention norm), global and local layers never share a scan
                kind_of=lambda i: (i == 0, cfg.layer_types[i]),
                scan=self.scan, stacked=params.get(common.STACKED),
            )
        if tail < end:
            x = hooks(site_lib.boundary_site(tail), x)
            x = Block(cfg, tail, cls_only=True, name=f"blocks_{tail}")(x, mask, ropes, hooks)
        if stop is not None:  # prefix mode: the boundary hook of `stop` belongs to the suffix
            return x, mask, None
        x = hooks(site_lib.boundary_site(cfg.n_layers), x)
        normed = hooks(site_lib.FINAL_NORM_SITE, _layer_norm(cfg, "final_ln")(x))
        logits = None
        if cfg.n_classes is not None:
            # the head and the logits in float32 (a no-op cast in float32)
            normed = normed.astype(jnp.float32)
            if cfg.pooling == "cls":
                pooled = normed[:, 0]
            else:  # the mean over real tokens, as HF
                w = mask.astype(jnp.float32)[..., None]
                pooled = (normed * w).sum(axis=1) / w.sum(axis=1)
            logits = Head(cfg, name="head")(pooled, hooks)
        return x, mask, logits


def module(cfg: ModernBertConfig, scan: bool = True) -> ModernBert:
    """The Flax module of the forward (`families.module`)."""
    return ModernBert(cfg, scan=scan)


# ================================================================================= weights
def key_renames(arch: str) -> tuple[tuple[str, str], ...]:
    """The (regex, replacement) renames of the checkpoint keys: none (one spelling so far)."""
    return ()


def _norm(path: tuple[str, ...], key: str, cfg: ModernBertConfig, head: bool = False) -> list[Entry]:
    """A LayerNorm's scale [d] and, with norm_bias, its bias."""
    e = [Entry(path + ("scale",), f"{key}.weight", "copy", (cfg.d_model,), head)]
    if cfg.norm_bias:
        e.append(Entry(path + ("bias",), f"{key}.bias", "copy", (cfg.d_model,), head))
    return e


def table(cfg: ModernBertConfig) -> list[Entry]:
    """The full weight table (keys relative to the base model `model.` for the body; head keys
    absolute). HF Linear weights are [out, in] (transposed here); Wqkv and Wi stay fused."""
    d, f = cfg.d_model, cfg.d_mlp
    e = [Entry(("word", "embedding"), "embeddings.tok_embeddings.weight", "copy", (cfg.vocab_size, d))]
    e += _norm(("embed_ln",), "embeddings.norm", cfg)
    for i in range(cfg.n_layers):
        b, k = (f"blocks_{i}",), f"layers.{i}"
        if i:  # block 0's attn_norm is an identity without weights
            e += _norm(b + ("ln_attn",), f"{k}.attn_norm", cfg)
        e += linear_entries(b + ("attn", "qkv"), f"{k}.attn.Wqkv", d, 3 * d, cfg.attention_bias)
        e += linear_entries(b + ("attn", "o"), f"{k}.attn.Wo", d, d, cfg.attention_bias)
        e += _norm(b + ("ln_mlp",), f"{k}.mlp_norm", cfg)
        e += linear_entries(b + ("mlp", "fc_in"), f"{k}.mlp.Wi", d, 2 * f, cfg.mlp_bias)
        e += linear_entries(b + ("mlp", "fc_out"), f"{k}.mlp.Wo", f, d, cfg.mlp_bias)
    e += _norm(("final_ln",), "final_norm", cfg)
    if cfg.n_classes is not None:
        e += linear_entries(("head", "dense"), "head.dense", d, d, cfg.classifier_bias, head=True)
        e += _norm(("head", "ln"), "head.norm", cfg, head=True)
        e += linear_entries(("head", "classifier"), "classifier", d, cfg.n_classes, True, head=True)
    return e


def hf_class_name(cfg: ModernBertConfig) -> str:
    """The transformers class a saved folder of a classifier declares (`architectures`)."""
    return HF_CLASS


# ============================================================================== parameters
def with_head(base: ModernBertConfig, num_labels: int | None) -> ModernBertConfig:
    """`base` with a head of `num_labels` classes (None: head-less), for `create` (`encoder.with_head`)."""
    return encoder.with_head(base, num_labels)


def init_params(cfg: ModernBertConfig, seed: int) -> Any:
    """Fresh parameters (Linen init) for a model described by `cfg`."""
    dummy = {"input_ids": np.zeros((1, 2), np.int32), "attention_mask": np.ones((1, 2), np.int32)}
    variables = ModernBert(cfg).init(jax.random.key(seed), dummy, Hooks({}, frozenset(), {}))
    return jax.tree.map(np.asarray, dict(variables["params"]))


def init_head(cfg: ModernBertConfig, seed: int) -> dict:
    """Fresh parameters of the head alone (dense, norm, classifier)."""
    variables = Head(cfg).init(jax.random.key(seed), np.zeros((1, cfg.d_model), np.float32),
                               Hooks({}, frozenset(), {}))
    return jax.tree.map(np.asarray, dict(variables["params"]))


def load_head(folder: Path, base: ModernBertConfig, state: dict[str, np.ndarray], *, num_labels: int | None,
              seed: int) -> tuple[ModernBertConfig, dict[str, np.ndarray], bool]:
    """The head a loaded ModernBERT gets, from its (`convert.normalize_keys`-ed) state dict.

    A checkpoint with a classifier keeps it (`num_labels` must agree); one without gets a fresh
    classifier (seeded by `seed`) when `num_labels` is given, as
    `AutoModelForSequenceClassification` would: a masked-LM checkpoint's `head.dense` and
    `head.norm` (the same prediction head) are kept, the missing ones are fresh, and its
    `decoder.*` weights are unused (`ignore=["decoder.*"]`). Without either the model stays
    head-less.

    Returns:
        (config with its head fields, state with a fresh head's weights added, whether the
        classifier is fresh).

    Raises:
        InputError: num_labels disagreeing with the checkpoint, or < 1.
    """
    n_classes, fresh = encoder.head_classes(folder, state, "classifier.weight", num_labels)
    cfg = dataclasses.replace(base, n_classes=n_classes)
    if fresh:  # fill the missing head weights from a fresh init, like HF does
        state = encoder.fill_head(state, table(cfg), init_head(cfg, seed))
    return cfg, state, fresh
