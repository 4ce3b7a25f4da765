"""Architecture description read from a Hugging Face `config.json`.

One frozen dataclass covers all supported encoders: BERT-style post-LN text encoders (BERT,
MiniLM, RoBERTa, DistilBERT) and the pre-LN ViT. The HF config dict is kept verbatim so that
`Model.save` writes back what it read.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from apex_jax.models.decoder_config import DECODERS, DecoderConfig, decoder_from_hf

# model_type -> our architecture family
ARCHITECTURES = {
    "bert": "bert",
    "roberta": "roberta",
    "xlm-roberta": "roberta",
    "camembert": "roberta",
    "distilbert": "distilbert",
    "vit": "vit",
}
DTYPES = ("float32", "bfloat16")


def compute_dtype(name: str):
    """The JAX dtype of parameters and activations for a precision setting."""
    import jax.numpy as jnp

    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "quick_gelu", "relu", "silu", "swish")


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
    # precision (DESIGN principle 8): "float32" | "bfloat16" parameters and activations; softmax,
    # norm statistics and the logits stay float32 either way
    dtype: str = "float32"

    is_decoder = False  # decoders have their own config (models.decoder_config.DecoderConfig)

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def compute_dtype(self):
        return compute_dtype(self.dtype)

    @property
    def is_text(self) -> bool:
        return self.arch != "vit"

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def _get(cfg: Mapping[str, Any], *names, default=None):
    for n in names:
        if n in cfg and cfg[n] is not None:
            return cfg[n]
    return default


def from_hf(hf: Mapping[str, Any]) -> ArchConfig | DecoderConfig:
    """Builds an ArchConfig (encoders) or DecoderConfig (decoders) from an HF config dict (head
    fields are filled by the loader)."""
    model_type = hf.get("model_type")
    if model_type in DECODERS:
        return decoder_from_hf(hf)
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"unsupported model_type {model_type!r}; supported: "
            f"{', '.join(sorted({**ARCHITECTURES, **DECODERS}))}."
        )
    arch = ARCHITECTURES[model_type]
    if arch == "distilbert":
        d_model, n_heads = hf["dim"], hf["n_heads"]
        common = dict(
            n_layers=hf["n_layers"], d_model=d_model, n_heads=n_heads, d_mlp=hf["hidden_dim"],
            act=hf.get("activation", "gelu"), ln_eps=1e-12, norm="post",
        )
    else:
        d_model, n_heads = hf["hidden_size"], hf["num_attention_heads"]
        common = dict(
            n_layers=hf["num_hidden_layers"], d_model=d_model, n_heads=n_heads,
            d_mlp=hf["intermediate_size"], act=hf.get("hidden_act", "gelu"),
            ln_eps=float(hf.get("layer_norm_eps", 1e-12)), norm="pre" if arch == "vit" else "post",
        )
    if d_model % n_heads:
        raise ValueError(f"hidden size {d_model} is not divisible by the number of heads {n_heads}.")
    if common["act"] not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {common['act']!r}; supported: {', '.join(ACTIVATIONS)}.")
    if arch == "vit":
        return ArchConfig(
            arch=arch, **common, qkv_bias=bool(hf.get("qkv_bias", True)),
            image_size=_as_int(hf["image_size"]), patch_size=_as_int(hf["patch_size"]),
            num_channels=hf.get("num_channels", 3),
        )
    if arch == "roberta" and hf.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("only absolute position embeddings are supported.")
    if arch == "bert" and hf.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("only absolute position embeddings are supported.")
    return ArchConfig(
        arch=arch, **common, vocab_size=hf["vocab_size"],
        max_positions=hf["max_position_embeddings"],
        type_vocab_size=0 if arch == "distilbert" else hf.get("type_vocab_size", 2),
        pad_token_id=_get(hf, "pad_token_id", default=1 if arch == "roberta" else 0),
    )


def _as_int(v) -> int:
    if isinstance(v, (list, tuple)):
        if len(set(v)) != 1:
            raise ValueError(f"non-square sizes {v} are not supported.")
        return int(v[0])
    return int(v)
