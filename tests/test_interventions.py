"""Interventions on activation sites: identities, segmented runs, vmap, keys, gradients,
position / neuron selection, and the errors that bad perturbations and inputs raise.

Most tests use one tiny BERT (2 layers, 3 heads of size 5, d_mlp 23, 3 classes) on a padded
batch of 3 x 9 tokens, built once per session (conftest.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tests.helpers import max_err

from apex_jax import Add, Noise, Prefix, Replace, Scale, neuron_mask, silence
from apex_jax.interventions import apply_intervention

KEY = jax.random.key(42)


@pytest.fixture(scope="module")
def m(bert):
    """(model, inputs, jitted apply with static capture)."""
    model = bert.model
    return model, bert.inputs, jax.jit(model.apply, static_argnames="capture")


def clean(m, capture=()):
    model, x, _ = m
    return model.apply(model.params, x, capture=tuple(capture))


def assert_equal(a, b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# --------------------------------------------------------------------- exact identities
def _zero(kind):
    return {
        "add0": Add(jnp.zeros((), jnp.float32)),
        "noise_sigma0": Noise(KEY, jnp.zeros((), jnp.float32)),
        "relative_noise_sigma0": Noise(KEY, jnp.zeros((), jnp.float32), relative=True),
        "scale1": Scale(jnp.ones((), jnp.float32)),
    }[kind]


ZERO_KINDS = ("add0", "noise_sigma0", "relative_noise_sigma0", "scale1")
CAPS = ("hook_embed", "blocks.0.attn.hook_pattern", "blocks.1.mlp.hook_post",
        "blocks.1.hook_resid_post", "head.hook_cls")


def test_zero_perturbation_on_every_site_is_bitwise_identity(m):
    """Add(0), Noise(σ=0) (absolute and relative) and Scale(1) on every site at once change no
    bit of any activation or logit (op by op, as `apply` runs un-jitted)."""
    model, x, _ = m
    pert = {s: tuple(_zero(k) for k in ZERO_KINDS) for s in model.sites}
    ref, out = clean(m, CAPS), model.apply(model.params, x, pert, capture=CAPS)
    assert_equal(out.logits, ref.logits)
    for s in CAPS:
        assert_equal(out.captured[s], ref.captured[s])


def test_zero_perturbation_under_jit(m):
    """Under jit the intervention itself is bitwise exact, for any value. (Whole programs: see
    test_vmap_over_noise_keys_equals_loop_and_sigma0_is_clean.)"""
    v = jnp.array([[0.0, -0.0, 1e-30, -3e18, 1.5, np.pi]], jnp.float32)
    all_kinds = tuple(_zero(k) for k in ZERO_KINDS)
    y = jax.jit(lambda iv, v: apply_intervention(iv, v, "head.hook_cls", 26, None))(all_kinds, v)
    assert_equal(y, v)  # signed zeros and extremes too (not denormals: jit flushes them to 0)


def test_scale_and_sequences_act_exactly(m):
    model, x, _ = m
    s = "blocks.0.hook_resid_post"
    base = np.asarray(clean(m, (s,)).captured[s])
    for pert, want in [
        (Scale(jnp.float32(2.0)), 2 * base),
        ((Scale(jnp.float32(2.0)), Add(jnp.float32(1.0))), 2 * base + 1),  # applied in order
        ((Add(jnp.float32(1.0)), Scale(jnp.float32(2.0))), 2 * (base + 1)),
    ]:
        got = model.apply(model.params, x, {s: pert}, capture=(s,)).captured[s]
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


# -------------------------------------------------------------------- segmented execution
@pytest.mark.parametrize("until, start", [
    ("hook_embed", 0), ("blocks.1.mlp.hook_post", 1), ("blocks.0.hook_resid_post", 1),
    ("head.hook_cls", 2),
])
def test_prefix_then_suffix_equals_full_forward(m, until, start):
    model, x, _ = m
    pert = {until: Noise(KEY, jnp.float32(0.5)), "blocks.1.hook_resid_post": Scale(jnp.float32(1.5))}
    capture = (until, "blocks.1.hook_resid_post", "head.hook_cls")
    full = model.apply(model.params, x, pert, capture=capture)
    prefix = model.prefix(model.params, x, until)
    assert isinstance(prefix, Prefix) and prefix.start == start == model.resume_block(until)
    seg = model.apply(model.params, prefix, pert, capture=capture)
    assert max_err(seg.logits, full.logits) <= 1e-6
    for s in capture:
        assert max_err(seg.captured[s], full.captured[s]) <= 1e-6, s
    # Not vacuous: the perturbation moved the output.
    assert max_err(full.logits, clean(m).logits) > 1e-3


def test_prefix_with_its_own_perturbations_under_jit(m):
    """Perturbations before the boundary go into the cached prefix; the suffix is jitted and
    reused for several draws; each equals the jitted full forward."""
    model, x, _ = m
    early = {"blocks.0.mlp.hook_post": silence(neurons=neuron_mask([0, 5, 22], 23))}
    site = "blocks.1.attn.hook_v"
    make_prefix = jax.jit(lambda p, x: model.prefix(p, x, site, early))
    suffix = jax.jit(lambda p, pre, k: model.apply(p, pre, {site: Noise(k, jnp.float32(0.4))}).logits)
    prefix = make_prefix(model.params, x)
    assert prefix.start == 1
    for k in jax.random.split(KEY, 3):
        full = model.apply(model.params, x, {**early, site: Noise(k, jnp.float32(0.4))}).logits
        assert max_err(suffix(model.params, prefix, k), full) <= 1e-5


# ----------------------------------------------------------------------- vmap and keys
def test_vmap_over_noise_keys_equals_loop_and_sigma0_is_clean(m):
    """One compiled sweep program (vmap over 8 keys, noise on three sites): equals a Python
    loop over the keys; at σ = 0 every key gives bitwise the same output, equal to the clean
    forward to float rounding. (Not bitwise against the separately compiled clean program:
    XLA's CPU backend can round the same op differently in different fusion contexts, 3e-8
    here, bitwise with --xla_backend_optimization_level=0; a sweep should take its clean
    reference from its own σ = 0 point.)"""
    model, x, _ = m
    sites = ("hook_embed", "blocks.0.mlp.hook_post", "blocks.1.hook_resid_post")

    def draw(k, sigma):
        pert = {s: Noise(k, sigma, relative=(s == "blocks.0.mlp.hook_post")) for s in sites}
        return model.apply(model.params, x, pert).logits

    sweep = jax.jit(jax.vmap(draw, in_axes=(0, None)))
    keys = jax.random.split(jax.random.key(1), 8)
    batched = np.asarray(sweep(keys, jnp.float32(0.3)))
    looped = np.stack([np.asarray(draw(k, jnp.float32(0.3))) for k in keys])  # un-jitted
    assert batched.shape == (8, 3, 3)
    assert max_err(batched, looped) <= 1e-5
    assert batched.std(axis=0).min() > 1e-3  # the draws differ
    at0 = np.asarray(sweep(keys, jnp.float32(0.0)))
    assert (at0 == at0[0]).all()
    assert max_err(at0[0], clean(m).logits) <= 1e-6


def test_vmap_over_sigma_positions_and_masks(m):
    """σ, positions and neuron masks are array leaves: a sweep over them vmaps."""
    model, x, _ = m
    s = "blocks.0.hook_resid_post"
    base = clean(m, (s,))

    def run(sigma, pos, mask):
        pert = {s: (silence(neurons=mask, positions=pos), Noise(KEY, sigma, neurons=1 - mask))}
        return model.apply(model.params, x, pert, capture=(s,))

    sigmas = jnp.array([0.0, 0.1, 1.0], jnp.float32)
    pos = jnp.array([[0], [3], [8]])
    masks = jnp.stack([neuron_mask([i, i + 1], 15) for i in (0, 6, 13)])
    out = jax.jit(jax.vmap(run))(sigmas, pos, masks)
    for d in range(3):
        want = run(sigmas[d], pos[d], masks[d])
        assert max_err(out.logits[d], want.logits) <= 1e-5
        assert max_err(out.captured[s][d], want.captured[s]) <= 1e-6
        c = np.asarray(out.captured[s][d])
        p, on = int(pos[d, 0]), np.asarray(masks[d]) > 0
        assert (c[:, p][:, on] == 0).all()  # silenced
    # σ = 0 draw: only the silenced entries moved.
    c0, b0 = np.asarray(out.captured[s][0]), np.asarray(base.captured[s])
    assert max_err(np.delete(c0, 0, axis=1), np.delete(b0, 0, axis=1)) <= 1e-6
    assert max_err(c0[:, 0, 2:], b0[:, 0, 2:]) <= 1e-6


def test_per_example_keys_do_not_depend_on_batch_composition(m):
    model, x, _ = m
    keys = jax.random.split(jax.random.key(7), 3)
    s = "blocks.0.hook_resid_post"
    # The model, batch reordered (same shapes): each example keeps its noise and its logits.
    order = np.array([2, 0, 1])

    def run(rows, k):
        xs = {n: v[rows] for n, v in x.items()}
        out = model.apply(model.params, xs, {s: Noise(k, jnp.float32(0.5))}, capture=(s,))
        return np.asarray(out.captured[s]), np.asarray(out.logits)

    noisy, logits = run(np.arange(3), keys)
    noisy_p, logits_p = run(order, keys[order])
    assert max_err(noisy_p, noisy[order]) <= 1e-6
    assert max_err(logits_p, logits[order]) <= 1e-5
    # Raw uint32 keys [batch, 2] mean the same as typed keys [batch].
    assert_equal(run(np.arange(3), jax.random.key_data(keys))[0], noisy)
    # The noise itself, for sub-batches of other sizes: example i's noise depends on key i only.
    z = jnp.zeros((3, 9, 15))
    full = np.asarray(apply_intervention(Noise(keys, 0.5), z, s, 12))
    for rows in ([1], [2, 0]):
        rows = np.array(rows)
        sub = np.asarray(apply_intervention(Noise(keys[rows], 0.5), z[rows], s, 12))
        assert_equal(sub, full[rows])
    assert not np.allclose(full[0], full[1])
    assert 0.45 < full.std() < 0.55


def test_noise_on_several_sites_with_one_key_is_independent(m):
    model, x, _ = m
    q, k = "blocks.0.attn.hook_q", "blocks.0.attn.hook_k"  # same shape, neither feeds the other
    base = clean(m, (q, k)).captured
    both = model.apply(model.params, x, {q: Noise(KEY, jnp.float32(1.0)), k: Noise(KEY, jnp.float32(1.0))},
                       capture=(q, k)).captured
    nq, nk = np.asarray(both[q] - base[q]).ravel(), np.asarray(both[k] - base[k]).ravel()
    assert nq.size == 3 * 9 * 15
    assert abs(np.corrcoef(nq, nk)[0, 1]) < 0.2
    assert 0.8 < nq.std() < 1.2 and 0.8 < nk.std() < 1.2
    # A site's noise depends on (key, site), not on which other sites are perturbed.
    only_q = model.apply(model.params, x, {q: Noise(KEY, jnp.float32(1.0))}, capture=(q,)).captured[q]
    assert max_err(only_q, both[q]) <= 1e-6
    # Pure function, large draw: same key, two site ids -> uncorrelated.
    z = jnp.zeros((256, 64))
    a = apply_intervention(Noise(KEY, 1.0), z, "hook_embed", 0)
    b = apply_intervention(Noise(KEY, 1.0), z, "blocks.0.hook_resid_pre", 1)
    assert abs(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1]) < 0.02
    # The definition (DESIGN.md principle 3): site i's noise is normal(fold_in(key, i), shape).
    assert_equal(b, jax.random.normal(jax.random.fold_in(KEY, 1), (256, 64)))


# --------------------------------------------------------------------------- gradients
def test_gradient_wrt_additive_perturbation_matches_finite_difference(m):
    model, x, f = m
    s = "blocks.0.hook_resid_post"
    w = jnp.array([1.0, -2.0, 0.5])

    def objective(v):  # v: [batch, pos, d_model]
        return jnp.sum(model.apply(model.params, x, {s: Add(v)}).logits * w)

    v0 = 0.05 * jax.random.normal(jax.random.key(3), (3, 9, 15))
    g = np.asarray(jax.jit(jax.grad(objective))(v0))

    def value(v):  # the shared jitted forward, compiled once for this perturbation structure
        return float(jnp.sum(f(model.params, x, {s: Add(v)}).logits * w))

    eps = 1e-2
    rng = np.random.default_rng(0)
    real = x["attention_mask"] == 1
    directions = [rng.normal(size=(3, 9, 15)) * real[..., None],  # random, on real tokens
                  np.broadcast_to(np.eye(15)[3], (3, 9, 15)),  # one feature at every token
                  np.eye(27 * 15)[4 * 15 + 7].reshape(3, 9, 15)]  # one entry: example 0, token 4
    for u in directions:
        u = u / np.linalg.norm(u)
        fd = (value(v0 + eps * u) - value(v0 - eps * u)) / (2 * eps)
        analytic = float((g * u).sum())
        assert abs(analytic - fd) <= 2e-2 * abs(fd) + 2e-4, (analytic, fd)
        assert abs(fd) > 1e-3  # each direction matters
    # Padded positions cannot reach the logits: their gradient is exactly 0.
    assert (g[~real] == 0).all()
    assert (np.linalg.norm(g[real], axis=-1) > 1e-6).all()


# ------------------------------------------------------------ position / neuron selection
def test_silence_cls_only(m):
    model, x, _ = m
    s, p = "blocks.0.hook_resid_post", "blocks.1.attn.hook_pattern"
    base = clean(m, (s, p))
    out = model.apply(model.params, x, {s: silence(positions=jnp.array([0]))}, capture=(s,))
    c = np.asarray(out.captured[s])
    assert (c[:, 0] == 0).all()
    assert_equal(c[:, 1:], base.captured[s][:, 1:])
    assert np.abs(np.asarray(base.captured[s][:, 0])).min() > 0  # there was something to zero
    assert max_err(out.logits, base.logits) > 1e-3
    # On a pattern the position axis is the query axis.
    pat = np.asarray(model.apply(model.params, x, {p: silence(positions=jnp.array([0, 4]))}, capture=(p,)).captured[p])
    assert (pat[:, :, [0, 4], :] == 0).all()
    keep = [q for q in range(9) if q not in (0, 4)]
    assert_equal(pat[:, :, keep], base.captured[p][:, :, keep])


def test_neuron_masks(m):
    model, x, _ = m
    mask = neuron_mask([1, 4, 7], 23)
    assert mask.shape == (23,) and float(mask.sum()) == 3 and float(mask[4]) == 1.0
    s, z = "blocks.1.mlp.hook_post", "blocks.0.attn.hook_z"
    base = clean(m, (s, z)).captured
    on = np.asarray(mask) > 0

    c = np.asarray(model.apply(model.params, x, {s: silence(neurons=mask)}, capture=(s,)).captured[s])
    assert (c[..., on] == 0).all()
    assert_equal(c[..., ~on], np.asarray(base[s])[..., ~on])

    # neurons + positions: only [CLS]'s selected neurons.
    c = np.asarray(model.apply(model.params, x, {s: silence(neurons=mask, positions=jnp.array([0]))},
                               capture=(s,)).captured[s])
    b = np.asarray(base[s])
    assert (c[:, 0][:, on] == 0).all()
    assert_equal(c[:, 0][:, ~on], b[:, 0][:, ~on])
    assert_equal(c[:, 1:], b[:, 1:])

    # A bool [n_heads, d_head] mask on hook_z silences one head.
    head1 = jnp.zeros((3, 5), bool).at[1].set(True)
    c = np.asarray(model.apply(model.params, x, {z: silence(neurons=head1)}, capture=(z,)).captured[z])
    assert (c[:, :, 1] == 0).all()
    assert_equal(c[:, :, [0, 2]], np.asarray(base[z])[:, :, [0, 2]])

    # Noise restricted to neurons moves only them.
    c = np.asarray(model.apply(model.params, x, {s: Noise(KEY, jnp.float32(1.0), neurons=mask)},
                               capture=(s,)).captured[s])
    assert_equal(c[..., ~on], b[..., ~on])
    assert (np.abs(c[..., on] - b[..., on]) > 0).mean() > 0.99


def test_replace_mean_ablation(m):
    model, x, _ = m
    s = "blocks.0.hook_resid_post"
    base = clean(m, (s,))
    b = np.asarray(base.captured[s])
    mean = jnp.asarray(b[x["attention_mask"] == 1].mean(0))  # [d_model], over real tokens
    c = np.asarray(model.apply(model.params, x, {s: Replace(mean)}, capture=(s,)).captured[s])
    assert_equal(c, np.broadcast_to(np.asarray(mean), b.shape))
    out = model.apply(model.params, x, {s: Replace(mean, positions=jnp.array([0]))}, capture=(s,))
    c = np.asarray(out.captured[s])
    assert_equal(c[:, 0], np.broadcast_to(np.asarray(mean), b[:, 0].shape))
    assert_equal(c[:, 1:], b[:, 1:])
    assert max_err(out.logits, base.logits) > 1e-3
    # Per-neuron replacement.
    mask = neuron_mask([2, 3], 15)
    c = np.asarray(model.apply(model.params, x, {s: Replace(mean, neurons=mask)}, capture=(s,)).captured[s])
    assert_equal(c[..., [2, 3]], np.broadcast_to(np.asarray(mean)[[2, 3]], b[..., [2, 3]].shape))
    assert_equal(np.delete(c, [2, 3], -1), np.delete(b, [2, 3], -1))


# ------------------------------------------------------------------ noise statistics
def test_noise_has_the_stated_std():
    rng = np.random.default_rng(0)
    sigma = 0.3
    # Residual-like site: RMS per (example, position) spans ~e^-2 .. e^2.
    scale = np.exp(rng.uniform(-2, 2, size=(128, 16, 1)))
    x = jnp.asarray(rng.normal(size=(128, 16, 64)) * scale, jnp.float32)
    y = apply_intervention(Noise(KEY, sigma, relative=True), x, "blocks.0.hook_resid_post", 5, 1)
    rms = np.sqrt(np.mean(np.square(np.asarray(x)), axis=-1, keepdims=True))
    z = np.asarray(y - x) / (sigma * rms)
    assert abs(z.std() - 1) < 0.02 and abs(z.mean()) < 0.01
    big, small = (scale[..., 0] > np.e), (scale[..., 0] < 1 / np.e)
    assert abs(z[big].std() - 1) < 0.04 and abs(z[small].std() - 1) < 0.04
    # Absolute noise: std = σ whatever the activation scale.
    n = np.asarray(apply_intervention(Noise(KEY, sigma), x, "blocks.0.hook_resid_post", 5, 1) - x)
    assert abs(n.std() / sigma - 1) < 0.02 and abs(n[big].std() / sigma - 1) < 0.04
    # Pattern site: RMS over (heads, key positions) per (example, query position).
    xp = jnp.asarray(rng.uniform(size=(64, 3, 16, 16)) * np.exp(rng.uniform(-2, 2, size=(64, 1, 16, 1))), jnp.float32)
    yp = apply_intervention(Noise(KEY, sigma, relative=True), xp, "blocks.0.attn.hook_pattern", 6, 2)
    rms = np.sqrt(np.mean(np.square(np.asarray(xp)), axis=(1, 3), keepdims=True))
    zp = np.asarray(yp - xp) / (sigma * rms)
    assert abs(zp.std() - 1) < 0.02
    # Head site (no position axis): RMS over the features per example.
    xh = jnp.asarray(rng.normal(size=(4096, 15)) * np.exp(rng.uniform(-2, 2, size=(4096, 1))), jnp.float32)
    yh = apply_intervention(Noise(KEY, sigma, relative=True), xh, "head.hook_cls", 7, None)
    zh = np.asarray(yh - xh) / (sigma * np.sqrt(np.mean(np.square(np.asarray(xh)), axis=1, keepdims=True)))
    assert abs(zh.std() - 1) < 0.03


def test_relative_noise_in_the_model(m):
    model, x, _ = m
    s = "blocks.0.hook_resid_post"
    base = 5 * np.asarray(clean(m, (s,)).captured[s])  # scaled first, then noised (in order)
    pert = {s: (Scale(jnp.float32(5.0)), Noise(KEY, jnp.float32(0.2), relative=True))}
    noisy = np.asarray(model.apply(model.params, x, pert, capture=(s,)).captured[s])
    rms = np.sqrt(np.mean(np.square(base), axis=-1, keepdims=True))
    assert rms.min() > 2  # so relative and absolute noise are far apart
    z = (noisy - base) / (0.2 * rms)  # 405 draws of N(0, 1)
    assert abs(z.std() - 1) < 0.15 and abs(z.mean()) < 0.15


# ------------------------------------------------------------------------------- errors
def test_unknown_site_lists_valid_sites(m):
    model, x, _ = m
    with pytest.raises(ValueError, match=r"unknown site.*'blocks\.7\.hook_resid_post'.*valid sites: hook_embed, "
                                         r"blocks\.\{0\.\.1\}\.hook_resid_pre.*mlp\.hook_post.*head\.hook_cls"):
        model.apply(model.params, x, {"blocks.7.hook_resid_post": Add(0.0)})
    with pytest.raises(ValueError, match=r"capture: unknown site.*'blocks\.0\.hook_mlp'.*valid sites"):
        model.apply(model.params, x, capture=("blocks.0.hook_mlp",))
    with pytest.raises(ValueError, match=r"until: unknown site.*'hook_emb'"):
        model.prefix(model.params, x, "hook_emb")
    with pytest.raises(TypeError, match=r"'hook_embed': float is not an intervention; use one of Add, Noise"):
        model.apply(model.params, x, {"hook_embed": 0.5})


def test_misshaped_leaf_names_site_and_shape(m):
    model, x, _ = m
    with pytest.raises(ValueError, match=r"Add at site 'blocks\.0\.hook_resid_post': leaf 'value' has shape \(4,\).*"
                                         r"\(3, 9, 15\) \[batch, pos, d_model\]"):
        model.apply(model.params, x, {"blocks.0.hook_resid_post": Add(jnp.zeros(4))})
    with pytest.raises(ValueError, match=r"Scale at site 'blocks\.1\.mlp\.hook_post'.*\(3, 9, 23\)"):
        model.apply(model.params, x, {"blocks.1.mlp.hook_post": Scale(jnp.ones((2, 9, 23)))})
    with pytest.raises(ValueError, match=r"'neurons' mask has shape \(14,\); expected the site's feature shape \(15,\)"):
        model.apply(model.params, x, {"blocks.0.hook_resid_post": silence(neurons=jnp.ones(14))})
    with pytest.raises(ValueError, match=r"Noise key has a batch of 2 keys but the batch has 3"):
        model.apply(model.params, x, {"hook_embed": Noise(jax.random.split(KEY, 2), 0.1)})


@pytest.mark.parametrize("sigma", [-0.1, float("nan"), float("inf"), np.array([0.1, -1.0])])
def test_bad_sigma(sigma):
    with pytest.raises(ValueError, match=r"sigma must be finite and >= 0"):
        Noise(KEY, sigma)
    with pytest.raises(ValueError, match=r"sigma must be finite and >= 0"):
        Noise(KEY, jnp.asarray(sigma, jnp.float32))


def test_bad_positions(m):
    model, x, _ = m
    s = "blocks.0.hook_resid_post"
    with pytest.raises(ValueError, match=r"Scale at site 'blocks\.0\.hook_resid_post': positions \[9\] are outside \[0, 9\)"):
        model.apply(model.params, x, {s: silence(positions=jnp.array([0, 9]))})
    with pytest.raises(ValueError, match=r"positions \[-1\] are outside"):
        model.apply(model.params, x, {s: silence(positions=jnp.array([-1]))})
    with pytest.raises(ValueError, match=r"'head\.hook_cls': 'positions' given, but \[batch, d_model\] has no position axis"):
        model.apply(model.params, x, {"head.hook_cls": silence(positions=jnp.array([0]))})
    with pytest.raises(ValueError, match=r"1-D integer index array"):
        model.apply(model.params, x, {s: silence(positions=jnp.array([0.0]))})


def test_sites_outside_a_cached_prefix(m):
    model, x, _ = m
    prefix = model.prefix(model.params, x, "blocks.1.hook_resid_pre")
    assert prefix.start == 1
    with pytest.raises(ValueError, match=r"sites \['blocks\.0\.mlp\.hook_post'\] lie before the cached prefix "
                                         r"\(it starts at block 1\)"):
        model.apply(model.params, prefix, capture=("blocks.0.mlp.hook_post",))
    with pytest.raises(ValueError, match=r"sites \['hook_embed'\] lie before the cached prefix"):
        model.apply(model.params, prefix, {"hook_embed": Add(0.0)})
    # The boundary site itself belongs to the suffix.
    out = model.apply(model.params, prefix, capture=("blocks.0.hook_resid_post",))
    assert max_err(out.logits, clean(m).logits) <= 1e-6
    with pytest.raises(ValueError, match=r"perturbations at \['blocks\.1\.hook_resid_pre'\] lie after the prefix "
                                         r"boundary \(block 1\)"):
        model.prefix(model.params, x, "blocks.0.hook_resid_post", {"blocks.1.hook_resid_pre": Add(0.0)})


def test_bad_inputs(m, ref):
    model, x, _ = m
    with pytest.raises(ValueError, match=r"inputs lack \['attention_mask'\]; a bert model needs \['input_ids', 'attention_mask'\]"):
        model.apply(model.params, {"input_ids": x["input_ids"]})
    with pytest.raises(ValueError, match=r"token_type_ids has shape \(3, 8\); input_ids have \(3, 9\)"):
        model.apply(model.params, {**x, "token_type_ids": x["token_type_ids"][:, :8]})
    with pytest.raises(TypeError, match=r"inputs must be a dict"):
        model.apply(model.params, x["input_ids"])
    vit = ref("vit", n_heads=3, d_head=5).model
    with pytest.raises(ValueError, match=r"inputs lack \['pixel_values'\]"):
        vit.apply(vit.params, x)
    for shape in [(3, 3, 8, 8), (3, 12, 12), (3, 1, 12, 12)]:
        with pytest.raises(ValueError, match=r"pixel_values have shape .*; this model expects \[batch, 3, 12, 12\]"):
            vit.apply(vit.params, {"pixel_values": np.zeros(shape, np.float32)})
    # RoBERTa numbers positions from pad_token_id + 1: 42 position embeddings hold 40 tokens.
    rob = ref("roberta", n_heads=3, d_head=5).model
    too_long = {"input_ids": np.full((1, 41), 5, np.int32), "attention_mask": np.ones((1, 41), np.int32)}
    with pytest.raises(ValueError, match=r"sequence length 41 exceeds the 40 positions"):
        rob.apply(rob.params, too_long)
    with pytest.raises(ValueError, match=r"sequence length 41 exceeds the 40 positions"):
        model.apply(model.params, {k: np.zeros((1, 41), np.int32) for k in x})


@pytest.mark.parametrize("arch", ["bert", "vit"])
def test_head_only_matches_full_forward_under_batched_noise(ref, arch):
    """Skipping non-[CLS] work in the last block changes no logit, and batched-key noise at
    last-block sites (resid_post, mlp, resid_mid) equals the full run's [CLS] noise."""
    r = ref(arch)
    m = r.model
    n = m.config.n_layers
    keys = jax.random.split(jax.random.key(5), r.inputs[next(iter(r.inputs))].shape[0])
    pert = {f"blocks.{i}.hook_resid_post": Noise(keys, 0.3) for i in range(n)}
    pert[f"blocks.{n - 1}.mlp.hook_post"] = Noise(keys, 0.2)
    pert[f"blocks.{n - 1}.hook_resid_mid"] = silence(positions=jnp.array([0]), neurons=jnp.arange(m.config.d_model) % 2)
    full = m.apply(m.params, r.inputs, pert).logits
    fast = m.apply(m.params, r.inputs, pert, head_only=True).logits
    np.testing.assert_allclose(np.asarray(fast), np.asarray(full), atol=1e-5)
    with pytest.raises(ValueError, match="hook_pattern"):
        m.apply(m.params, r.inputs, {f"blocks.{n - 1}.attn.hook_pattern": Scale(jnp.ones(()))}, head_only=True)
