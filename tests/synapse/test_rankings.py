"""SYNAPSE neuron rankings: probe-weight rankings, k% masks, mass cover, attribution, agreement."""

from __future__ import annotations


import jax.numpy as jnp
import numpy as np
import pytest

from apex_jax.interventions import Add
from apex_jax.synapse import rankings as R

W = np.array([[1.0, -3.0, 0.0, 2.0, 0.5],
              [-2.0, 0.0, 1.0, 2.0, -0.5]])  # [C=2, d=5]


def test_weight_rankings_by_hand():
    g = R.global_ranking(W)
    np.testing.assert_array_equal(g.scores, [3, 3, 1, 4, 1])
    assert g.order.tolist() == [3, 0, 1, 2, 4]  # ties (0, 1) and (2, 4) by lower index
    c1 = R.class_ranking(W, 1)
    np.testing.assert_array_equal(c1.scores, [2, 0, 1, 2, 0.5])
    assert c1.order.tolist() == [0, 3, 2, 4, 1]
    assert R.class_ranking(W, 0).order.tolist() == [1, 3, 0, 4, 2]
    with pytest.raises(ValueError, match=r"class 2 is out of range; valid classes are 0..1"):
        R.class_ranking(W, 2)
    with pytest.raises(ValueError, match=r"\[n_classes, d\]"):
        R.global_ranking(W[0])


def test_k_rounding_and_exact_masks():
    assert R.k_count(2.5, 384) == 10 and R.k_count(10, 384) == 38 and R.k_count(12.5, 4) == 1
    assert R.k_count(50, 5) == 3 and R.k_count(1, 10) == 1 and R.k_count(100, 7) == 7
    assert R.K_LEVELS[0] == 2.5 and R.K_LEVELS[-1] == 95 and len(R.K_LEVELS) == 18
    g = R.global_ranking(W)
    assert R.top_k(g, 40).tolist() == [1, 0, 0, 1, 0]  # 2 of 5: neuron 3, then 0 (tie with 1)
    assert R.bottom_k(g, 40).tolist() == [0, 0, 1, 0, 1]
    scores = np.random.default_rng(0).random(384)
    levels = R.top_k_levels(scores)
    assert levels.shape == (18, 384) and levels.dtype == np.float32
    assert levels.sum(axis=1).tolist() == [R.k_count(k, 384) for k in R.K_LEVELS]
    assert (np.diff(levels, axis=0) >= 0).all()  # nested: a larger k keeps the smaller k's neurons
    top = np.flatnonzero(R.top_k(scores, 10))
    assert scores[top].min() > np.delete(scores, top).max()
    for bad in (0, -5, 101, float("nan")):
        with pytest.raises(ValueError, match=r"k_percent must be in \(0, 100\]"):
            R.top_k(scores, bad)


def test_random_masks_reproducible_and_distinct():
    a = R.random_k(384, 10, seed=7, draws=20)
    assert a.shape == (20, 384) and a.dtype == np.float32
    assert set(np.unique(a)) == {0.0, 1.0} and (a.sum(axis=1) == 38).all()
    assert len({row.tobytes() for row in a}) == 20
    np.testing.assert_array_equal(a, R.random_k(384, 10, seed=7, draws=20))
    assert not np.array_equal(a, R.random_k(384, 10, seed=8, draws=20))
    with pytest.raises(ValueError, match="draws must be a positive integer"):
        R.random_k(10, 10, draws=0)


def test_layer_matched_draws_keep_the_per_layer_counts():
    L, d = 4, 50
    scores = np.random.default_rng(2).random(L * d) * np.repeat([1.0, 1.0, 2.0, 10.0], d)  # last layer dominates
    for k in (2.5, 10, 30, 60):
        top = R.top_k(scores, k)
        counts = R.layer_counts(top, L)
        assert counts.sum() == R.k_count(k, L * d)
        m = R.layer_matched_random(top, L, seed=5, draws=30)
        assert m.shape == (30, L * d) and m.dtype == np.float32 and set(np.unique(m)) <= {0.0, 1.0}
        for row in m:  # exactly the ranked set's count in every layer
            np.testing.assert_array_equal(R.layer_counts(row, L), counts)
        np.testing.assert_array_equal(m, R.layer_matched_random(top, L, seed=5, draws=30))
        if 0 < counts[-1] < d:  # within a layer the units vary from draw to draw
            assert len({row[(L - 1) * d:].tobytes() for row in m}) > 1
    # uniform within a layer: every unit of the last layer is taken about as often (k of d)
    top = R.top_k(scores, 10)
    share = R.layer_matched_random(top, L, seed=0, draws=4000)[:, (L - 1) * d:].mean(0)
    want = R.layer_counts(top, L)[-1] / d
    assert np.abs(share - want).max() < 5 * np.sqrt(want * (1 - want) / 4000)
    with pytest.raises(ValueError, match="equal-width layers"):
        R.layer_matched_random(top, 3)
    with pytest.raises(ValueError, match="draws must be a positive integer"):
        R.layer_matched_random(top, L, draws=0)


