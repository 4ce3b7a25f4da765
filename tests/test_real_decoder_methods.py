"""APEX and SYNAPSE on a real pretrained decoder: SmolLM2-135M-Instruct (the `smollm2` asset)
read as a 2-class sentiment classifier through label tokens. Skipped when the asset is absent.

Kept cheap (one length bucket, two noise sites, 4 draws): what runs on the tiny random decoders
of test_decoder_methods.py must hold on the real model too, with its massive activations
(`median-abs` noise unit) and a 49k vocabulary read through two label columns:
  (a) APEX: σ = 0 keeps every clean prediction and margin, the sweep's clean predictions are the
      model's own, a σ far above the site's typical activation moves predictions and KL;
  (b) SYNAPSE: the engine's silencing at the classifier token = an explicit per-example Scale(0)
      at each input's last real token (the probes' features are read there too; that reading is
      tested on the tiny decoders, and end to end by scripts/smollm2_end_to_end.py).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from tests.helpers import smollm2_folder

import apex_jax
from apex_jax.interventions import Scale
from apex_jax.models import verbalizer
from apex_jax.synapse import silencing

PROMPT = "Review: {text}\nIs this review positive or negative? Answer:"
TEXTS = ["A wonderful, moving film with superb acting.", "Dull, slow and far too long; I walked out.",
         "I loved every minute of it.", "The worst movie I have seen this year."]
SITES = ("blocks.10.hook_resid_post", "blocks.20.hook_resid_post")
PAD = 32  # every input in one length bucket: one compiled sweep kernel


@pytest.fixture(scope="module")
def clf():
    return verbalizer(apex_jax.load(smollm2_folder()), [" negative", " positive"], prompt=PROMPT)


@pytest.fixture(scope="module")
def batch(clf):
    batch = clf.encode(TEXTS)
    lengths = batch["attention_mask"].sum(1)
    assert len(set(lengths.tolist())) > 1 and lengths.max() <= PAD  # padded, one bucket
    return batch


@pytest.fixture(scope="module")
def explicit(clf, batch):
    """mask [d_model] -> logits with those neurons of SITES[0] zeroed at each input's classifier
    token (an explicit per-example Scale(0)). One compiled forward serves every mask."""
    cls = jnp.asarray(clf.classifier_positions(batch))[:, None]

    def run(mask: np.ndarray) -> np.ndarray:
        iv = Scale(jnp.zeros(()), positions=cls, neurons=jnp.asarray(mask))
        return np.asarray(clf.forward(batch, {SITES[0]: iv}).logits)

    return run


@pytest.fixture(scope="module")
def clean(clf, explicit):
    """The clean logits: no neuron selected leaves the site as it is (`where(mask, 0, x)` = x)."""
    return explicit(np.zeros(clf.config.d_model, np.float32))


def test_apex_on_smollm2(clf, batch, clean):
    np.testing.assert_array_equal(clean.argmax(1), [1, 0, 1, 0])  # the LM reads the sentiment
    res = apex_jax.run_apex(clf, batch, [0.0, 100.0], sites=list(SITES), draws=4, noise_unit="median-abs",
                            progress=False, pad_multiple=PAD)
    np.testing.assert_array_equal(res.sweep.clean, clean.argmax(1))
    np.testing.assert_array_equal(res.consistency[:, 0], 1.0)
    margin = np.sort(clean, 1)
    margin = margin[:, -1] - margin[:, -2]
    np.testing.assert_allclose(res.sweep.clean_margin, margin, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(res.sweep.mean_margin[:, 0], margin, rtol=1e-4, atol=1e-4)
    assert np.abs(res.sweep.mean_kl[:, 0]).max() < 1e-5
    # the unit is the site's median |activation|, far below its massive dimensions
    assert all(0 < float(np.max(s)) < 100 for s in res.noise_scale.values()), res.noise_scale
    # σ = 100 median-abs units on two block outputs: the draws no longer agree with the clean model
    assert res.sweep.mean_kl[:, 1].min() > 1e-3
    assert np.abs(res.sweep.mean_margin[:, 1] - margin).max() > 0.1


def test_synapse_silencing_on_smollm2(clf, batch, clean, explicit):
    """SYNAPSE's silencing sweep at the classifier token (engine: prefix cached, masks as grid
    points) = an explicit per-example Scale(0) at each input's last real token."""
    d = clf.config.d_model
    masks = np.zeros((3, d), np.float32)
    masks[1, np.random.default_rng(0).choice(d, round(0.2 * d), replace=False)] = 1.0  # a random 20%
    masks[2] = 1.0  # the whole classifier-token vector
    res = silencing.mask_sweep(clf, clf.params, batch, np.arange(len(TEXTS)), SITES[0], masks, progress=False,
                               pad_multiple=PAD)
    preds = silencing.predictions(res)
    np.testing.assert_array_equal(res.clean, clean.argmax(1))
    np.testing.assert_array_equal(preds[:, 0], clean.argmax(1))
    for g, mask in enumerate(masks):
        logits = explicit(mask)
        np.testing.assert_array_equal(preds[:, g], logits.argmax(1), err_msg=f"mask {g}")
        if g:
            assert np.abs(logits - clean).max() > 1e-3  # the silencing reaches the output
    margin = np.sort(clean, 1)
    np.testing.assert_allclose(res.mean_margin[:, 0], margin[:, -1] - margin[:, -2], rtol=1e-4, atol=1e-4)
