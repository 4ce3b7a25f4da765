"""The encoder family: BERT, MiniLM, RoBERTa, DistilBERT (post-LN text encoders) and ViT (pre-LN
image encoder).

ViT shares the encoder forward (attention, MLP, the block with the norm placed before each
sublayer instead of after, the stack, the [CLS] head); only its embeddings (patches instead of
tokens) and its weight names differ, so it lives here. This module holds:

  * `ArchConfig` and `from_hf`: the HF config dict -> our static description;
  * the forward: Flax (Linen) modules with hook points at every site (`Encoder` is the model);
  * `table`, `BASE_PREFIX`, `key_renames`, `hf_class_name`: the weights' HF names (the strict
    walk is `convert`'s) and the classes a saved folder declares;
  * `init_params`, `init_head`, `load_head`: fresh parameters and the head a loaded folder gets.

Segmented execution: `Encoder(... start=j, stop=k)` runs blocks j..k-1 only. A run that stops
at block k returns the residual stream entering block k *before* that boundary site's hook
(`hook_embed` for k = 0, else `blocks.{k-1}.hook_resid_post`); a run that starts at block j
applies that hook first, so prefix + suffix equals the full forward.
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
from apex_jax.errors import InputError
from apex_jax.models import common
from apex_jax.models.common import Hooks
from apex_jax.models.convert import Entry, get_path, to_hf

Array = Any

# model_type -> our architecture
MODEL_TYPES = {
    "bert": "bert",
    "roberta": "roberta",
    "xlm-roberta": "roberta",
    "camembert": "roberta",
    "distilbert": "distilbert",
    "vit": "vit",
}


# ================================================================================== config
@dataclasses.dataclass(frozen=True)
class ArchConfig:
    """Static description of an encoder; hashable, so it can be a static jit argument."""

    arch: str  # "bert" | "roberta" | "distilbert" | "vit"
    n_layers: int
    d_model: int
    n_heads: int
    d_mlp: int
    act: str
    ln_eps: float
    norm: str  # "post" (BERT family) or "pre" (ViT)
    n_classes: int | None = None  # None: no classification head
    has_pooler: bool = False  # BERT / ViT pooler weights present
    qkv_bias: bool = True
    # text
    vocab_size: int = 0
    max_positions: int = 0
    type_vocab_size: int = 0
    pad_token_id: int = 0
    # image
    image_size: int = 0
    patch_size: int = 0
    num_channels: int = 0
    # precision: "float32" | "bfloat16" parameters and activations; softmax, norm statistics and
    # the logits stay float32 either way (`common.DTYPES`)
    dtype: str = "float32"

    is_decoder = False  # decoders have their own config (`decoder.DecoderConfig`)

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def compute_dtype(self):
        return common.compute_dtype(self.dtype)

    @property
    def is_text(self) -> bool:
        return self.arch != "vit"

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    # Families built on this encoder with their own attention, text embeddings or head (`bigbird`)
    # override these; the Flax modules are looked up when a block or the model is built.
    def attention_module(self) -> type:
        return Attention

    def text_embeddings_module(self) -> type:
        return TextEmbeddings

    def head_module(self) -> type:
        return Head


def from_hf(hf: Mapping[str, Any]) -> ArchConfig:
    """Builds an ArchConfig from the HF config dict of an encoder (its `model_type` one of
    `MODEL_TYPES`; head fields are filled by the loader).

    Raises:
        KeyError: a required entry is missing.
        ValueError: an option this implementation does not compute (naming it).
    """
    arch = MODEL_TYPES[hf.get("model_type")]
    if arch == "distilbert":
        d_model, n_heads = hf["dim"], hf["n_heads"]
        shared = dict(
            n_layers=hf["n_layers"], d_model=d_model, n_heads=n_heads, d_mlp=hf["hidden_dim"],
            act=hf.get("activation", "gelu"), ln_eps=1e-12, norm="post",
        )
    else:
        d_model, n_heads = hf["hidden_size"], hf["num_attention_heads"]
        shared = dict(
            n_layers=hf["num_hidden_layers"], d_model=d_model, n_heads=n_heads,
            d_mlp=hf["intermediate_size"], act=hf.get("hidden_act", "gelu"),
            ln_eps=float(hf.get("layer_norm_eps", 1e-12)), norm="pre" if arch == "vit" else "post",
        )
    if d_model % n_heads:
        raise ValueError(f"hidden size {d_model} is not divisible by the number of heads {n_heads}.")
    if shared["act"] not in common.ACTIVATIONS:
        raise ValueError(f"unsupported activation {shared['act']!r}; supported: {', '.join(common.ACTIVATIONS)}.")
    if arch == "vit":
        return ArchConfig(
            arch=arch, **shared, qkv_bias=bool(hf.get("qkv_bias", True)),
            image_size=_as_int(hf["image_size"]), patch_size=_as_int(hf["patch_size"]),
            num_channels=hf.get("num_channels", 3),
        )
    if arch == "roberta" and hf.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("only absolute position embeddings are supported.")
    if arch == "bert" and hf.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("only absolute position embeddings are supported.")
    return ArchConfig(
        arch=arch, **shared, vocab_size=hf["vocab_size"],
        max_positions=hf["max_position_embeddings"],
        type_vocab_size=0 if arch == "distilbert" else hf.get("type_vocab_size", 2),
        pad_token_id=common.hf_get(hf, "pad_token_id", default=1 if arch == "roberta" else 0),
    )


def _as_int(v) -> int:
    if isinstance(v, (list, tuple)):
        if len(set(v)) != 1:
            raise ValueError(f"non-square sizes {v} are not supported.")
        return int(v[0])
    return int(v)


# ================================================================================= forward
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
        post = hooks(f"{prefix}.mlp.hook_post", common.ACT[self.cfg.act](pre))
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
        attn, mlp = cfg.attention_module()(cfg, name="attn"), MLP(cfg, name="mlp")
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
    scan: bool = True  # run the block stack as scans over stacked layers (`common.run_blocks`)

    @nn.compact
    def __call__(self, inputs, hooks: Hooks, start: int = 0, stop: int | None = None,
                 head_only: bool = False):
        cfg = self.cfg
        head_only = head_only and stop is None and cfg.n_classes is not None
        if start == 0 and not isinstance(inputs, tuple):
            if cfg.is_text:
                mask = inputs["attention_mask"]
                x = cfg.text_embeddings_module()(cfg, name="embed")(
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
            x = common.run_blocks(
                x, hooks, range(start, tail),
                lambda i, p, h, hk: Block(cfg, i, parent=None).apply({"params": p}, h, mask, hk),
                lambda i: params[f"blocks_{i}"], scan=self.scan, stacked=params.get(common.STACKED),
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
            logits = cfg.head_module()(cfg, name="head")(cls.astype(jnp.float32), hooks)
        return x, mask, logits

# ================================================================================= weights
# The base model's prefix of the body weights in a `*ForSequenceClassification` state dict.
BASE_PREFIX = {"bert": "bert", "roberta": "roberta", "distilbert": "distilbert", "vit": "vit"}
# ViT: transformers 5.x names its modules `layers.N.attention.q_proj`, `layers.N.mlp.fc1`, ...
# but reads and writes checkpoints with the names every transformers version knows
# (`encoder.layer.N.attention.attention.query`, ...). Those on-disk names are canonical here
# (`Model.save` writes them, so 4.x can read our folders too); 5.x module names are mapped to them.
_VIT_RENAMES = (
    (r"^layers\.(\d+)\.attention\.q_proj\.", r"encoder.layer.\1.attention.attention.query."),
    (r"^layers\.(\d+)\.attention\.k_proj\.", r"encoder.layer.\1.attention.attention.key."),
    (r"^layers\.(\d+)\.attention\.v_proj\.", r"encoder.layer.\1.attention.attention.value."),
    (r"^layers\.(\d+)\.attention\.o_proj\.", r"encoder.layer.\1.attention.output.dense."),
    (r"^layers\.(\d+)\.mlp\.fc1\.", r"encoder.layer.\1.intermediate.dense."),
    (r"^layers\.(\d+)\.mlp\.fc2\.", r"encoder.layer.\1.output.dense."),
    (r"^layers\.(\d+)\.", r"encoder.layer.\1."),
)


def key_renames(arch: str) -> tuple[tuple[str, str], ...]:
    """The (regex, replacement) renames of `arch`'s checkpoint keys (`convert.normalize_keys`)."""
    return _VIT_RENAMES if arch == "vit" else ()


