"""The reference protocol's silencing: a global ranking over all layers' [CLS] concatenated, mapped
back to (layer, unit) and zeroed at every layer at once (and at the pooler output) in one sweep,
equals direct forwards with those multi-site masks."""

from __future__ import annotations

import numpy as np
import pytest

from apex_jax.interventions import Scale
from apex_jax.synapse import rankings, reuse
from apex_jax.synapse import silencing as S
from tests.synapse.test_silencing import TEXTS, model  # noqa: F401  (the module fixture)

SITES = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]


def test_split_concat_maps_global_indices_to_layer_and_unit():
    d = 5
    g = np.array([0, 4, 5, 9, 12])  # layer 0 units 0, 4; layer 1 units 0, 4; layer 2 unit 2
    m = np.zeros(3 * d, np.float32)
    m[g] = 1
    out = rankings.split_concat(m, ["a", "b", "c"])
    assert [np.flatnonzero(out[s]).tolist() for s in "abc"] == [[0, 4], [0, 4], [2]]
    assert rankings.split_concat(np.stack([m, 1 - m]), ["a", "b", "c"])["b"].shape == (2, d)
    with pytest.raises(ValueError, match="width"):
        rankings.split_concat(m, ["a", "b"], d=5)


def test_concat_silencing_equals_direct_multi_site_forwards(model):  # noqa: F811
    batch = model.encode(TEXTS)
    d, C = model.config.d_model, model.config.n_classes
    rng = np.random.default_rng(7)
    W = rng.normal(size=(C, len(SITES) * d))
    cfg = S.SilenceConfig(k_levels=(25.0, 75.0), n_random=2, asymmetry_k=25.0)
    labels = np.asarray(model.forward(batch).logits).argmax(-1)
    res = S.concat_silencing_experiment(model, model.params, batch, labels, np.arange(len(TEXTS)), W, SITES, cfg,
                                        pooler=True, progress=False)
    blocks, pooled = res.layers
    assert (blocks.site, pooled.site) == (S.ALL_LAYERS, S.ALL_LAYERS_POOLER)
    # blocks variant: top, bottom, 2 classes, 2 random per k; pooler variant: top and random
    assert len(blocks.selections) == 2 * 6 and len(pooled.selections) == 2 * 3
    sels, masks = S.selections_and_masks(rankings.global_ranking(W).scores, np.abs(W), cfg, seed=cfg.seed)
    top25 = masks[0]
    assert top25.sum() == rankings.k_count(25, len(SITES) * d)  # k% of the concatenation, not per layer
    order = np.argsort(-np.abs(W).sum(0), kind="stable")[: int(top25.sum())]
    assert set(np.flatnonzero(top25)) == set(order)
    moved = 0
    for lr, pool in ((blocks, False), (pooled, True)):
        for g, sel in enumerate(lr.selections):
            j = next(i for i, s in enumerate(sels) if (s.kind, s.k, s.cls, s.draw) == (sel.kind, sel.k, sel.cls, sel.draw))
            per_site = rankings.split_concat(masks[j], SITES)
            pert = {s: Scale(np.float32(0), positions=np.array([0]), neurons=per_site[s]) for s in SITES}
            if pool:  # the last layer's units zeroed at the pooler output too (no position axis)
                pert["head.hook_cls"] = Scale(np.float32(0), neurons=per_site[SITES[-1]])
            direct = np.asarray(model.forward(batch, pert).logits).argmax(-1)
            np.testing.assert_array_equal(lr.counts[:, g].argmax(-1), direct)
            moved += int((direct != labels).sum())
    assert moved > 0  # some selection changes some prediction: the comparison is not vacuous
    rows = res.controls("accuracy")
    assert {r["site"] for r in rows} == {S.ALL_LAYERS, S.ALL_LAYERS_POOLER}
    assert all(r["draws"] == 2 for r in rows)


def test_grid_point_keys_name_what_a_point_does():
    m = np.zeros((2, 4), np.float32)
    m[0, 1] = m[1, 2] = 1
    none = np.zeros_like(m)
    fill = np.full((2, 4), 0.5, np.float32)
    zeroed = reuse.grid_point_keys({"a": m}, None)
    assert zeroed[0] != zeroed[1]
    assert zeroed == reuse.grid_point_keys({"a": m}, {"a": np.zeros_like(m)})  # zeroing = setting to 0
    assert zeroed == reuse.grid_point_keys({"a": m, "b": none}, None)  # a site left alone adds nothing
    assert zeroed == reuse.grid_point_keys({"a": m}, {"a": np.where(m > 0, 0, fill)})  # unselected values ignored
    assert reuse.grid_point_keys({"a": m}, {"a": fill})[0] != zeroed[0]
    assert reuse.grid_point_keys({"b": m}, None)[0] != zeroed[0]
    assert reuse.grid_point_keys({"a": m}, None, context=b"other inputs")[0] != zeroed[0]


def test_reused_grid_points_equal_a_full_sweep_and_do_not_run_again(model):  # noqa: F811
    """Two probes on one model share the seeded random draws: with `reuse` the second experiment
    runs only its own selections, and every result equals the experiment run whole."""
    batch = model.encode(TEXTS)
    d, C, n = model.config.d_model, model.config.n_classes, len(TEXTS)
    ids = np.arange(n)
    labels = np.asarray(model.forward(batch).logits).argmax(-1)
    rng = np.random.default_rng(3)
    means = {s: rng.normal(size=d).astype(np.float32) for s in SITES}
    cfg = S.SilenceConfig(k_levels=(25.0,), n_random=3, bottom=True, per_class=False, layer_matched=True,
                          mean_ablation=True)
    memo: dict = {}

    def run(W, memo=None):
        return S.concat_silencing_experiment(model, model.params, batch, labels, ids, W, SITES, cfg, pooler=True,
                                             means=means, reuse=memo, progress=False)

    first, second = (rng.normal(size=(C, len(SITES) * d)) for _ in range(2))
    runs = [run(first, memo), run(second, memo), run(first, memo)]
    wholes = [run(first), run(second)]
    G = sum(len(lr.selections) for lr in wholes[0].layers)
    shared = 3 * 2 + 3  # the uniform draws: zeroed and mean-ablated; the pooler variant's
    assert runs[0].perturbed_forwards <= G * n and runs[1].perturbed_forwards <= (G - shared) * n
    assert runs[2].perturbed_forwards == 0 and runs[2].seconds == 0.0
    for got, want in zip(runs, [*wholes, wholes[0]]):
        np.testing.assert_array_equal(got.clean.accuracy, want.clean.accuracy)
        for lg, lw in zip(got.layers, want.layers):
            np.testing.assert_array_equal(lg.counts, lw.counts)
            np.testing.assert_allclose(lg.margin, lw.margin, rtol=0, atol=1e-5)
            np.testing.assert_allclose(lg.kl, lw.kl, rtol=0, atol=1e-6)
    assert not np.array_equal(runs[0].layers[0].margin, runs[1].layers[0].margin)  # other probes, other tops