def test_layerwise_spearman_separates_scale_from_order():
    """Two rankings that agree on which layer is larger but are reversed within every layer:
    ρ ≈ 0.5 over the concatenation (the scale step alone), −1 within each layer."""
    rng = np.random.default_rng(0)
    d = 40
    u = rng.random(2 * d)
    a = u + np.repeat([0.0, 10.0], d)  # layer 1 ten units above layer 0
    b = -u + np.repeat([0.0, 10.0], d)  # the same scale step, every within-layer order reversed
    r = R.layerwise_spearman(a, b, 2)
    # ranks: block offset (0 or d) + within-block rank w vs d + 1 − w: ρ = (2d² + 1) / (4d² − 1)
    assert r["concat"] == pytest.approx((2 * d**2 + 1) / (4 * d**2 - 1), rel=1e-9)
    np.testing.assert_allclose(r["layers"], [-1.0, -1.0])
    assert R.layerwise_spearman(a, b, [d, d]) == r
    uneven = R.layerwise_spearman(a, b, [10, 2 * d - 10])
    assert uneven["layers"][0] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="equal-width"):
        R.layerwise_spearman(a, b, 3)
    with pytest.raises(ValueError, match="sum to"):
        R.layerwise_spearman(a, b, [10, 10])


def test_mass_cover_is_minimal():
    s = np.array([1.0, 5.0, 0.0, 3.0, 1.0])  # total 10; sorted 5, 3, 1, 1, 0
    for p, want in ((50, [1]), (50.1, [1, 3]), (80, [1, 3]), (81, [0, 1, 3]), (100, [0, 1, 3, 4])):
        m = R.mass_cover(s, p)
        idx = np.flatnonzero(m)
        assert idx.tolist() == want, p
        assert s[idx].sum() >= p / 100 * s.sum()
        top_smaller = np.sort(s)[::-1][: len(idx) - 1].sum()  # any smaller set has at most this
        assert top_smaller < p / 100 * s.sum()
    rng = np.random.default_rng(1)
    s = rng.exponential(size=300)
    for p in (10, 33.3, 90):
        m = R.mass_cover(s, p)
        k = int(m.sum())
        assert s[m > 0].sum() >= p / 100 * s.sum() > np.sort(s)[::-1][: k - 1].sum()
    with pytest.raises(ValueError, match="non-negative"):
        R.mass_cover(-s, 50)
    with pytest.raises(ValueError, match="all scores are 0"):
        R.mass_cover(np.zeros(4), 50)
    with pytest.raises(ValueError, match="percentage"):
        R.mass_cover(s, 0)


def test_spearman_agreement():
    a = np.arange(10.0)
    assert R.spearman(a, a ** 3) == pytest.approx(1.0)
    assert R.spearman(a, -a) == pytest.approx(-1.0)
    assert np.isnan(R.spearman(a, np.ones(10)))
    m = R.spearman_matrix({"x": a, "y": -a, "z": R.rank(a ** 2)})
    np.testing.assert_allclose(m, [[1, -1, 1], [-1, 1, -1], [1, -1, 1]])
    with pytest.raises(ValueError, match="different widths"):
        R.spearman(a, a[:5])


