"""BigBird (RoBERTa-style) encoders: model_type `big_bird`, `BigBirdForSequenceClassification`.

BigBird is the post-LN BERT encoder (`encoder.Block`, `encoder.MLP` and `encoder.Encoder` run
it) with three differences, which live here:

  * attention (`BlockSparseAttention`): `attention_type="block_sparse"` as transformers computes
    it, or `"original_full"` (ordinary masked attention);
  * embeddings: word (times sqrt(d_model) with `rescale_embeddings`) + token type + absolute
    position 0..n-1, then LayerNorm;
  * the head: `classifier.dense` -> `hidden_act` -> `classifier.out_proj` on [CLS] (the
    activation is the config's `hidden_act`, gelu_new by default, not RoBERTa's tanh); the base
    model's `pooler` (a Linear named `pooler`) is carried in every checkpoint, loaded and saved,
    but no logit reads it.

Block-sparse attention, as transformers 5 computes it in eval mode. The (padded) sequence is
cut into blocks of `block_size` tokens. The first and last query blocks are global: they attend
to every key. Every other query block `i` attends to key block 0, the window `i-1, i, i+1`, the
last key block, and `num_random_blocks` "random" blocks; query blocks 1 and n-2 attend to key
blocks {0, 1, 2, n-1} and {0, n-3, n-2, n-1} plus their random blocks. Eval mode draws no random
blocks: transformers' plan is an all-zero table (`random_blocks`), so every random block is
key block 0 again, and block 0's keys enter those softmaxes 1 + num_random_blocks times. That is
deterministic and is what `model.eval()` runs; transformers' training mode instead draws
blocks with numpy seeded by the layer index, which is not computed here (apex-jax fine-tunes
with the eval-mode attention). Penalties are transformers' additive -10000: keys that are padding
(and, in the window and random blocks, every key of a padding query) get -10000; the output at
padding queries is zeroed.

Regime (`BigBirdConfig.block_sparse_at`): transformers falls back to `original_full` when the
input is too short, `seq_len <= (5 + 2 * num_random_blocks) * block_size` (seq_len = the
batch's padded input length), with a warning; it does so by switching the module's attention
type for good, so a transformers model that once saw a short batch stays in full attention.
Here the regime is chosen per call from the input length: what a freshly loaded transformers
model computes on that batch. Under block-sparse, transformers pads the sequence to a multiple
of `block_size` (padding, masked) and crops the output; padding keys get no weight, so here only
q/k/v are padded inside the attention and every site keeps the input's length.

`attn.hook_pattern` under block-sparse is the equivalent dense pattern [batch, heads, query,
key]: zero where a query does not attend, and at key block 0 the summed weight of its copies
(rows of real queries sum to 1, and z = pattern · v). It is built only when the site is captured
or perturbed (O(n²) memory, as full attention); a perturbed pattern is applied densely
(z = pattern · v, zeroed at padding queries). transformers' `output_attentions` writes one copy's
weight there instead (its scatter overwrites), so at those entries it shows 1 / (1 +
num_random_blocks) of ours; everywhere else the two agree.
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
from apex_jax.models.encoder import ArchConfig

Array = Any

MODEL_TYPES = {"big_bird": "big_bird"}  # model_type -> our architecture
BASE_PREFIX = {"big_bird": "bert"}  # the base model's prefix of the body weights (transformers' name)
ATTENTION_TYPES = ("block_sparse", "original_full")
PENALTY = -10000.0  # transformers' additive mask value in block-sparse attention


# ================================================================================== config
@dataclasses.dataclass(frozen=True)
class BigBirdConfig(ArchConfig):
    """An `ArchConfig` (arch "big_bird", post-LN) with BigBird's attention settings."""

    attention_type: str = "block_sparse"  # one of ATTENTION_TYPES
    block_size: int = 64
    num_random_blocks: int = 3
    rescale_embeddings: bool = False  # word embeddings times sqrt(d_model)

    def block_sparse_at(self, length: int) -> bool:
        """Whether an input of `length` positions (the batch's padded length) runs block-sparse:
        transformers' condition, `length > (5 + 2 * num_random_blocks) * block_size`."""
        return self.attention_type == "block_sparse" and length > (5 + 2 * self.num_random_blocks) * self.block_size

    def attention_module(self) -> type:
        return BlockSparseAttention

    def text_embeddings_module(self) -> type:
        return Embeddings

    def head_module(self) -> type:
        return ClassificationHead


