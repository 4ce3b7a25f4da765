"""The reference (NeuroX) probe recipe: raw features, λ1 Σ|W| + λ2 ‖W‖_F, minibatch Adam in data
order. Checked against a PyTorch loop written from that recipe's description, step for step."""

from __future__ import annotations

import numpy as np
import pytest

from apex_jax.synapse import probes as P

torch = pytest.importorskip("torch")


def _data(n=70, d=12, C=4, seed=0):
    """Features on very different scales (like raw [CLS] vectors), n not a multiple of 32."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    centers = rng.normal(size=(C, d))
    x = (centers[y] + rng.normal(size=(n, d))) * np.geomspace(0.01, 10, d)
    return x.astype(np.float32), y


def _torch_reference(x, y, W0, b0, l1, l2, epochs, batch_size, lr):
    """Adam on mean CE + l1 Σ|W| + l2 ‖W‖_F per minibatch, batches in data order."""
    W = torch.tensor(W0, requires_grad=True)
    b = torch.tensor(b0, requires_grad=True)
    opt = torch.optim.Adam([W, b], lr=lr)
    X, Y = torch.tensor(x), torch.tensor(y, dtype=torch.long)
    for _ in range(epochs):
        for s in range(0, len(X), batch_size):
            opt.zero_grad()
            out = X[s:s + batch_size] @ W.T + b
            loss = (torch.nn.functional.cross_entropy(out, Y[s:s + batch_size]) + l1 * W.abs().sum()
                    + l2 * torch.sqrt((W ** 2).sum()))
            loss.backward()
            opt.step()
    return W.detach().numpy(), b.detach().numpy()


def test_neurox_recipe_equals_a_torch_adam_loop():
    x, y = _data()
    cfg = P.ProbeConfig.neurox(l1=1e-2, l2=5e-2)
    cfg = P.dataclasses.replace(cfg, epochs=4, learning_rate=1e-2)  # larger steps: a visible path
    tr, te = np.arange(60), np.arange(60, 70)
    ps = P.train_probes({"a": x[:, :6], "b": x[:, 6:]}, y, tr, te, cfg, n_classes=4)
    probe = ps[P.CONCAT]
    W0, b0 = P.linear_init(12, 4, cfg.init_seed)
    W, b = _torch_reference(x[tr], y[tr], W0, b0, cfg.l1, cfg.l2, cfg.epochs, cfg.batch_size, cfg.learning_rate)
    assert np.abs(W - W0).max() > 0.02  # training moved the weights
    np.testing.assert_allclose(probe.W, W, atol=2e-5)
    np.testing.assert_allclose(probe.b, b, atol=2e-5)
    # raw features: nothing standardized, logits are x W^T + b
    assert (probe.mean == 0).all() and (probe.std == 1).all()
    np.testing.assert_allclose(ps.logits(P.CONCAT, {"a": x[:, :6], "b": x[:, 6:]}), x @ W.T + b, rtol=1e-4, atol=1e-4)
    # the reported loss is the full-data penalized loss with the Frobenius norm
    z = x[tr] @ probe.W.T + probe.b
    z = z - z.max(1, keepdims=True)
    ce = -(z[np.arange(len(tr)), y[tr]] - np.log(np.exp(z).sum(1))).mean()
    want = ce + cfg.l1 * np.abs(probe.W).sum() + cfg.l2 * np.sqrt((probe.W.astype(np.float64) ** 2).sum())
    assert probe.metrics.loss == pytest.approx(want, rel=1e-5)


def test_frobenius_penalty_has_a_zero_subgradient_at_zero():
    import jax
    import jax.numpy as jnp

    g = jax.grad(P.frobenius)(jnp.zeros((2, 3)))
    assert np.isfinite(np.asarray(g)).all() and (np.asarray(g) == 0).all()
    W = jnp.array([[3.0, 4.0]])
    assert float(P.frobenius(W)) == pytest.approx(5.0)
    np.testing.assert_allclose(np.asarray(jax.grad(P.frobenius)(W)), [[0.6, 0.8]], rtol=1e-6)


def test_recipe_settings_are_checked():
    with pytest.raises(ValueError, match="recipe"):
        P.ProbeConfig(recipe="sgd").check()
    with pytest.raises(ValueError, match="batch_size"):
        P.ProbeConfig(batch_size=0).check()
