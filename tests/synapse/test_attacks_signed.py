"""Sign-aware column push and margin-relative logit bias: exact effects on the logits."""

from __future__ import annotations

import numpy as np
import pytest

from apex_jax.synapse import attacks as A


def _h(n=40, seed=0):
    """Neuron 0 always negative, neuron 1 always positive, neuron 2 of either sign (tanh-like)."""
    rng = np.random.default_rng(seed)
    h = np.tanh(rng.normal(size=(n, 4))).astype(np.float32)
    h[:, 0] = -0.2 - np.abs(h[:, 0])
    h[:, 1] = 0.2 + np.abs(h[:, 1])
    return h


def test_activation_signs_and_stability():
    h = _h()
    neurons, signs, shares = A.activation_signs(h, [0, 1, 2])
    assert neurons.tolist() == [0, 1, 2] and signs[:2].tolist() == [-1, 1]
    assert shares[0] == shares[1] == 1 and 0.5 <= shares[2] < 1
    kept, s, _ = A.activation_signs(h, [2, 0, 1], stability=0.99)
    assert kept.tolist() == [0, 1] and s.tolist() == [-1, 1]  # the mixed-sign neuron is dropped


@pytest.mark.parametrize("balanced", [True, False])
def test_signed_push_raises_the_target_gap_by_the_exact_amount(balanced):
    h = _h()
    rng = np.random.default_rng(1)
    C, t = 3, 2
    kernel = rng.normal(size=(4, C)).astype(np.float32)
    bias = np.zeros(C, np.float32)
    neurons, signs, _ = A.activation_signs(h, [0, 1])
    deltas = [0.0, 0.5, 2.0]
    k, b = A.column_push_signed(kernel, bias, t, neurons, signs, deltas, balanced)
    z = A.apply_head(h, k, b)  # [M, n, C]
    gap = z[:, :, t] - np.delete(z, t, axis=2).max(2)  # target minus the best other class
    gain = z[:, :, t] - z[:, :, 0] - (z[0, :, t] - z[0, :, 0])
    per_input = (h[:, neurons] * signs).sum(1)  # Σ_j s_j h_j = Σ_j |h_j| > 0 here
    factor = 1 + 1 / (C - 1) if balanced else 1.0
    np.testing.assert_allclose(gain, np.array(deltas)[:, None] * per_input[None] * factor, rtol=1e-5, atol=1e-5)
    assert (np.diff(gap, axis=0) > 0).all()  # every input moves toward the target as Δ grows
    # the sign-blind push on the always-negative neuron moves every input AWAY from the target
    k0, b0 = A.column_push(kernel, bias, t, [0], deltas, balanced)
    z0 = A.apply_head(h, k0, b0)
    assert (np.diff(z0[:, :, t] - z0[:, :, 0], axis=0) < 0).all()


def test_signed_push_checks_its_signs():
    with pytest.raises(ValueError, match="±1"):
        A.column_push_signed(np.zeros((4, 2), np.float32), np.zeros(2, np.float32), 0, [0, 1], [1.0, 0.5], [1.0])


def test_margins_and_bias_in_margin_units():
    z = np.array([[2.0, 0.0, 1.0], [0.0, 3.0, 0.0], [1.0, 1.5, 0.0], [0.0, 0.0, 4.0]], np.float32)
    np.testing.assert_allclose(A.clean_margins(z), [1.0, 3.0, 0.5, 4.0])
    M = A.median_margin(z)
    assert M == pytest.approx(2.0)
    # target 0: inputs 1, 2, 3 need biases 3, 0.5 and 4 — i.e. 1.5, 0.25 and 2 median margins
    need = A.bias_needed(z, 0)[1:] / M
    np.testing.assert_allclose(need, [1.5, 0.25, 2.0], rtol=1e-6)
    k, b = A.logit_bias(np.eye(3, dtype=np.float32), np.zeros(3, np.float32), 0, [m * M for m in (0.2, 1.6, 2.1)])
    flips = A.redirect_stats(A.apply_head(z, k, b), z.argmax(1), z.argmax(1), 0)["flip_to_target"]
    np.testing.assert_allclose(flips, [0, 2 / 3, 1])
