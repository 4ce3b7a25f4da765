"""The engine's continuous scores equal a direct computation: the reference class's logit margin
and KL(clean ‖ perturbed), exact at σ = 0, with labels or clean predictions as the reference."""

from __future__ import annotations

import numpy as np
import pytest

from apex_jax.engine import run_sweep
from apex_jax.errors import InputError
from apex_jax.interventions import Add, Noise

LOGITS = "head.hook_logits"
BLOCKS = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]


def _shift_logits(point, keys):  # module-level: one function object, one compile key
    return {LOGITS: Add(point)}  # point: [C] added to every input's logits


def _noise(point, keys):
    return {s: Noise(keys, point, relative=True) for s in BLOCKS}


def _direct(logits: np.ndarray, clean: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Margin and KL(softmax(clean) ‖ softmax(logits)) in float64, [n] each."""
    logits, clean = logits.astype(np.float64), clean.astype(np.float64)
    n = len(logits)
    other = logits.copy()
    other[np.arange(n), ref] = -np.inf
    margin = logits[np.arange(n), ref] - other.max(1)
    logp = clean - np.log(np.exp(clean).sum(1, keepdims=True))
    logq = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return margin, (np.exp(logp) * (logp - logq)).sum(1)


def test_margin_and_kl_equal_a_direct_computation(bert):
    """Known logit shifts (a perturbation at head.hook_logits): the engine's means equal the
    float64 formulas on the shifted clean logits, for clean-prediction and label references."""
    model, batch = bert.model, bert.inputs
    n, C = len(batch["input_ids"]), model.config.n_classes
    shifts = np.array([[0, 0, 0], [1.5, -0.5, 0.25], [-2, 3, 0.5], [4, 4, 4]], np.float32)
    kw = dict(sites=[LOGITS], draws=3, draws_per_step=2, progress=False)  # 2 draw blocks, one filler draw
    res = run_sweep(model, model.params, batch, np.arange(n), _shift_logits, shifts, **kw)
    clean = res.clean_logits
    np.testing.assert_allclose(clean, np.asarray(model.forward(batch).logits), atol=1e-5)
    assert res.margin_reference == "clean"
    np.testing.assert_array_equal(res.reference, clean.argmax(1))
    for g, shift in enumerate(shifts):
        margin, kl = _direct(clean + shift, clean, res.reference)
        np.testing.assert_allclose(res.mean_margin[:, g], margin, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(res.mean_kl[:, g], kl, rtol=1e-4, atol=1e-6)
    assert (res.kl_sum[:, 0] == 0).all()  # no shift: exactly 0
    np.testing.assert_array_equal(res.mean_margin[:, 0], res.clean_margin)
    assert (res.mean_kl[:, 1:3] > 0.05).all()
    np.testing.assert_allclose(res.mean_kl[:, 3], 0, atol=1e-6)  # a common shift leaves softmax alone
    np.testing.assert_allclose(res.mean_margin[:, 3], res.clean_margin, atol=1e-5)
    # labels as the reference: a wrong label's clean margin is negative, its KL unchanged
    labels = (clean.argmax(1) + np.array([0, 1, 2])[:n]) % C
    lab = run_sweep(model, model.params, batch, np.arange(n), _shift_logits, shifts, labels=labels, **kw)
    assert lab.margin_reference == "label"
    np.testing.assert_array_equal(lab.reference, labels)
    for g, shift in enumerate(shifts):
        margin, _ = _direct(clean + shift, clean, labels)
        np.testing.assert_allclose(lab.mean_margin[:, g], margin, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(lab.kl_sum, res.kl_sum)
    wrong = labels != clean.argmax(1)
    assert wrong.any() and (lab.clean_margin[wrong] < 0).all() and (lab.clean_margin[~wrong] > 0).all()


def test_sigma_zero_gives_zero_kl_and_the_clean_margin(bert):
    """Noise of σ = 0 at hidden sites is the identity: KL is 0 and every draw's margin the clean
    one, up to float32 rounding (the draws run batched [draws, inputs], the clean forward
    [inputs], and XLA may round the two differently: ~1e-7 in the logits); σ > 0 moves both."""
    model, batch = bert.model, bert.inputs
    n = len(batch["input_ids"])
    res = run_sweep(model, model.params, batch, np.arange(n), _noise, np.array([0.0, 0.5], np.float32),
                    sites=BLOCKS, draws=8, draws_per_step=4, seed=3, progress=False)
    assert (res.kl_sum[:, 0] >= 0).all() and (res.mean_kl[:, 0] < 1e-6).all()
    np.testing.assert_allclose(res.mean_margin[:, 0], res.clean_margin, rtol=1e-5, atol=1e-6)
    assert (res.mean_kl[:, 1] > 1e-4).all()
    assert (res.mean_margin[:, 1] != res.clean_margin).all()


def test_bad_labels_are_rejected(bert):
    model, batch = bert.model, bert.inputs
    n = len(batch["input_ids"])
    kw = dict(sites=[LOGITS], draws=1, progress=False)
    with pytest.raises(InputError, match="outside the model's classes 0..2"):
        run_sweep(model, model.params, batch, np.arange(n), _shift_logits, np.zeros((1, 3), np.float32),
                  labels=[0, 1, 3][:n], **kw)
    with pytest.raises(InputError, match="one per input"):
        run_sweep(model, model.params, batch, np.arange(n), _shift_logits, np.zeros((1, 3), np.float32),
                  labels=[0] * (n + 1), **kw)