def from_hf(hf: Mapping[str, Any]) -> BigBirdConfig:
    """Builds a BigBirdConfig from a `big_bird` HF config dict (head fields are filled by the
    loader; the pooler every BigBird base model has is assumed until the checkpoint says).

    Raises:
        KeyError: a required entry is missing.
        ValueError: an option this implementation does not compute (naming it).
    """
    d, h = hf["hidden_size"], hf["num_attention_heads"]
    if d % h:
        raise ValueError(f"hidden size {d} is not divisible by the number of heads {h}.")
    act = hf.get("hidden_act", "gelu_new")
    if act not in common.ACTIVATIONS:
        raise ValueError(f"unsupported activation {act!r}; supported: {', '.join(common.ACTIVATIONS)}.")
    attention_type = hf.get("attention_type", "block_sparse")
    if attention_type not in ATTENTION_TYPES:
        raise ValueError(f"unsupported BigBird attention_type {attention_type!r}; supported: {', '.join(ATTENTION_TYPES)}.")
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
        raise ValueError("BigBird as a decoder (is_decoder / add_cross_attention) is not supported; "
                         "only the bidirectional encoder is.")
    block_size, n_random = int(hf.get("block_size", 64)), int(hf.get("num_random_blocks", 3))
    if block_size < 1 or n_random < (1 if attention_type == "block_sparse" else 0):
        # transformers' block-sparse attention fails without a random block (an empty gather)
        raise ValueError(f"BigBird needs block_size >= 1 and, with block_sparse attention, num_random_blocks >= 1; "
                         f"got block_size {block_size}, num_random_blocks {n_random}.")
    return BigBirdConfig(
        arch="big_bird", n_layers=hf["num_hidden_layers"], d_model=d, n_heads=h,
        d_mlp=hf["intermediate_size"], act=act, ln_eps=float(hf.get("layer_norm_eps", 1e-12)), norm="post",
        has_pooler=True, qkv_bias=bool(hf.get("use_bias", True)), vocab_size=hf["vocab_size"],
        max_positions=hf.get("max_position_embeddings", 4096), type_vocab_size=hf.get("type_vocab_size", 2),
        pad_token_id=common.hf_get(hf, "pad_token_id", default=0), attention_type=attention_type,
        block_size=block_size, num_random_blocks=n_random,
        rescale_embeddings=bool(hf.get("rescale_embeddings", False)),
    )


# ================================================================================= forward
class Embeddings(nn.Module):
    """word (· sqrt(d_model) if `rescale_embeddings`) + token type + position 0..n-1, LayerNorm."""

    cfg: BigBirdConfig

    @nn.compact
    def __call__(self, input_ids: Array, attention_mask: Array, token_type_ids: Array | None) -> Array:
        """input_ids: [batch, pos] -> [batch, pos, d_model] (attention_mask unused: positions
        run 0..n-1 whatever the padding, as in transformers)."""
        cfg = self.cfg
        x = nn.Embed(cfg.vocab_size, cfg.d_model, name="word")(input_ids)
        if cfg.rescale_embeddings:
            x = x * cfg.d_model ** 0.5
        if cfg.type_vocab_size:
            if token_type_ids is None:
                token_type_ids = jnp.zeros_like(input_ids)
            x = x + nn.Embed(cfg.type_vocab_size, cfg.d_model, name="token_type")(token_type_ids)
        positions = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
        x = x + nn.Embed(cfg.max_positions, cfg.d_model, name="position")(positions)
        return nn.LayerNorm(epsilon=cfg.ln_eps, use_fast_variance=False, name="ln")(x)


class ClassificationHead(nn.Module):
    """transformers' BigBirdClassificationHead: out_proj(hidden_act(dense([CLS])))."""

    cfg: BigBirdConfig

    @nn.compact
    def __call__(self, cls: Array, hooks: Hooks) -> Array:
        """cls: [batch, d_model] (final [CLS] residual) -> logits [batch, n_classes]."""
        cfg = self.cfg
        cls = hooks("head.hook_cls", common.ACT[cfg.act](nn.Dense(cfg.d_model, name="dense")(cls)))
        return hooks("head.hook_logits", nn.Dense(cfg.n_classes, name="classifier")(cls))


def random_blocks(n_heads: int, n_blocks: int, n_random: int) -> np.ndarray:
    """The random key blocks of query blocks 1 .. n_blocks-2, per head: [heads, n_blocks-2, r].

    transformers' eval-mode plan (`_bigbird_block_rand_mask_with_head` and the fixed plans for
    1024/3072/4096 tokens alike) is all zeros: every random block is key block 0."""
    return np.zeros((n_heads, n_blocks - 2, n_random), np.int32)


