"""SYNAPSE silencing controls on analytic cases: a planted neuron at the classifier input whose
zeroing moves the true-class margin and KL by known amounts, mean-ablation at an input's own
values leaves it clean, the training mean mean-ablation reads from the probe, and the
all-layers protocol's layer-matched, bottom, attribution and mean-ablated selections (their
masks, their scores against direct forwards, their z and p)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from apex_jax.interventions import Replace, Scale
from apex_jax.synapse import rankings
from apex_jax.synapse import silencing as S
from apex_jax.synapse.probes import Probe, ProbeConfig, ProbeMetrics, ProbeSet
from apex_jax.synapse.run import _ablation_means
from tests.synapse.test_silencing import TEXTS, model  # noqa: F401  (the module fixture)

HEAD = "head.hook_cls"
SITES = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]


def _softmax_log(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def _margin(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    other = z.copy()
    other[np.arange(len(y)), y] = -np.inf
    return z[np.arange(len(y)), y] - other.max(1)


def test_planted_neuron_moves_margin_and_kl_by_the_known_amount(model):  # noqa: F811
    """At the classifier input h (logits = h K + b) zeroing neuron j changes logit c by
    −h_j K[j, c]; setting it to m_j changes it by (m_j − h_j) K[j, c]. A planted neuron with a
    large weight is the probe's top-1; its margin drop, KL and flips follow exactly, and input
    0's own values as the "mean" leave input 0 clean."""
    batch = model.encode(TEXTS)
    n, d = len(TEXTS), model.config.d_model
    h = np.asarray(model.forward(batch, capture=(HEAD,)).captured[HEAD], np.float64)  # [n, d]
    j = int(np.argmax(np.abs(h).min(0)))  # a neuron far from 0 on every input
    K = np.asarray(model.params["head"]["classifier"]["kernel"], np.float64).copy()
    b = np.asarray(model.params["head"]["classifier"]["bias"], np.float64)
    K[j] = [0.0, 6.0 * np.sign(h[:, j].mean()) / np.abs(h[:, j]).min()]  # the planted neuron: |Δlogit| >= 6
    params = {**model.params, "head": {**model.params["head"], "classifier": {
        "kernel": K.astype(np.float32), "bias": b.astype(np.float32)}}}
    z = h @ K + b
    labels = z.argmax(1)
    labels[0] = 1 - labels[0]  # one wrong label: its clean margin is negative
    scores = np.zeros(d)
    scores[j] = 1.0  # the probe ranks the planted neuron first
    means = h[0].copy()  # input 0's own values: mean-ablating input 0 changes nothing
    cfg = S.SilenceConfig(k_levels=(5.0,), n_random=3, per_class=False, mean_ablation=True)
    assert rankings.k_count(5.0, d) == 1
    res = S.silencing_experiment(model, params, batch, labels, np.arange(n), {HEAD: (scores, None)}, cfg,
                                 means={HEAD: means}, progress=False)
    (lr,) = res.layers
    np.testing.assert_allclose(res.clean_margin, _margin(z, labels), rtol=1e-5, atol=1e-4)
    logp = _softmax_log(z)
    for g, sel in enumerate(lr.selections):
        mask = S.selections_and_masks(scores, None, cfg, seed=cfg.seed)[1][g]
        fill = means if sel.ablation == "mean" else np.zeros(d)
        zs = z + ((fill - h) * mask) @ K  # the exact logits with the selection ablated
        np.testing.assert_allclose(lr.margin[:, g], _margin(zs, labels), rtol=1e-5, atol=1e-4, err_msg=str(sel))
        logq = _softmax_log(zs)
        np.testing.assert_allclose(lr.kl[:, g], (np.exp(logp) * (logp - logq)).sum(1), rtol=1e-3, atol=1e-5)
        np.testing.assert_array_equal(lr.counts[:, g].argmax(-1), zs.argmax(1))
        if sel.ablation == "mean":  # input 0 at its own values: its margin and distribution are clean
            assert lr.margin[0, g] == pytest.approx(res.clean_margin[0], abs=1e-5) and lr.kl[0, g] < 1e-6
    top = next(g for g, s in enumerate(lr.selections) if (s.kind, s.ablation) == ("top", "zero"))
    # the planted neuron: the true class (1 on the correct inputs) loses |h_j K[j, 1]| >= 6 of margin
    sign = np.where(labels == 1, 1.0, -1.0)
    want_drop = np.mean(sign * h[:, j] * K[j, 1])
    rows = {(r["selection"], r["ablation"]): r for r in res.controls("margin")}
    assert rows["top", "zero"]["drop"] == pytest.approx(want_drop, rel=1e-4)
    rand = [res.clean_value("margin") - lr.values("margin")[g] for g, s in enumerate(lr.selections)
            if s.kind == "random" and s.ablation == "zero"]
    assert rows["top", "zero"]["p"] == (1 + sum(r >= want_drop - 1e-9 for r in rand)) / (1 + len(rand))
    assert rows["top", "zero"]["layer_z"] is None  # per site: no layer-matched draws (they are in the layer)
    assert lr.kl[:, top].min() > 0 and res.controls("kl")[0]["drop"] == pytest.approx(lr.kl[:, top].mean())
    assert set(rows) == {("top", "zero"), ("bottom", "zero"), ("top", "mean"), ("bottom", "mean")}
    with pytest.raises(ValueError, match="layer_matched is a control of concat_silencing_experiment"):
        S.silencing_experiment(model, params, batch, labels, np.arange(n), {HEAD: (scores, None)},
                               dataclasses.replace(cfg, layer_matched=True), means={HEAD: means}, progress=False)


