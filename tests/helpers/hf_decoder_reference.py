"""Small random Hugging Face PyTorch decoders saved as HF folders: the decoder parity reference.

Families (each built as `*ForSequenceClassification` and `*ForCausalLM`):
  gpt2        learned positions, LayerNorm, gelu_new, Conv1D, tied LM head
  llama       grouped-query attention (4 query heads on 2 kv heads), llama3 rope scaling, untied
  llama_bias  attention_bias + mlp_bias, linear rope scaling, explicit head_dim, tied
  qwen2       q/k/v biases, one kv head, rope_theta 1e6, tied
  mistral     sliding window 4 < sequence length 9
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.helpers.hf_parity import full_forward, random_model

FAMILIES = ("gpt2", "llama", "llama_bias", "qwen2", "mistral")
VOCAB, PAD = 97, 0


def hf_config(family: str, n_labels: int = 3):
    import transformers as T

    common = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=64, pad_token_id=PAD,
                  bos_token_id=1, eos_token_id=2, num_labels=n_labels)
    if family == "gpt2":
        return T.GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=32, n_layer=2, n_head=4, n_inner=37,
                            pad_token_id=PAD, bos_token_id=1, eos_token_id=2, num_labels=n_labels)
    if family == "llama":
        rope = {"rope_type": "llama3", "rope_theta": 500.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8}
        return T.LlamaConfig(**common, num_key_value_heads=2, rope_parameters=rope)
    if family == "llama_bias":
        rope = {"rope_type": "linear", "rope_theta": 100.0, "factor": 3.0}
        return T.LlamaConfig(**{**common, "hidden_size": 24}, head_dim=10, num_key_value_heads=4,
                             attention_bias=True, mlp_bias=True, tie_word_embeddings=True,
                             rope_parameters=rope)
    if family == "qwen2":
        return T.Qwen2Config(**common, num_key_value_heads=1, tie_word_embeddings=True,
                             rope_parameters={"rope_type": "default", "rope_theta": 1e6})
    if family == "mistral":
        return T.MistralConfig(**common, num_key_value_heads=2, sliding_window=4)
    raise ValueError(family)


def make_model(family: str, head: str, folder: Path, seed: int = 0):
    """Random HF decoder with `head` "seq" or "lm" (weights moved off their init so norms matter)."""
    import transformers as T

    cls = T.AutoModelForSequenceClassification if head == "seq" else T.AutoModelForCausalLM
    return random_model(lambda: cls.from_config(hf_config(family), attn_implementation="eager"), folder, seed)


def make_inputs(batch: int = 3, pos: int = 9, seed: int = 0, left: bool = False) -> dict[str, np.ndarray]:
    """A padded batch: example i has pos - 2*i real tokens (ids never the pad id), padded on the
    right (or on the left)."""
    rng = np.random.default_rng(seed)
    ids = np.full((batch, pos), PAD, np.int32)
    mask = np.zeros((batch, pos), np.int32)
    for i in range(batch):
        n = max(pos - 2 * i, 2)
        sl = slice(pos - n, pos) if left else slice(0, n)
        ids[i, sl] = rng.integers(3, VOCAB, size=n)
        mask[i, sl] = 1
    return {"input_ids": ids, "attention_mask": mask}


def to_left(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same examples, padded on the left instead of the right."""
    ids, mask = inputs["input_ids"].copy(), inputs["attention_mask"].copy()
    for i in range(ids.shape[0]):
        n = int(mask[i].sum())
        ids[i], mask[i] = np.roll(ids[i], ids.shape[1] - n), np.roll(mask[i], ids.shape[1] - n)
    return {"input_ids": ids, "attention_mask": mask}


torch_forward = full_forward  # the HF forward with every hidden state and attention pattern