def _dense(path: tuple[str, ...], key: str, d_in: int, d_out: int, head: bool = False) -> list[Entry]:
    """A torch Linear ([out, in] weight, transposed) and its bias."""
    return [
        Entry(path + ("kernel",), f"{key}.weight", "dense", (d_out, d_in), head),
        Entry(path + ("bias",), f"{key}.bias", "copy", (d_out,), head),
    ]


def _ln(path: tuple[str, ...], key: str, d: int) -> list[Entry]:
    """A LayerNorm's scale and bias [d]."""
    return [
        Entry(path + ("scale",), f"{key}.weight", "copy", (d,)),
        Entry(path + ("bias",), f"{key}.bias", "copy", (d,)),
    ]


def table(cfg: ArchConfig) -> list[Entry]:
    """The full weight table of an encoder described by `cfg` (keys relative to the base model
    for the body; head keys absolute)."""
    d, f = cfg.d_model, cfg.d_mlp
    e: list[Entry] = []
    if cfg.arch == "vit":
        c, s = cfg.num_channels, cfg.patch_size
        e += [
            Entry(("embed", "cls"), "embeddings.cls_token", "copy", (1, 1, d)),
            Entry(("embed", "position"), "embeddings.position_embeddings", "copy", (1, cfg.n_patches + 1, d)),
            Entry(("embed", "patch", "kernel"), "embeddings.patch_embeddings.projection.weight", "patch", (d, c, s, s)),
            Entry(("embed", "patch", "bias"), "embeddings.patch_embeddings.projection.bias", "copy", (d,)),
        ]
        for i in range(cfg.n_layers):
            b, k = (f"blocks_{i}",), f"encoder.layer.{i}"
            for ours, theirs in (("q", "query"), ("k", "key"), ("v", "value")):
                e += _dense(b + ("attn", ours), f"{k}.attention.attention.{theirs}", d, d)
                if not cfg.qkv_bias:
                    e.pop()
            e += _dense(b + ("attn", "o"), f"{k}.attention.output.dense", d, d)
            e += _ln(b + ("ln_attn",), f"{k}.layernorm_before", d)
            e += _dense(b + ("mlp", "fc_in"), f"{k}.intermediate.dense", d, f)
            e += _dense(b + ("mlp", "fc_out"), f"{k}.output.dense", f, d)
            e += _ln(b + ("ln_mlp",), f"{k}.layernorm_after", d)
        e += _ln(("final_ln",), "layernorm", d)
    else:
        e += [
            Entry(("embed", "word", "embedding"), "embeddings.word_embeddings.weight", "copy", (cfg.vocab_size, d)),
            Entry(("embed", "position", "embedding"), "embeddings.position_embeddings.weight", "copy", (cfg.max_positions, d)),
        ]
        if cfg.type_vocab_size:
            e.append(Entry(("embed", "token_type", "embedding"), "embeddings.token_type_embeddings.weight", "copy", (cfg.type_vocab_size, d)))
        e += _ln(("embed", "ln"), "embeddings.LayerNorm", d)
        for i in range(cfg.n_layers):
            b = (f"blocks_{i}",)
            if cfg.arch == "distilbert":
                k = f"transformer.layer.{i}"
                names = dict(q=f"{k}.attention.q_lin", k=f"{k}.attention.k_lin", v=f"{k}.attention.v_lin",
                             o=f"{k}.attention.out_lin", ln_attn=f"{k}.sa_layer_norm", fc_in=f"{k}.ffn.lin1",
                             fc_out=f"{k}.ffn.lin2", ln_mlp=f"{k}.output_layer_norm")
            else:
                k = f"encoder.layer.{i}"
                names = dict(q=f"{k}.attention.self.query", k=f"{k}.attention.self.key", v=f"{k}.attention.self.value",
                             o=f"{k}.attention.output.dense", ln_attn=f"{k}.attention.output.LayerNorm",
                             fc_in=f"{k}.intermediate.dense", fc_out=f"{k}.output.dense", ln_mlp=f"{k}.output.LayerNorm")
            for ours in ("q", "k", "v", "o"):
                e += _dense(b + ("attn", ours), names[ours], d, d)
            e += _ln(b + ("ln_attn",), names["ln_attn"], d)
            e += _dense(b + ("mlp", "fc_in"), names["fc_in"], d, f)
            e += _dense(b + ("mlp", "fc_out"), names["fc_out"], f, d)
            e += _ln(b + ("ln_mlp",), names["ln_mlp"], d)
    if cfg.has_pooler:
        e += _dense(("head", "pooler"), "pooler.dense", d, d)
    if cfg.n_classes is not None:
        n = cfg.n_classes
        if cfg.arch == "roberta":
            e += _dense(("head", "dense"), "classifier.dense", d, d, head=True)
            e += _dense(("head", "classifier"), "classifier.out_proj", d, n, head=True)
        else:
            if cfg.arch == "distilbert":
                e += _dense(("head", "pre_classifier"), "pre_classifier", d, d, head=True)
            e += _dense(("head", "classifier"), "classifier", d, n, head=True)
    return e

