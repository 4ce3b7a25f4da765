"""Flax (Linen) modules of the transformer encoders, with hook points at every site.

One module family covers BERT/RoBERTa/DistilBERT (post-LN text encoders) and ViT (pre-LN image
encoder); the differences are in `ArchConfig`. Modules never keep state: interventions and
captures travel through a `Hooks` object passed down the call, so `Model.apply` stays a pure
function of (params, inputs, perturbations).

Segmented execution: `Encoder(... start=j, stop=k)` runs blocks j..k-1 only. A run that stops
at block k returns the residual stream entering block k *before* that boundary site's hook
(`hook_embed` for k = 0, else `blocks.{k-1}.hook_resid_post`); a run that starts at block j
applies that hook first, so prefix + suffix equals the full forward.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from apex_jax import interventions as iv_lib
from apex_jax import sites as site_lib
from apex_jax.models.blocks import STACKED, run_blocks
from apex_jax.models.config import ArchConfig

Array = Any

_ACT = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


class Hooks:
    """Applies interventions and records captures at named sites during one forward pass."""

    def __init__(self, perturbations: dict, capture: frozenset, site_ids: dict[str, int]):
        self.perturbations = perturbations
        self.capture = capture
        self.site_ids = site_ids
        self.captured: dict[str, Array] = {}

    def __call__(self, site: str, x: Array) -> Array:
        iv = self.perturbations.get(site)
        if iv is not None:
            x = iv_lib.apply_intervention(
                iv, x, site, self.site_ids[site], site_lib.position_axis(site)
            )
        if site in self.capture:
            self.captured[site] = x
        return x


def _layer_norm(cfg: ArchConfig, name: str) -> nn.LayerNorm:
    # use_fast_variance=False: E[(x-μ)²] like PyTorch, not E[x²]-μ² (loses precision).
    return nn.LayerNorm(epsilon=cfg.ln_eps, use_fast_variance=False, name=name)


class Attention(nn.Module):
    cfg: ArchConfig

    @nn.compact
    def __call__(self, x: Array, mask: Array | None, hooks: Hooks, prefix: str,
                 cls_only: bool = False) -> Array:
        """x: [batch, pos, d_model]; mask: [batch, pos] (1 = token, 0 = padding) or None.

        cls_only: queries (and so every output) only for position 0; keys/values for all."""
        cfg = self.cfg

        def heads(name, src):
            y = nn.Dense(cfg.d_model, use_bias=cfg.qkv_bias, name=name)(src)
            return hooks(f"{prefix}.attn.hook_{name}", y.reshape(*src.shape[:2], cfg.n_heads, cfg.d_head))

        q = heads("q", x[:, :1] if cls_only else x)
        k, v = heads("k", x), heads("v", x)
        b, p = q.shape[:2]
        # softmax in float32 whatever the precision (a no-op cast in float32)
        scores = (jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(cfg.d_head)).astype(jnp.float32)
        if mask is not None:
            scores = jnp.where(mask[:, None, None, :] > 0, scores, jnp.finfo(scores.dtype).min)
        pattern = hooks(f"{prefix}.attn.hook_pattern", jax.nn.softmax(scores, axis=-1).astype(q.dtype))
        z = hooks(f"{prefix}.attn.hook_z", jnp.einsum("bhqk,bkhd->bqhd", pattern, v))
        return nn.Dense(cfg.d_model, name="o")(z.reshape(b, p, cfg.d_model))


class MLP(nn.Module):
    cfg: ArchConfig

    @nn.compact
    def __call__(self, x: Array, hooks: Hooks, prefix: str) -> Array:
        pre = hooks(f"{prefix}.mlp.hook_pre", nn.Dense(self.cfg.d_mlp, name="fc_in")(x))
        post = hooks(f"{prefix}.mlp.hook_post", _ACT[self.cfg.act](pre))
        return nn.Dense(self.cfg.d_model, name="fc_out")(post)


class Block(nn.Module):
    cfg: ArchConfig
    index: int
    cls_only: bool = False  # compute only what position 0's output needs (last block, CLS head)

    @nn.compact
    def __call__(self, x: Array, mask: Array | None, hooks: Hooks) -> Array:
        cfg, p = self.cfg, f"blocks.{self.index}"
        x = hooks(f"{p}.hook_resid_pre", x)
        ln_attn, ln_mlp = _layer_norm(cfg, "ln_attn"), _layer_norm(cfg, "ln_mlp")
        attn, mlp = Attention(cfg, name="attn"), MLP(cfg, name="mlp")
        keep = x[:, :1] if self.cls_only else x  # the residual of the positions computed
        if cfg.norm == "post":  # BERT family: LN(x + sublayer(x))
            a = hooks(f"{p}.hook_attn_out", attn(x, mask, hooks, p, self.cls_only))
            x = hooks(f"{p}.hook_resid_mid", ln_attn(keep + a))
            m = hooks(f"{p}.hook_mlp_out", mlp(x, hooks, p))
            x = ln_mlp(x + m)
        else:  # ViT: x + sublayer(LN(x))
            a = hooks(f"{p}.hook_attn_out", attn(ln_attn(x), mask, hooks, p, self.cls_only))
            x = hooks(f"{p}.hook_resid_mid", keep + a)
            m = hooks(f"{p}.hook_mlp_out", mlp(ln_mlp(x), hooks, p))
            x = x + m
        return x  # the caller applies hook_resid_post (a boundary site)


class TextEmbeddings(nn.Module):
    cfg: ArchConfig

    @nn.compact
    def __call__(self, input_ids: Array, attention_mask: Array, token_type_ids: Array | None):
        cfg = self.cfg
        x = nn.Embed(cfg.vocab_size, cfg.d_model, name="word")(input_ids)
        if cfg.arch == "roberta":
            # RoBERTa numbers real tokens from pad_token_id + 1 and gives padding pad_token_id.
            real = (input_ids != cfg.pad_token_id).astype(jnp.int32)
            positions = jnp.cumsum(real, axis=1) * real + cfg.pad_token_id
        else:
            positions = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
        x = x + nn.Embed(cfg.max_positions, cfg.d_model, name="position")(positions)
        if cfg.type_vocab_size:
            if token_type_ids is None:
                token_type_ids = jnp.zeros_like(input_ids)
            x = x + nn.Embed(cfg.type_vocab_size, cfg.d_model, name="token_type")(token_type_ids)
        return _layer_norm(cfg, "ln")(x)


class PatchEmbeddings(nn.Module):
    cfg: ArchConfig

    @nn.compact
    def __call__(self, pixel_values: Array) -> Array:
        """pixel_values: [batch, channels, height, width] -> [batch, 1 + n_patches, d_model]."""
        cfg = self.cfg
        pixel_values = jnp.asarray(pixel_values).astype(cfg.compute_dtype)
        b, c, h, w = pixel_values.shape
        if (c, h, w) != (cfg.num_channels, cfg.image_size, cfg.image_size):
            raise ValueError(
                f"pixel_values have shape [batch, {c}, {h}, {w}]; this model expects "
                f"[batch, {cfg.num_channels}, {cfg.image_size}, {cfg.image_size}]."
            )
        s = cfg.patch_size
        # A stride-s convolution with an s×s kernel is a matmul over flattened (c, s, s) patches.
        patches = pixel_values.reshape(b, c, h // s, s, w // s, s)
        patches = patches.transpose(0, 2, 4, 1, 3, 5).reshape(b, (h // s) * (w // s), c * s * s)
        x = nn.Dense(cfg.d_model, name="patch")(patches)
        init = nn.initializers.truncated_normal(0.02)
        cls = self.param("cls", init, (1, 1, cfg.d_model))
        x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, cfg.d_model)).astype(x.dtype), x], axis=1)
        return x + self.param("position", init, (1, cfg.n_patches + 1, cfg.d_model))


class Head(nn.Module):
    """The HF sequence/image-classification head on the [CLS] vector."""

    cfg: ArchConfig

    @nn.compact
    def __call__(self, cls: Array, hooks: Hooks) -> Array:
        """cls: [batch, d_model] (final [CLS] residual) -> logits [batch, n_classes]."""
        cfg = self.cfg
        if cfg.arch == "bert":
            cls = jnp.tanh(nn.Dense(cfg.d_model, name="pooler")(cls))
        elif cfg.arch == "roberta":
            cls = jnp.tanh(nn.Dense(cfg.d_model, name="dense")(cls))
        elif cfg.arch == "distilbert":
            cls = jax.nn.relu(nn.Dense(cfg.d_model, name="pre_classifier")(cls))
        cls = hooks("head.hook_cls", cls)
        return hooks("head.hook_logits", nn.Dense(cfg.n_classes, name="classifier")(cls))


class Encoder(nn.Module):
    """The whole model; `start`/`stop` select a segment of blocks (see module docstring)."""

    cfg: ArchConfig
    scan: bool = True  # run the block stack as scans over stacked layers (models.blocks)

    @nn.compact
    def __call__(self, inputs, hooks: Hooks, start: int = 0, stop: int | None = None,
                 head_only: bool = False):
        cfg = self.cfg
        head_only = head_only and stop is None and cfg.n_classes is not None
        if start == 0 and not isinstance(inputs, tuple):
            if cfg.is_text:
                mask = inputs["attention_mask"]
                x = TextEmbeddings(cfg, name="embed")(
                    inputs["input_ids"], mask, inputs.get("token_type_ids")
                )
            else:
                mask = None
                x = PatchEmbeddings(cfg, name="embed")(inputs["pixel_values"])
        else:
            x, mask = inputs  # a cached prefix: (residual entering block `start`, mask)
        end = cfg.n_layers if stop is None else stop
        tail = end - 1 if head_only and end > start else end  # head_only: the last block runs unrolled, [CLS] only
        if self.is_initializing():  # Linen init creates every block's parameters
            for i in range(start, tail):
                x = hooks(site_lib.boundary_site(i), x)
                x = Block(cfg, i, name=f"blocks_{i}")(x, mask, hooks)
        else:
            params = self.variables["params"]
            x = run_blocks(
                x, hooks, range(start, tail),
                lambda i, p, h, hk: Block(cfg, i, parent=None).apply({"params": p}, h, mask, hk),
                lambda i: params[f"blocks_{i}"], scan=self.scan, stacked=params.get(STACKED),
            )
        if tail < end:
            x = hooks(site_lib.boundary_site(tail), x)
            x = Block(cfg, tail, cls_only=True, name=f"blocks_{tail}")(x, mask, hooks)
        if stop is not None:  # prefix mode: the boundary hook of `stop` belongs to the suffix
            return x, mask, None
        x = hooks(site_lib.boundary_site(cfg.n_layers), x)
        logits = None
        if cfg.n_classes is not None:
            cls = x[:, 0]
            if cfg.arch == "vit":  # ViT's final LayerNorm; per token, so [CLS] alone suffices
                cls = _layer_norm(cfg, "final_ln")(cls)
            # the head (pooler, classifier) and the logits in float32 (a no-op cast in float32)
            logits = Head(cfg, name="head")(cls.astype(jnp.float32), hooks)
        return x, mask, logits