# ---------------------------------------------------------------------------- attribution
TEXTS = ["great", "the film was awful one", "what a wonderful film", "boring", "i found it dreadful",
         "this is a brilliant one", "horrible"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import apex_jax
    from tests.helpers import minilm_folder
    from tests.helpers.tiny_text import tiny_bert_folder

    folder = tiny_bert_folder(tmp_path_factory.mktemp("tiny_rank") / "bert", minilm_folder())
    model = apex_jax.load(folder)
    return model, model.encode(TEXTS)


def test_attribution_at_linear_head_is_analytic(tiny):
    model, inputs = tiny
    out = model.apply(model.params, inputs, capture=("head.hook_cls",))
    h = np.asarray(out.captured["head.hook_cls"], np.float64)  # [n, d]
    K = np.asarray(model.params["head"]["classifier"]["kernel"], np.float64)  # [d, C]: logits = h K + b
    pred = np.asarray(out.logits).argmax(axis=1)
    want = np.abs(h * K[:, pred].T).mean(axis=0)
    r = R.attribution_ranking(model, model.params, inputs, "head.hook_cls", batch_size=3)  # 3 chunks
    np.testing.assert_allclose(r.scores, want, rtol=1e-5, atol=1e-7)
    labels = np.arange(len(TEXTS)) % 2
    r1 = R.attribution_ranking(model, model.params, inputs, "head.hook_cls", target=labels)
    np.testing.assert_allclose(r1.scores, np.abs(h * K[:, labels].T).mean(axis=0), rtol=1e-5, atol=1e-7)
    r0 = R.attribution_ranking(model, model.params, inputs, "head.hook_cls", target=0)
    np.testing.assert_allclose(r0.scores, np.abs(h * K[:, 0]).mean(axis=0), rtol=1e-5, atol=1e-7)


def test_attribution_matches_finite_differences(tiny):
    import jax

    model, inputs = tiny
    site, d, eps = "blocks.0.hook_resid_post", model.config.d_model, 1e-2
    one = {k: v[1:2] for k, v in inputs.items()}
    r = R.attribution_ranking(model, model.params, one, site, target=1)
    a = np.asarray(model.apply(model.params, one, capture=(site,)).captured[site])[0, 0]
    fn = model.jitted(())
    logit = jax.jit(jax.vmap(  # logit 1 after adding v to the [CLS] activation, for a stack of v
        lambda v: fn(model.params, one, {site: Add(v, positions=jnp.array([0]))}).logits[0, 1]))
    bumps = eps * np.eye(d, dtype=np.float32)
    fd = (np.asarray(logit(bumps), np.float64) - np.asarray(logit(-bumps), np.float64)) / (2 * eps)
    np.testing.assert_allclose(r.scores, np.abs(a * fd), rtol=1e-3, atol=1e-4 * r.scores.max())


def test_attribution_of_many_sites_in_one_pass_equals_one_site_each(tiny):
    """`attribution_rankings` over the embedding, two blocks and the head input (one kernel, one
    forward and backward pass per chunk) gives each site the scores of its own single-site pass."""
    model, inputs = tiny
    sites = ["hook_embed", "blocks.0.hook_resid_post", f"blocks.{model.config.n_layers - 1}.hook_resid_post",
             "head.hook_cls"]
    labels = np.arange(len(TEXTS)) % 2
    for target in (None, labels):
        before = R._attribution._cache_size()
        joint = R.attribution_rankings(model, model.params, inputs, sites, target=target, batch_size=4)
        assert list(joint) == sites and R._attribution._cache_size() - before <= 1
        for s in sites:
            one = R.attribution_ranking(model, model.params, inputs, s, target=target, batch_size=4)
            np.testing.assert_allclose(joint[s].scores, one.scores, rtol=1e-5, atol=1e-7 * one.scores.max())
            assert joint[s].scores.shape == (model.config.d_model,) and joint[s].scores.max() > 0
    with pytest.raises(ValueError, match="repeated"):
        R.attribution_rankings(model, model.params, inputs, ["head.hook_cls", "head.hook_cls"])


def test_attribution_bad_inputs(tiny):
    model, inputs = tiny
    with pytest.raises(ValueError, match="unknown site"):
        R.attribution_ranking(model, model.params, inputs, "blocks.7.hook_resid_post")
    with pytest.raises(ValueError, match=r"target classes \[5\] are out of range; valid: 0..1"):
        R.attribution_ranking(model, model.params, inputs, "head.hook_cls", target=5)
    with pytest.raises(ValueError, match="target has 2 entries"):
        R.attribution_ranking(model, model.params, inputs, "head.hook_cls", target=np.array([0, 1]))