def sparse_layout(n_heads: int, n_blocks: int, n_random: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The key blocks each non-global query block (1 .. n_blocks-2) attends to, as S = 5 + r slots.

    Returns:
        blocks [heads, n_blocks-2, S]: the key block of each slot; from_to [n_blocks-2, S]: the
        slot's penalty reads the query's mask too (window and random slots; blocks 0 and n-1,
        and blocks 1 and n-2's fixed ones, read the key's only); valid [n_blocks-2, S]: query
        blocks 1 and n-2 have 4 + r key blocks, their last slot is unused.
    """
    r, last = n_random, n_blocks - 1
    rand = random_blocks(n_heads, n_blocks, r)
    blocks = np.zeros((n_heads, n_blocks - 2, 5 + r), np.int32)
    from_to = np.zeros((n_blocks - 2, 5 + r), bool)
    valid = np.ones((n_blocks - 2, 5 + r), bool)
    for l, i in enumerate(range(1, last)):
        blocks[:, l, 4 : 4 + r] = rand[:, l]
        if i in (1, last - 1):  # fixed key blocks, then the random ones
            blocks[:, l, :4] = [0, 1, 2, last] if i == 1 else [0, last - 2, last - 1, last]
            from_to[l, 4 : 4 + r] = True
            valid[l, -1] = False
        else:  # key block 0, the window i-1 .. i+1, the random blocks, the last key block
            blocks[:, l, :4] = [0, i - 1, i, i + 1]
            blocks[:, l, -1] = last
            from_to[l, 1 : 4 + r] = True
    return blocks, from_to, valid


def _site_used(hooks, site: str) -> bool:
    """Whether `site` is captured or perturbed in this forward (full names in `Hooks`, local
    names in a scanned layer's hooks)."""
    names = (site, site_lib.parse(site)[1])
    return any(n in hooks.perturbations or n in hooks.capture for n in names)


def _full(q: Array, k: Array, v: Array, mask: Array, hooks, site: str) -> Array:
    """original_full: masked softmax attention. q [b, pos_q, h, d], k/v [b, pos, h, d] -> z."""
    scores = (jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])).astype(jnp.float32)
    scores = jnp.where(mask[:, None, None, :] > 0, scores, jnp.finfo(scores.dtype).min)
    pattern = hooks(site, jax.nn.softmax(scores, axis=-1).astype(q.dtype))
    return jnp.einsum("bhqk,bkhd->bqhd", pattern, v)