def test_mean_ablation_reads_the_probes_training_mean(model):  # noqa: F811
    batch = model.encode(TEXTS)
    d, site = model.config.d_model, SITES[0]
    mean = np.linspace(-1, 1, d).astype(np.float32)
    metrics = ProbeMetrics(1.0, 1.0, 1.0, (1.0, 1.0), 1.0, 0.0)
    probe = Probe(np.ones((2, d), np.float32), np.zeros(2, np.float32), mean, np.ones(d, np.float32), metrics)
    means, source = _ablation_means(model, batch, ProbeSet({site: probe}, (site,), 2, ProbeConfig()), [site], False)
    np.testing.assert_array_equal(means[site], mean)
    assert source == "probe training inputs"
    # a raw-feature probe stores no mean (0): the evaluation inputs' mean [CLS] instead
    raw = ProbeSet({site: probe._replace(mean=np.zeros(d, np.float32))}, (site,), 2, ProbeConfig.neurox())
    means, source = _ablation_means(model, batch, raw, [site], False)
    h = np.asarray(model.forward(batch, capture=(site,)).captured[site])[:, 0]
    np.testing.assert_allclose(means[site], h.mean(0), rtol=1e-5, atol=1e-6)
    assert source.startswith("evaluation inputs")


def test_all_layers_controls_equal_direct_forwards(model):  # noqa: F811
    """Layer-matched draws keep the top-k%'s count in every layer; attribution, bottom and
    mean-ablated selections run in the same sweep; each equals a direct forward; the top-k%
    rows carry the layer-matched z and p."""
    batch = model.encode(TEXTS)
    n, d = len(TEXTS), model.config.d_model
    rng = np.random.default_rng(3)
    W = rng.normal(size=(2, len(SITES) * d))
    W[:, d:] *= 100  # the last layer's weights dominate, as raw features make them
    attribution = {s: rng.random(d) for s in SITES}
    means = {s: rng.normal(size=d).astype(np.float32) for s in SITES}
    labels = np.asarray(model.forward(batch).logits).argmax(-1)
    cfg = S.SilenceConfig(k_levels=(25.0, 37.5), n_random=2, per_class=False, attribution=True, mean_ablation=True,
                          layer_matched=True)
    res = S.concat_silencing_experiment(model, model.params, batch, labels, np.arange(n), W, SITES, cfg,
                                        means=means, attribution=attribution, progress=False)
    (lr,) = res.layers
    sels, masks = S.selections_and_masks(rankings.global_ranking(W).scores, None, cfg, seed=cfg.seed,
                                         attribution=np.concatenate([attribution[s] for s in SITES]), n_layers=2)
    assert [(s.kind, s.ablation, s.draw) for s in lr.selections] == [(s.kind, s.ablation, s.draw) for s in sels]
    per_k = ["top", "attribution", "bottom"] + ["random"] * 2 + ["random_layer"] * 2
    assert [s.kind for s in sels if s.k == 25.0] == per_k * 2
    for k in cfg.k_levels:
        top = masks[next(g for g, s in enumerate(sels) if s.k == k and s.kind == "top")]
        counts = rankings.layer_counts(top, 2)
        assert counts[1] == top.sum() and counts[0] == 0  # the ranking sits in the last layer
        for g, s in enumerate(sels):
            if s.k == k and s.kind == "random_layer":
                np.testing.assert_array_equal(rankings.layer_counts(masks[g], 2), counts)
            if s.k == k and s.kind == "random":  # the uniform draws spread over both layers
                assert masks[g].sum() == top.sum()
        att = masks[next(g for g, s in enumerate(sels) if s.k == k and s.kind == "attribution")]
        np.testing.assert_array_equal(att, rankings.top_k(np.concatenate([attribution[s] for s in SITES]), k))
    for g in (1, 5, 7, 12):  # attribution zeroed; a layer-matched draw zeroed; top and a matched draw mean-ablated
        sel, per_site = sels[g], rankings.split_concat(masks[g], SITES)
        pert = {s: (Replace(means[s], positions=np.array([0]), neurons=per_site[s]) if sel.ablation == "mean"
                    else Scale(np.float32(0), positions=np.array([0]), neurons=per_site[s])) for s in SITES}
        zs = np.asarray(model.forward(batch, pert).logits, np.float64)
        np.testing.assert_array_equal(lr.counts[:, g].argmax(-1), zs.argmax(1))
        np.testing.assert_allclose(lr.margin[:, g], _margin(zs, labels), rtol=1e-4, atol=1e-4, err_msg=str(sel))
    assert [(s.kind, s.ablation) for s in (sels[1], sels[5], sels[7], sels[12])] == [
        ("attribution", "zero"), ("random_layer", "zero"), ("top", "mean"), ("random_layer", "mean")]
    rows = res.controls("margin")
    for r in rows:
        if r["selection"] != "top":
            assert r["layer_z"] is None and r["layer_draws"] is None
            continue
        assert r["layer_draws"] == 2
        vals = lr.values("margin")
        matched = [r["clean"] - vals[g] for g, s in enumerate(sels)
                   if s.kind == "random_layer" and s.k == r["k_percent"] and s.ablation == r["ablation"]]
        assert r["layer_p"] == (1 + sum(m >= r["drop"] for m in matched)) / 3
        assert r["layer_random_mean"] == pytest.approx(np.mean(matched))
    assert {(r["selection"], r["ablation"]) for r in rows} == {
        (k, a) for k in ("top", "attribution", "bottom") for a in ("zero", "mean")}
    curves = {(c["selection"], c["ablation"]) for c in res.curves("margin")}
    assert ("random_layer", "mean") in curves and ("random", "zero") in curves
    with pytest.raises(ValueError, match="needs means"):
        S.concat_silencing_experiment(model, model.params, batch, labels, np.arange(n), W, SITES, cfg,
                                      attribution=attribution, progress=False)
