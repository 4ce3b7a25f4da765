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


def _two_classes(n_a=30, n_b=70, seed=0):
    """A planted two-class head: neuron 0 is +1 (± noise) on class A's inputs (0) and −1 on
    class B's (1), neurons 1–3 are noise; the head reads neuron 0 only, so the clean prediction
    is the class. B is the majority (70%), so neuron 0's majority sign over all inputs is B's."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n_a, int), np.ones(n_b, int)]
    h = rng.normal(0, 0.3, size=(len(y), 4)).astype(np.float32)
    h[:, 0] = np.where(y == 0, 1.0, -1.0) * (1 + 0.2 * rng.random(len(y)))
    kernel = np.zeros((4, 2), np.float32)
    kernel[0] = [0.5, -0.5]
    return h, y, kernel, np.zeros(2, np.float32)


def test_push_signs_follow_the_inputs_to_move():
    """Toward each class the fixed signed push moves every other input by exactly
    Δ·|h_0|·(1 + 1/(C−1)) toward the target; the majority sign over all inputs (the old push)
    does so only toward the minority class and moves the majority target's inputs away."""
    h, y, kernel, bias = _two_classes()
    clean = A.apply_head(h, kernel, bias).argmax(1)
    np.testing.assert_array_equal(clean, y)
    deltas = [0.0, 0.5, 1.0, 4.0]
    _, majority, _ = A.activation_signs(h, [0])
    assert majority.tolist() == [-1.0]  # class B's sign
    for t in (0, 1):
        neurons, signs, shares, n_signed = A.push_signs(h, [0], clean, t)
        assert n_signed == (clean != t).sum() and shares.tolist() == [1.0]
        assert signs.tolist() == [1.0 if t == 1 else -1.0]  # the sign on the other class's inputs
        moved = clean != t
        for s, works in ((signs, True), (majority, t == 0)):  # the majority sign works toward A only
            k, b = A.column_push_signed(kernel, bias, t, neurons, s, deltas)
            z = A.apply_head(h, k, b)
            gap = z[:, :, t] - z[:, :, 1 - t]  # [M, n]
            gain = gap - gap[0]
            want = np.array(deltas)[:, None] * np.abs(h[:, 0])[None] * 2  # balanced, C = 2: factor 2
            np.testing.assert_allclose(gain[:, moved], want[:, moved] * (1 if works else -1), rtol=1e-5, atol=1e-6)
            flips = A.redirect_stats(z, clean, y, t)["flip_to_target"]
            assert flips[-1] == (1.0 if works else 0.0)
    # every input predicts the target: nothing to move, the signs come from all inputs
    _, s_all, _, n_all = A.push_signs(h, [0], np.zeros(len(y), int), 0)
    assert n_all == len(y) and s_all.tolist() == majority.tolist()
    with pytest.raises(ValueError, match="clean_pred"):
        A.push_signs(h, [0], clean[:5], 0)


def test_attack_experiment_pushes_both_classes_and_runs_the_reference_push():
    """On the planted head the experiment's signed push redirects every input toward either
    class; the reference push (+Δ on the target's column only, unsigned, unbalanced) changes the
    target logit by exactly Δ·Σ_cols h_j and no other logit."""
    from types import SimpleNamespace

    h, y, kernel, bias = _two_classes()
    params = {"head": {"classifier": {"kernel": kernel, "bias": bias}}}
    scores = np.array([[4.0, 3.0, 2.0, 1.0], [4.0, 1.0, 2.0, 3.0]])  # neuron 0 first for both classes
    for t in (0, 1):
        cfg = A.AttackConfig(target=t, k_percent=25.0, deltas=(0.0, 4.0), reference_k=50.0,
                             reference_deltas=(0.0, 0.3), reference_max_cols=1)
        res = A.attack_experiment(SimpleNamespace(config=None), params, h, y, scores, cfg)
        rows = {(r["attack"], r["magnitude"]): r for r in res["rows"]}
        assert res["neurons"] == [0] and res["sign_inputs"] == (y != t).sum()
        assert rows["column_push_signed", 4.0]["flip_to_target"] == 1.0
        assert rows["column_push_signed", 0.0]["flip_to_target"] == 0.0
        # reference columns: the top 50% (2 neurons) in ascending unit order, capped at 1
        cols = A.reference_push_columns(np.argsort(-scores[t], kind="stable"), 50.0, 1)
        assert cols.tolist() == [0] and res["reference_push"]["columns"] == 1
        k, b = A.column_push(kernel, bias, t, cols, [0.3], balanced=False)
        dz = A.apply_head(h, k, b)[0] - A.apply_head(h, kernel, bias)
        np.testing.assert_allclose(dz[:, t], 0.3 * h[:, 0], rtol=1e-5, atol=1e-6)
        assert np.abs(dz[:, 1 - t]).max() == 0
        want = A.redirect_stats(A.apply_head(h, k, b), y, y, t)["flip_to_target"][0]
        assert rows["column_push_reference", 0.3]["flip_to_target"] == want
    assert A.reference_push_columns([5, 1, 3, 0], 75.0, None).tolist() == [1, 3, 5]
