"""A tiny BERT with the real MiniLM tokenizer and a trivially learnable text task."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

POSITIVE = ("great", "wonderful", "superb", "lovely", "brilliant")
NEGATIVE = ("awful", "terrible", "dreadful", "boring", "horrible")
FILLER = ("the film was", "honestly a", "what a", "this is a", "i found it", "the cast is")


def tiny_bert_folder(folder: Path, tokenizer_folder: Path, seed: int = 0, vocab_size: int = 30522) -> Path:
    """An HF BertForSequenceClassification folder (d_model 16, 2 layers) with MiniLM's tokenizer
    (a `vocab_size` below the tokenizer's makes a model the tokenizer does not fit)."""
    import torch
    import transformers as T

    torch.manual_seed(seed)
    cfg = T.BertConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=32, max_position_embeddings=64, num_labels=2)
    T.BertForSequenceClassification(cfg).save_pretrained(str(folder))
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (tokenizer_folder / f).is_file():
            shutil.copy(tokenizer_folder / f, folder / f)
    return folder


def sentiment_csv(path: Path, n: int, seed: int = 0) -> Path:
    """CSV of n sentences whose label is given by one sentiment word."""
    rng = np.random.default_rng(seed)
    rows = ["text,label"]
    for i in range(n):
        label = i % 2
        word = rng.choice(POSITIVE if label else NEGATIVE)
        rows.append(f"{rng.choice(FILLER)} {word} one,{label}")
    path.write_text("\n".join(rows) + "\n")
    return path
