"""Small random Hugging Face PyTorch models saved as HF folders: the parity reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.helpers.hf_parity import full_forward, random_model

ARCHS = ("bert", "roberta", "distilbert", "vit")


def hf_config(arch: str, *, n_heads: int = 2, d_head: int = 5, n_layers: int = 2, n_labels: int = 3,
              d_mlp: int = 23, act: str = "gelu"):
    """A tiny config; odd sizes (d_model = n_heads * d_head) shake out layout bugs."""
    import transformers as T

    d = n_heads * d_head
    if arch == "bert":
        return T.BertConfig(vocab_size=97, hidden_size=d, num_hidden_layers=n_layers,
                            num_attention_heads=n_heads, intermediate_size=d_mlp, hidden_act=act,
                            max_position_embeddings=40, type_vocab_size=2, num_labels=n_labels)
    if arch == "roberta":
        return T.RobertaConfig(vocab_size=97, hidden_size=d, num_hidden_layers=n_layers,
                               num_attention_heads=n_heads, intermediate_size=d_mlp, hidden_act=act,
                               max_position_embeddings=42, type_vocab_size=1, pad_token_id=1,
                               num_labels=n_labels)
    if arch == "distilbert":
        return T.DistilBertConfig(vocab_size=97, dim=d, n_layers=n_layers, n_heads=n_heads,
                                  hidden_dim=d_mlp, activation=act, max_position_embeddings=40,
                                  num_labels=n_labels)
    if arch == "vit":
        return T.ViTConfig(hidden_size=d, num_hidden_layers=n_layers, num_attention_heads=n_heads,
                           intermediate_size=d_mlp, hidden_act=act, image_size=12, patch_size=4,
                           num_channels=3, num_labels=n_labels)
    raise ValueError(arch)


def make_model(arch: str, folder: Path, seed: int = 0, **kw):
    """Random HF classifier (weights perturbed off their init so LayerNorms etc. matter)."""
    import transformers as T

    cls = T.AutoModelForImageClassification if arch == "vit" else T.AutoModelForSequenceClassification
    return random_model(lambda: cls.from_config(hf_config(arch, **kw), attn_implementation="eager"), folder, seed)


def make_inputs(arch: str, batch: int = 3, pos: int = 9, seed: int = 0) -> dict[str, np.ndarray]:
    """A padded batch: example i has pos - 2*i real tokens."""
    rng = np.random.default_rng(seed)
    if arch == "vit":
        return {"pixel_values": rng.normal(size=(batch, 3, 12, 12)).astype(np.float32)}
    pad = 1 if arch == "roberta" else 0
    ids = rng.integers(3, 97, size=(batch, pos)).astype(np.int32)
    mask = np.ones((batch, pos), np.int32)
    for i in range(batch):
        n = max(pos - 2 * i, 2)
        ids[i, n:] = pad
        mask[i, n:] = 0
    out = {"input_ids": ids, "attention_mask": mask}
    if arch == "bert":
        out["token_type_ids"] = (np.arange(pos)[None] >= pos // 2).astype(np.int32).repeat(batch, 0)
    return out


torch_forward = full_forward  # the HF forward with every hidden state and attention pattern