HF_CLASS = {
    "bert": "BertForSequenceClassification",
    "roberta": "RobertaForSequenceClassification",
    "distilbert": "DistilBertForSequenceClassification",
    "vit": "ViTForImageClassification",
}


def hf_class_name(cfg: ArchConfig) -> str:
    """The transformers class a saved folder of a classifier declares (`architectures`)."""
    return HF_CLASS[cfg.arch]


# ============================================================================== parameters
def init_params(cfg: ArchConfig, seed: int) -> Any:
    """Fresh parameters (Linen init) for a model described by `cfg`."""
    if cfg.is_text:
        dummy = {"input_ids": np.zeros((1, 2), np.int32), "attention_mask": np.ones((1, 2), np.int32)}
    else:
        s = cfg.image_size
        dummy = {"pixel_values": np.zeros((1, cfg.num_channels, s, s), np.float32)}
    hooks = Hooks({}, frozenset(), {})
    variables = Encoder(cfg).init(jax.random.key(seed), dummy, hooks)
    params = jax.tree.map(np.asarray, dict(variables["params"]))
    if cfg.has_pooler and "pooler" not in params.get("head", {}):
        # The pooler of a head-less BERT/ViT is never called, so Linen did not create it.
        rng = np.random.default_rng(seed)
        params.setdefault("head", {})["pooler"] = {
            "kernel": rng.normal(0, 0.02, (cfg.d_model, cfg.d_model)).astype(np.float32),
            "bias": np.zeros((cfg.d_model,), np.float32),
        }
    return params


