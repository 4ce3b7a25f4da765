"""The decoder classifier's fine-tuning recipe (`reproduce.lm_classifier`): the lower blocks run
once into a per-input cache; batches re-collated from it give the full model's logits exactly, so
training the top blocks on the cache trains the real model. And the fixed class subset."""

from __future__ import annotations

import numpy as np
import pytest

import apex_jax
from apex_jax.data import Dataset
from reproduce import lm_classifier, minilm  # scripts/reproduce/ (pyproject: pytest pythonpath)

WORDS = "my card has not arrived yet where is it can i top up by cheque the transfer was cancelled please".split()
TEXTS = ["my card has not arrived yet", "where is it", "can i top up by cheque",
         "the transfer was cancelled please where is my card can i top up by cheque the transfer was not cancelled "
         "yet where is it",  # > 16 tokens: a second length bucket
         "please", "my transfer"]


def _tiny_llama(n_layers: int = 3):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "<|endoftext|>": 2, **{w: i + 3 for i, w in enumerate(dict.fromkeys(WORDS))}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="<unk>")
    hf = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": len(vocab), "hidden_size": 32,
          "intermediate_size": 37, "num_hidden_layers": n_layers, "num_attention_heads": 4, "num_key_value_heads": 2,
          "head_dim": 8, "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "hidden_act": "silu",
          "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"}, "tie_word_embeddings": True,
          "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}
    return apex_jax.create(hf, num_labels=3, tokenizer=tok, seed=1)


def test_cached_lower_blocks_give_the_full_models_logits():
    model = _tiny_llama()
    data = Dataset("tiny", "text", TEXTS, np.arange(len(TEXTS)) % 3, ("a", "b", "c"))
    start = 2
    cache = lm_classifier.cached_prefix(model, model.params, data, start, max_length=32, batch_size=4)
    assert [len(m) for _, m in cache] == [len(t.split()) for t in TEXTS]  # real tokens only
    for rows in (np.array([3, 0, 4]), np.arange(len(TEXTS))):  # out of order and padded; every input
        prefix, lab, w = lm_classifier.collate(cache, data.labels, rows, 8, start)
        assert prefix.hidden.shape[0] == 8 and w.sum() == len(rows)
        np.testing.assert_array_equal(lab[:len(rows)], data.labels[rows])
        logits = np.asarray(model.apply(model.params, prefix).logits)
        want = np.asarray(model.apply(model.params, model.encode([TEXTS[i] for i in rows])).logits)
        np.testing.assert_allclose(logits[:len(rows)], want, atol=1e-5)
        assert np.isfinite(logits).all()  # filler rows too
    # the trained groups: the top blocks, the final norm and the head
    assert lm_classifier.trainable_names(model, 1) == ("blocks_2", "ln_final", "head")
    with pytest.raises(ValueError, match=r"train_blocks must be in \[1, 3\]"):
        lm_classifier.trainable_names(model, 4)


def test_class_subset_keeps_the_first_label_ids():
    ds = Dataset("d", "text", [f"t{i}" for i in range(12)], np.array([0, 3, 1, 2, 3, 0, 1, 2, 0, 3, 2, 1]),
                 ("w", "x", "y", "z"), np.arange(100, 112))
    sub = lm_classifier.class_subset(ds, 2)
    assert sub.label_names == ("w", "x") and sub.n_classes == 2
    np.testing.assert_array_equal(sub.ids, [100, 102, 105, 106, 108, 111])
    np.testing.assert_array_equal(sub.labels, [0, 1, 0, 1, 0, 1])
    assert lm_classifier.class_subset(ds, 4) is ds
    with pytest.raises(ValueError, match=r"n_classes must be in \[2, 4\]"):
        lm_classifier.class_subset(ds, 5)


def test_config_key_names_the_recipe():
    a, b = lm_classifier.LmClassifierConfig(), lm_classifier.LmClassifierConfig(train_blocks=2)
    assert a.key().startswith("smollm2-banking7710-") and a.key() != b.key()
    assert a.key() == lm_classifier.LmClassifierConfig().key()


def test_a_cached_fine_tune_runs_once(tmp_path):
    calls = []

    def fine_tune(folder):
        calls.append(folder)
        (folder / "model").mkdir()
        return {"test_accuracy": 0.5}

    first = minilm.cached(tmp_path / "k", fine_tune)
    assert first == (tmp_path / "k" / "model", {"test_accuracy": 0.5}) and len(calls) == 1
    assert minilm.cached(tmp_path / "k", fine_tune) == first and len(calls) == 1  # loaded, not retrained
    assert not (tmp_path / "k" / "metrics.tmp").exists()