def _block_sparse(cfg: BigBirdConfig, q: Array, k: Array, v: Array, mask: Array, hooks, site: str,
                  cls_only: bool) -> Array:
    """Block-sparse attention (module docstring). q [b, pos_q, h, d] (pos_q = 1 with cls_only),
    k/v [b, pos, h, d], mask [b, pos] -> z [b, pos_q, h, d]."""
    b, n, h, d = k.shape
    dtype, scale = v.dtype, 1.0 / math.sqrt(d)
    mask = mask.astype(jnp.float32)
    if cls_only:  # [CLS] lies in the first block, a global one: one row over every key
        s = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) * scale
        pattern = hooks(site, jax.nn.softmax(s + ((1.0 - mask) * PENALTY)[:, None, None, :], axis=-1).astype(dtype))
        return jnp.einsum("bhqk,bkhd->bqhd", pattern, v) * mask[:, :1, None, None].astype(dtype)

    bs = cfg.block_size
    nb = -(-n // bs)
    # transformers pads to a multiple of block_size; padding keys get no weight, so zeros will do
    pad = lambda a: jnp.pad(a, [(0, 0), (0, nb * bs - n)] + [(0, 0)] * (a.ndim - 2))
    m = pad(mask)  # [b, N]
    qh, kh, vh = (pad(a).transpose(0, 2, 1, 3) for a in (q, k, v))  # [b, h, N, d]
    qb = qh.reshape(b, h, nb, bs, d)

    # the first and last query blocks are global: every key, padding keys penalized
    s = jnp.einsum("bhgqd,bhkd->bhgqk", qb[:, :, np.array([0, nb - 1])], kh).astype(jnp.float32) * scale
    p_glob = jax.nn.softmax(s + ((1.0 - m) * PENALTY)[:, None, None, None, :], axis=-1)  # [b, h, 2, bs, N]

    # the others: S slots of one key block each (`sparse_layout`)
    blocks, from_to, valid = sparse_layout(h, nb, cfg.num_random_blocks)
    heads = np.arange(h)[:, None, None]
    vg = vh.reshape(b, h, nb, bs, d)[:, heads, blocks]  # [b, h, nb-2, S, bs, d]
    kg = kh.reshape(b, h, nb, bs, d)[:, heads, blocks]
    s = jnp.einsum("bhlqd,bhlskd->bhlqsk", qb[:, :, 1:-1], kg).astype(jnp.float32) * scale
    mb = m.reshape(b, nb, bs)
    key_ok = mb[:, blocks][:, :, :, None]  # [b, h, nb-2, 1, S, bs]
    query_ok = mb[:, 1:-1][:, None, :, :, None, None]  # [b, 1, nb-2, bs, 1, 1]
    ok = jnp.where(from_to[None, None, :, None, :, None], key_ok * query_ok, key_ok)
    s = jnp.where(valid[None, None, :, None, :, None], s + (1.0 - ok) * PENALTY, jnp.finfo(jnp.float32).min)
    shape = s.shape
    p_mid = jax.nn.softmax(s.reshape(*shape[:4], -1), axis=-1).reshape(shape)  # [b, h, nb-2, bs, S, bs]

    if _site_used(hooks, site):  # the dense pattern, and z from it
        pattern = hooks(site, dense_pattern(p_glob, p_mid, blocks, valid)[:, :, :n, :n].astype(dtype))
        return jnp.einsum("bhqk,bkhd->bqhd", pattern, v) * mask[:, :, None, None].astype(dtype)
    z_glob = jnp.einsum("bhgqk,bhkd->bhgqd", p_glob.astype(dtype), vh)  # [b, h, 2, bs, d]
    z_mid = jnp.einsum("bhlqsk,bhlskd->bhlqd", p_mid.astype(dtype), vg)  # [b, h, nb-2, bs, d]
    z = jnp.concatenate([z_glob[:, :, :1], z_mid, z_glob[:, :, 1:]], axis=2).reshape(b, h, nb * bs, d)
    z = z * m[:, None, :, None].astype(dtype)  # padding queries give zeros
    return z.transpose(0, 2, 1, 3)[:, :n]


def dense_pattern(p_glob: Array, p_mid: Array, blocks: np.ndarray, valid: np.ndarray) -> Array:
    """The dense [b, h, N, N] pattern of block-sparse weights: p_glob [b, h, 2, bs, N] (first and
    last query blocks), p_mid [b, h, nb-2, bs, S, bs] over the slots of `sparse_layout`; the
    weights of slots holding the same key block add up, keys not attended are 0."""
    b, h, L, bs, S, _ = p_mid.shape
    nb = L + 2
    onehot = np.zeros((h, L, S, nb), np.float32)  # slot -> its key block
    hh, ll, ss = np.meshgrid(np.arange(h), np.arange(L), np.arange(S), indexing="ij")
    np.add.at(onehot, (hh, ll, ss, blocks), np.broadcast_to(valid, (h, L, S)).astype(np.float32))
    mid = jnp.einsum("bhlqsk,hlsn->bhlqnk", p_mid, onehot).reshape(b, h, L * bs, nb * bs)
    return jnp.concatenate([p_glob[:, :, 0], mid, p_glob[:, :, 1]], axis=2)


class BlockSparseAttention(nn.Module):
    """BigBird self-attention: block-sparse or full by `BigBirdConfig.block_sparse_at` of the
    input length; the same q/k/v/o weights and sites as `encoder.Attention`."""

    cfg: BigBirdConfig

    @nn.compact
    def __call__(self, x: Array, mask: Array | None, hooks: Hooks, prefix: str, cls_only: bool = False) -> Array:
        """x: [batch, pos, d_model]; mask: [batch, pos] (1 = token, 0 = padding).

        cls_only: queries (and so every output) only for position 0; keys/values for all."""
        cfg = self.cfg

        def heads(name, src):
            y = nn.Dense(cfg.d_model, use_bias=cfg.qkv_bias, name=name)(src)
            return hooks(f"{prefix}.attn.hook_{name}", y.reshape(*src.shape[:2], cfg.n_heads, cfg.d_head))

        q = heads("q", x[:, :1] if cls_only else x)
        k, v = heads("k", x), heads("v", x)
        if mask is None:
            mask = jnp.ones(x.shape[:2], jnp.int32)
        site = f"{prefix}.attn.hook_pattern"
        if cfg.block_sparse_at(x.shape[1]):
            z = _block_sparse(cfg, q, k, v, mask, hooks, site, cls_only)
        else:
            z = _full(q, k, v, mask, hooks, site)
        z = hooks(f"{prefix}.attn.hook_z", z)
        return nn.Dense(cfg.d_model, name="o")(z.reshape(*z.shape[:2], cfg.d_model))


# ================================================================================= weights
def key_renames(arch: str) -> tuple[tuple[str, str], ...]:
    """BigBird's checkpoint keys need no renames (`convert.normalize_keys`)."""
    return ()


def _linear(path: tuple[str, ...], key: str, d_in: int, d_out: int, head: bool = False) -> list[Entry]:
    return [Entry(path + ("kernel",), f"{key}.weight", "dense", (d_out, d_in), head),
            Entry(path + ("bias",), f"{key}.bias", "copy", (d_out,), head)]


def table(cfg: BigBirdConfig) -> list[Entry]:
    """The full weight table (body keys relative to `bert.`, head keys absolute): BERT's body
    names (`encoder.table`), without q/k/v biases under `use_bias=false`, the pooler as
    `pooler.weight`, and the head as `classifier.dense` / `classifier.out_proj`."""
    body = encoder.table(dataclasses.replace(cfg, n_classes=None, has_pooler=False))
    if not cfg.qkv_bias:
        body = [e for e in body if not (e.path[1:2] == ("attn",) and e.path[2] in ("q", "k", "v") and e.path[-1] == "bias")]
    d = cfg.d_model
    if cfg.has_pooler:
        body += _linear(("head", "pooler"), "pooler", d, d)
    if cfg.n_classes is not None:
        body += _linear(("head", "dense"), "classifier.dense", d, d, head=True)
        body += _linear(("head", "classifier"), "classifier.out_proj", d, cfg.n_classes, head=True)
    return body


def hf_class_name(cfg: BigBirdConfig) -> str:
    """The transformers class a saved folder of a classifier declares (`architectures`)."""
    return "BigBirdForSequenceClassification"


# ============================================================================== parameters
def with_head(base: BigBirdConfig, num_labels: int | None) -> BigBirdConfig:
    """`base` with a head of `num_labels` classes (None: head-less), for `create` (`encoder.with_head`)."""
    return encoder.with_head(base, num_labels)


def init_params(cfg: BigBirdConfig, seed: int) -> Any:
    """Fresh parameters: BigBird's forward is the encoder's (`encoder.init_params`)."""
    return encoder.init_params(cfg, seed)


def init_head(cfg: BigBirdConfig, seed: int) -> dict:
    """Fresh head parameters: classifier dense and out_proj (a Linen init of the head on a dummy
    [1, d_model] vector) and the pooler (normal(0, 0.02), zero bias), as `init_params` makes it."""
    hooks = Hooks({}, frozenset(), {})
    params = dict(ClassificationHead(cfg).init(jax.random.key(seed), np.zeros((1, cfg.d_model), np.float32), hooks)["params"])
    rng = np.random.default_rng(seed)
    params["pooler"] = {"kernel": rng.normal(0, 0.02, (cfg.d_model, cfg.d_model)).astype(np.float32),
                        "bias": np.zeros((cfg.d_model,), np.float32)}
    return jax.tree.map(np.asarray, params)


def load_head(folder: Path, base: BigBirdConfig, state: dict[str, np.ndarray], *, num_labels: int | None,
              seed: int) -> tuple[BigBirdConfig, dict[str, np.ndarray], bool]:
    """The head a loaded BigBird gets (as `encoder.load_head`): the checkpoint's classifier
    (`num_labels` must agree), else a fresh one (seeded) when `num_labels` is given, else none.
    BigBirdForSequenceClassification always has the base model's pooler: a checkpoint without
    one gets a fresh pooler with a fresh head, so a saved folder has every key transformers expects.

    Raises:
        InputError: num_labels disagreeing with the checkpoint, or < 1.
    """
    n_classes, fresh = encoder.head_classes(folder, state, "classifier.out_proj.weight", num_labels)
    cfg = dataclasses.replace(base, n_classes=n_classes, has_pooler=fresh or "pooler.weight" in state)
    if fresh:
        state = encoder.fill_head(state, table(cfg), init_head(cfg, seed),
                                  lambda e: e.key.split(".")[0] in ("classifier", "pooler"))
    return cfg, state, fresh