def with_head(base: ArchConfig, num_labels: int | None) -> ArchConfig:
    """`base` with a head of `num_labels` classes (None: head-less), for `create` (BERT's
    classifier reads its pooler)."""
    return dataclasses.replace(base, n_classes=num_labels, has_pooler=base.has_pooler or base.arch == "bert")


def init_head(cfg: ArchConfig, seed: int) -> dict:
    """Fresh parameters of the classification head alone (pooler / dense / pre_classifier and
    classifier): a Linen init of `Head` on a dummy [1, d_model] vector, milliseconds, where
    `init_params` runs the whole model."""
    hooks = Hooks({}, frozenset(), {})
    variables = Head(cfg).init(jax.random.key(seed), np.zeros((1, cfg.d_model), np.float32), hooks)
    return jax.tree.map(np.asarray, dict(variables["params"]))


def load_head(folder: Path, base: ArchConfig, state: dict[str, np.ndarray], *, num_labels: int | None,
              seed: int) -> tuple[ArchConfig, dict[str, np.ndarray], bool]:
    """The head a loaded encoder gets, from its (`convert.normalize_keys`-ed) state dict.

    A checkpoint with a classifier keeps it (`num_labels` must agree); one without gets a fresh
    head (seeded by `seed`) when `num_labels` is given, as `AutoModelForSequenceClassification`
    would; else the model stays head-less.

    Returns:
        (config with its head fields, state with a fresh head's weights added, whether the head
        is fresh).

    Raises:
        InputError: num_labels disagreeing with the checkpoint, or < 1.
    """
    head_key = "classifier.out_proj.weight" if base.arch == "roberta" else "classifier.weight"
    n_classes, fresh = head_classes(folder, state, head_key, num_labels)
    has_pooler = "pooler.dense.weight" in state
    if fresh and base.arch == "bert":
        has_pooler = True  # BertForSequenceClassification always has a pooler
    elif fresh and has_pooler:
        # RoBERTa/ViT base models carry a pooler their classifiers do not have; drop it as
        # `AutoModelFor*Classification` does, so a saved folder has exactly the classifier's keys.
        state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
        has_pooler = False
    cfg = dataclasses.replace(base, n_classes=n_classes, has_pooler=has_pooler)

    if fresh:  # fill the head (and a missing pooler) from a fresh init, like HF does
        state = fill_head(state, table(cfg), init_head(cfg, seed),
                          lambda e: e.key.split(".")[0] in ("classifier", "pre_classifier", "pooler"))
    return cfg, state, fresh


