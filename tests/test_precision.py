"""Precision as a setting (DESIGN.md, principle 8): float32 by default and untouched;
bfloat16 parameters and activations with float32 softmax, norm statistics and logits; the bound
bf16 holds against f32 on MiniLM."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tests.helpers import minilm_folder

import apex_jax
from apex_jax.errors import InputError
from apex_jax.interventions import Noise
from apex_jax.models.loading import with_dtype

BERT = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4,
        "intermediate_size": 64, "vocab_size": 100, "max_position_embeddings": 64}
LLAMA = {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "intermediate_size": 64, "vocab_size": 100, "max_position_embeddings": 64}


def _batch():
    rng = np.random.default_rng(0)
    mask = np.ones((3, 9), np.int32)
    mask[1, 6:] = 0
    return {"input_ids": rng.integers(1, 100, (3, 9)).astype(np.int32), "attention_mask": mask}


def test_float32_is_the_default_and_untouched():
    m = apex_jax.create(BERT, num_labels=2)
    assert m.config.dtype == "float32"
    assert all(a.dtype == np.float32 for a in jax.tree.leaves(m.params))
    assert with_dtype(m, "float32") is m
    with pytest.raises(InputError, match="dtype"):
        apex_jax.create(BERT, num_labels=2, dtype="float16")


@pytest.mark.parametrize("hf", [BERT, LLAMA], ids=["bert", "llama"])
def test_bfloat16_params_activations_and_float32_logits(hf):
    m = apex_jax.create(hf, num_labels=2)
    mb = apex_jax.create(hf, num_labels=2, dtype="bfloat16")
    assert mb.config.dtype == "bfloat16"
    assert all(a.dtype == jnp.bfloat16 for a in jax.tree.leaves(mb.params))
    b = _batch()
    sites = ("blocks.1.hook_resid_post", "blocks.0.attn.hook_pattern")
    pert = {"blocks.0.hook_resid_post": Noise(jax.random.key(0), jnp.float32(0.1))}
    out = mb.forward(b, pert, capture=sites)
    ref = m.forward(b, pert, capture=sites)
    assert out.logits.dtype == jnp.float32 and out.captured[sites[0]].dtype == jnp.bfloat16
    assert np.isfinite(np.asarray(out.logits)).all()
    assert np.abs(np.asarray(out.logits) - np.asarray(ref.logits)).max() < 0.05
    # the engine reads the precision from the (static) config: a sweep runs in bf16
    res = apex_jax.run_apex(mb, mb.params, b, [0, 1, 2], (0.1, 1.0), draws=4, progress=False)
    assert np.asarray(res.sweep.counts).sum() == 3 * 2 * 4


def test_bfloat16_save_writes_float32_that_reloads(tmp_path):
    mb = apex_jax.create(BERT, num_labels=2, dtype="bfloat16")
    back = apex_jax.load(mb.save(tmp_path / "m"), dtype="bfloat16")
    for a, b in zip(jax.tree.leaves(mb.params), jax.tree.leaves(back.params)):
        assert np.array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def test_bfloat16_bound_on_minilm():
    """MiniLM, a classifier with real margins (the fresh head scaled x25: logits of order 1), 32
    vader-movies test sentences (the helper sentences if the data set is not cached). Measured
    (benchmarks/RESULTS.md): agreement 1.0, max |Δ logit| ≈ 1-2 % of max |logit|. Bound: max |Δ logit| <=
    5 % of max |logit|, [CLS] vector relative error <= 5 %, and every prediction agrees whose
    f32 margin exceeds 2 max |Δ logit| (so only near-ties may flip), at most 1 in 16 flips."""
    folder = minilm_folder()
    m = apex_jax.load(folder, num_labels=2)
    params = dict(m.params)
    clf = params["head"]["classifier"]
    params["head"] = dict(params["head"], classifier={"kernel": clf["kernel"] * 25, "bias": clf["bias"]})
    m = m.replace(params)
    mb = with_dtype(m, "bfloat16")
    try:
        from apex_jax import data

        texts = list(data.get_split("vader-movies", "test", n=32).inputs)
    except Exception:
        from tests.helpers import SENTENCES

        texts = list(SENTENCES)
    batch = m.encode(texts, max_length=64)
    o32 = m.forward(batch, capture=("head.hook_cls",))
    o16 = mb.forward(batch, capture=("head.hook_cls",))
    a, b = np.asarray(o32.logits), np.asarray(o16.logits)
    d = np.abs(a - b).max()
    c32, c16 = (np.asarray(o.captured["head.hook_cls"], np.float32) for o in (o32, o16))
    rel = (np.linalg.norm(c32 - c16, axis=1) / np.linalg.norm(c32, axis=1)).max()
    margin = np.abs(a[:, 1] - a[:, 0])
    agree = a.argmax(1) == b.argmax(1)
    print(f"bf16 vs f32 on {len(a)} sentences: agreement {agree.mean():.3f}, max|dlogit| {d:.4f} "
          f"(max|logit| {np.abs(a).max():.3f}), cls rel err {rel:.4f}")
    assert d <= 0.05 * np.abs(a).max()
    assert rel <= 0.05
    assert agree[margin > 2 * d].all()
    assert (~agree).sum() <= len(a) / 16


def test_bfloat16_bound_on_a_trained_vit():
    """A `vit-micro` (d_model 32, 2 layers) trained from scratch on digits for 10 epochs (real
    margins, unlike fresh weights), 64 test images, bf16 against f32: the MiniLM bound (max
    |Δ logit| <= 5 % of max |logit|, only near-ties may flip, at most 1 in 16) and the APEX
    consistency curves at K = 256 within 2 Monte-Carlo standard errors of their difference on
    >= 95 % of the (image, σ) points. Measured at full size (vit-tiny, benchmarks/bf16_effect.py
    --model vit): agreement 64/64, max |Δ logit| 2.7 % of max |logit|, 99.8 % of points within."""
    from apex_jax import data
    from apex_jax.models.presets import vit_hf_config
    from apex_jax.training import TrainConfig, train

    tr, va = data.get_split("digits", "train"), data.get_split("digits", "val")
    te = data.get_split("digits", "test", n=64)
    m = apex_jax.create(vit_hf_config("vit-micro", 1, 8), num_labels=10)
    m, _ = train(m, tr, va, TrainConfig(learning_rate=3e-3, max_epochs=10, patience=10, batch_size=64),
                 log=lambda s: None, progress=False)
    mb = with_dtype(m, "bfloat16")
    batch = m.encode(te.inputs)
    a, b = np.asarray(m.forward(batch).logits), np.asarray(mb.forward(batch).logits)
    acc = (a.argmax(1) == te.labels).mean()
    assert acc > 0.5  # trained: chance is 0.1
    d = np.abs(a - b).max()
    top2 = np.sort(a, 1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    agree = a.argmax(1) == b.argmax(1)
    assert d <= 0.05 * np.abs(a).max()
    assert agree[margin > 2 * d].all()
    assert (~agree).sum() <= len(a) / 16
    k, sig, ids = 256, (0.05, 0.3, 1.0, 3.0), list(range(len(a)))
    clean = a.argmax(1)

    def keep(model):  # share of draws keeping the f32 clean prediction [n, G]
        counts = np.asarray(apex_jax.run_apex(model, model.params, batch, ids, sig, draws=k,
                                              progress=False).sweep.counts)
        return counts[np.arange(len(a)), :, clean] / k

    k32, k16 = keep(m), keep(mb)
    se = np.sqrt(np.maximum(k32 * (1 - k32), 1 / k) / k)
    within = np.abs(k32 - k16) <= 2 * np.sqrt(2) * se
    print(f"vit-micro (accuracy {acc:.3f}) bf16 vs f32: agreement {agree.mean():.3f}, max|dlogit| {d:.4f} "
          f"(max|logit| {np.abs(a).max():.3f}), APEX points within 2 se {within.mean():.3f}")
    assert within.mean() >= 0.95