def head_classes(folder: Path, state: Mapping[str, Any], head_key: str,
                 num_labels: int | None) -> tuple[int | None, bool]:
    """(the class count a loaded model's head gets, whether that head is fresh): the checkpoint's
    classifier `head_key` (`num_labels` must agree), else `num_labels` (a fresh head, as
    `AutoModelForSequenceClassification` makes), else None (head-less). Every encoder family's
    `load_head` decides with it.

    Raises:
        InputError: num_labels disagreeing with the checkpoint, or < 1.
    """
    ckpt_classes = state[head_key].shape[0] if head_key in state else None
    if ckpt_classes is not None and num_labels is not None and num_labels != ckpt_classes:
        raise InputError(
            f"{folder} has a {ckpt_classes}-class classifier but num_labels={num_labels} was asked; "
            "drop num_labels, or remove the classifier weights to train a new head."
        )
    n_classes = ckpt_classes if ckpt_classes is not None else num_labels
    if n_classes is not None and n_classes < 1:
        raise InputError(f"num_labels must be >= 1; got {n_classes}.")
    return n_classes, ckpt_classes is None and n_classes is not None


def fill_head(state: dict[str, Any], entries: list[Entry], head: Mapping,
              wanted=lambda entry: entry.head) -> dict[str, Any]:
    """`state` with every `wanted` entry it lacks taken, in HF layout, from fresh head parameters
    `head` (a family's `init_head`), as HF initialises a head the checkpoint does not have."""
    state = dict(state)
    init = {"head": head}
    for entry in entries:
        if entry.key not in state and wanted(entry):
            state[entry.key] = to_hf(entry, np.asarray(get_path(init, entry.path)))
    return state
