"""SYNAPSE interventions: engine sweeps equal direct masked forwards; metrics; random control;
head manipulations equal forwards with the manipulated model and change nothing at zero."""

from __future__ import annotations


import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

import apex_jax
from apex_jax.interventions import Replace, Scale
from apex_jax.synapse import attacks, silencing
from apex_jax.models.loading import resolve
from tests.helpers.tiny_text import tiny_bert_folder

TEXTS = ["what a great one", "the film was awful", "i found it boring", "a lovely cast", "meh",
         "honestly a brilliant and wonderful film with a superb cast", "this is a dreadful one"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The tiny random BERT with a sharpened, centred classifier, so that clean predictions are
    mixed and interventions move them (a random head predicts one class everywhere)."""
    m = apex_jax.load(tiny_bert_folder(tmp_path_factory.mktemp("tiny") / "bert", resolve("minilm"), seed=3))
    head = m.params["head"]["classifier"]
    kernel = np.asarray(head["kernel"]) * 30
    h = np.asarray(m.forward(m.encode(TEXTS), capture=("head.hook_cls",)).captured["head.hook_cls"])
    z = h @ kernel
    bias = np.array([0.0, -np.median(z[:, 1] - z[:, 0]) - 1e-3], np.float32)
    params = {**m.params, "head": {**m.params["head"], "classifier": {"kernel": kernel, "bias": bias}}}
    return m.replace(params)


def _masks(d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = (rng.random((6, d)) < 0.6).astype(np.float32)
    m[0] = 0  # silence nothing
    m[1] = 1  # silence everything
    return m


@pytest.mark.parametrize("site,positions,mode", [
    ("blocks.0.hook_resid_post", "cls", "zero"),
    ("hook_embed", "all", "zero"),
    ("blocks.0.hook_resid_post", "all", "mean"),
])
def test_engine_equals_direct_masked_forward(model, site, positions, mode):
    batch = model.encode(TEXTS)
    masks = _masks(model.config.d_model)
    means = {site: np.linspace(-1, 1, model.config.d_model).astype(np.float32)}
    res = silencing.mask_sweep(model, model.params, batch, np.arange(len(TEXTS)), site, masks,
                               positions=positions, mode=mode, means=means, grid_per_step=4,
                               inputs_per_step=4, units_per_call=3, progress=False)
    preds = silencing.predictions(res)
    clean = np.asarray(model.forward(batch).logits).argmax(-1)
    np.testing.assert_array_equal(res.clean, clean)
    np.testing.assert_array_equal(preds[:, 0], clean)  # silencing zero neurons = clean
    pos = np.array([0]) if positions == "cls" else None
    logit_gaps = []
    for g, m in enumerate(masks):
        iv = (Scale(np.float32(0), positions=pos, neurons=m) if mode == "zero"
              else Replace(means[site], positions=pos, neurons=m))
        logits = np.asarray(model.forward(batch, {site: iv}).logits)
        top2 = np.sort(logits, 1)[:, -2:]
        logit_gaps.append((top2[:, 1] - top2[:, 0]).min())
        np.testing.assert_array_equal(preds[:, g], logits.argmax(-1), err_msg=f"mask {g}")
    # no near-ties (exact ties, e.g. every embedding zeroed, resolve alike): the check is meaningful
    assert all(gap == 0 or gap > 1e-5 for gap in logit_gaps), logit_gaps
    assert (preds != clean[:, None]).any()  # some mask changes some prediction
    assert res.counts.sum() == len(TEXTS) * len(masks)


def test_grid_per_step_and_chunking_do_not_change_predictions(model):
    batch = model.encode(TEXTS)
    masks = _masks(model.config.d_model, seed=1)
    runs = [silencing.predictions(silencing.mask_sweep(
        model, model.params, batch, np.arange(len(TEXTS)), "blocks.0.hook_resid_post", masks,
        grid_per_step=gs, units_per_call=upc, progress=False)) for gs, upc in ((4, 1), (4, 5))]
    np.testing.assert_array_equal(runs[0], runs[1])


def test_mask_sweep_errors(model):
    batch = model.encode(TEXTS[:2])
    d = model.config.d_model
    with pytest.raises(ValueError, match="unknown site"):
        silencing.mask_sweep(model, model.params, batch, [0, 1], "blocks.9.hook_resid_post", np.zeros((1, d)))
    with pytest.raises(ValueError, match="neurons"):
        silencing.mask_sweep(model, model.params, batch, [0, 1], "hook_embed", np.zeros((1, d + 1)))
    with pytest.raises(ValueError, match="positions"):
        silencing.mask_sweep(model, model.params, batch, [0, 1], "hook_embed", np.zeros((1, d)), positions="first")
    with pytest.raises(ValueError, match="means"):
        silencing.mask_sweep(model, model.params, batch, [0, 1], "hook_embed", np.zeros((1, d)), mode="mean")


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 50)
    preds = np.stack([labels, rng.integers(0, 4, 50), np.where(rng.random(50) < 0.7, labels, 3),
                      np.zeros(50, int)], 1)
    m = silencing.metrics(labels, preds, 4)
    for g in range(preds.shape[1]):
        p = preds[:, g]
        assert m.accuracy[g] == pytest.approx(accuracy_score(labels, p))
        assert m.macro_f1[g] == pytest.approx(f1_score(labels, p, average="macro", labels=range(4), zero_division=0))
        assert m.weighted_f1[g] == pytest.approx(f1_score(labels, p, average="weighted", zero_division=0))
        np.testing.assert_allclose(m.class_f1[g], f1_score(labels, p, average=None, labels=range(4), zero_division=0))
    np.testing.assert_allclose(m.pred_share.sum(1), 1.0)
    with pytest.raises(ValueError, match="lie in"):
        silencing.metrics(labels, preds, 3)


def test_random_control_and_curve_summary():
    r = np.array([0.1, 0.2, 0.3, 0.4])
    rc = silencing.random_control(0.5, r)
    assert rc["z"] == pytest.approx((0.5 - 0.25) / np.std(r, ddof=1))
    assert rc["p"] == pytest.approx(1 / 5)  # no random draw reaches the score
    assert silencing.random_control(0.2, r)["p"] == pytest.approx(4 / 5)
    assert silencing.random_control(0.3, np.full(3, 0.3))["z"] == 0.0
    s = silencing.curve_summary(np.array([0, 50, 100]), np.array([0.0, 0.2, 0.4]), 0.8, np.array([0.8, 0.6, 0.2]))
    assert s["area_under_drop"] == pytest.approx(0.2)
    assert s["k_at_half_score"] == pytest.approx(50 + 50 * (0.6 - 0.4) / (0.6 - 0.2))
    assert silencing.curve_summary(np.array([5, 10]), np.zeros(2), 1.0, np.ones(2))["k_at_half_score"] is None


def test_head_manipulations(model):
    batch = model.encode(TEXTS)
    out = model.forward(batch, capture=("head.hook_cls",))
    h, clean_logits = np.asarray(out.captured["head.hook_cls"]), np.asarray(out.logits)
    kernel, bias = attacks.head_weights(model.params)
    np.testing.assert_allclose(attacks.apply_head(h, kernel, bias), clean_logits, atol=1e-5)
    before = np.array(model.params["head"]["classifier"]["kernel"])
    k, b = attacks.column_push(kernel, bias, 1, [0, 3, 5], [0.0, 2.0])
    np.testing.assert_array_equal(k[0], kernel)  # Δ = 0 changes nothing
    np.testing.assert_allclose(k[1].sum(1), kernel.sum(1), atol=1e-5)  # balanced: totals kept
    new = attacks.manipulated_params(model.params, k[1], b[1])
    np.testing.assert_allclose(np.asarray(model.jitted()(new, batch).logits),
                               attacks.apply_head(h, k[1], b[1]), atol=1e-5)
    np.testing.assert_array_equal(np.array(model.params["head"]["classifier"]["kernel"]), before)  # not in place
    # the smallest bias that redirects an input does redirect it; slightly less does not. Exact to
    # the ulp, so the logits come from the same function the attacks are evaluated with (the
    # compiled forward may differ from numpy's head by an ulp), as in attacks.attack_experiment
    clean_logits = attacks.apply_head(h, kernel, bias)
    clean_pred = clean_logits.argmax(1)
    target = int(np.bincount(clean_pred, minlength=clean_logits.shape[1]).argmin())  # inputs to redirect
    assert (clean_pred != target).any()
    need = attacks.bias_needed(clean_logits, target)
    for i in np.flatnonzero(clean_pred != target):
        z = clean_logits[i].copy()
        z[target] += need[i]
        assert z.argmax() == target
        z[target] -= max(need[i] * 1e-3, 1e-6)
        assert z.argmax() != target
    shares = attacks.bias_to_redirect(clean_logits, target, [0.0, 1.0])
    kb, bb = attacks.logit_bias(kernel, bias, target, shares)
    st = attacks.redirect_stats(attacks.apply_head(h, kb, bb), clean_logits.argmax(1), np.zeros(len(TEXTS), int), target)
    assert st["target_share"][1] == 1.0 and st["flip_to_target"][0] == 0.0 and st["flip_to_target"][1] == 1.0
    # every input already predicts the target: the flip rate is undefined (NaN), not 0
    st = attacks.redirect_stats(attacks.apply_head(h, kb, bb), np.full(len(TEXTS), target), clean_pred, target)
    assert np.isnan(st["flip_to_target"]).all()
    # bit flips: flipping twice restores; exponent bit 30 makes small weights huge
    w = np.array([0.5, -0.25, 0.75, 1.5, 3.0], np.float32)
    np.testing.assert_array_equal(attacks.flip_bits(attacks.flip_bits(w, 30), 30), w)
    flipped = attacks.flip_bits(w, 30)
    np.testing.assert_array_equal(flipped[:3].astype(np.float64), w[:3].astype(np.float64) * 2.0**128)  # × 2^128
    assert not np.isfinite(flipped[3]) and 0 < flipped[4] < 2.0**-125  # >= 2: tiny
    kf, _ = attacks.bit_flip(kernel, bias, 1, [2, 4], [0, 2])
    np.testing.assert_array_equal(kf[0], kernel)
    assert (kf[1] != kernel).sum() == 2
    with pytest.raises(ValueError, match="target"):
        attacks.logit_bias(kernel, bias, 5, [1.0])


def test_joint_silencing_of_all_layers_equals_direct_forward(model):
    from apex_jax.synapse import silencing as synapse

    batch = model.encode(TEXTS)
    d = model.config.d_model
    rng = np.random.default_rng(5)
    sites = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    scores = {s: (rng.random(d), None) for s in sites}
    cfg = synapse.SilenceConfig(k_levels=(25.0, 75.0), n_random=2, bottom=False, per_class=False, joint=True)
    res = synapse.silencing_experiment(model, model.params, batch, np.zeros(len(TEXTS), int),
                                       np.arange(len(TEXTS)), scores, cfg, progress=False)
    (layer,) = res.layers
    assert layer.site == "joint" and len(layer.selections) == 2 * 3
    grids = {s: synapse.selections_and_masks(scores[s][0], None, cfg, seed=i)[1] for i, s in enumerate(sites)}
    for g in range(len(layer.selections)):
        pert = {s: Scale(np.float32(0), positions=np.array([0]), neurons=grids[s][g]) for s in sites}
        direct = np.asarray(model.forward(batch, pert).logits).argmax(-1)
        np.testing.assert_array_equal(layer.counts[:, g].argmax(-1), direct)
    assert res.controls()[0]["draws"] == 2


def test_bias_to_redirect_is_the_needed_quantile_plus_4_ulps():
    z = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 0.5], [1.0, 1.0]], np.float32)  # target 1
    need = attacks.bias_needed(z, 1)
    assert need[1] == 0 and need[0] == pytest.approx(2.0) and need[2] == pytest.approx(2.5)
    assert need[3] == np.nextafter(np.float32(1), np.float32(2)) - 1  # a tie goes to class 0: one ulp
    b = attacks.bias_to_redirect(z, 1, [0.0, 1 / 3, 2 / 3, 1.0])  # over the 3 inputs not at 1
    slack = 4 * np.spacing(np.float32(3.0))  # 4 ulps of the largest |logit|
    np.testing.assert_allclose(b, [0.0, need[3] + slack, 2.0 + slack, 2.5 + slack], rtol=0, atol=3e-7)
    assert (b[1:] > [need[3], 2.0, 2.5]).all()
    for share, bias in zip([1 / 3, 2 / 3, 1.0], b[1:]):
        moved = ((z + np.array([0, bias], np.float32)).argmax(1) == 1)[[0, 2, 3]].mean()
        assert moved >= share - 1e-9


def test_mask_perturbation_is_a_value():
    """The engine keys compiled kernels on the perturbation: equal structure must be equal."""
    a = silencing.MaskPerturbation(("blocks.0.hook_resid_post",), "cls", "zero")
    assert a == silencing.MaskPerturbation(("blocks.0.hook_resid_post",), "cls", "zero")
    assert hash(a) == hash(silencing.MaskPerturbation(("blocks.0.hook_resid_post",), "cls", "zero"))
    assert a != silencing.MaskPerturbation(("blocks.0.hook_resid_post",), "all", "zero")


def test_silencing_scores_and_positive_controls_equal_direct_forwards(model):
    """Attribution-ranked and mean-ablated selections beside the probe's, one sweep per site:
    every selection's predictions, label margins and KL(clean ‖ silenced) equal a direct
    forward with that intervention (zero or the data mean at [CLS]); controls compare each
    selection with random masks of its own ablation, on accuracy, margin and KL."""
    from apex_jax.synapse import rankings
    from apex_jax.synapse import silencing as synapse
    from apex_jax.synapse.features import extract_cls

    batch = model.encode(TEXTS)
    site, n, d = "blocks.0.hook_resid_post", len(TEXTS), model.config.d_model
    clean_logits = np.asarray(model.forward(batch).logits, np.float64)
    labels = clean_logits.argmax(1)
    labels[:2] = 1 - labels[:2]  # two wrong labels: their clean margins are negative
    attribution = rankings.attribution_ranking(model, model.params, batch, site, target=labels).scores
    means = {site: extract_cls(model, model.params, batch, [site])[site].mean(0)}
    probe = np.random.default_rng(1).random(d)  # a probe that knows nothing
    cfg = synapse.SilenceConfig(k_levels=(25.0, 50.0), n_random=3, bottom=False, per_class=False,
                                attribution=True, mean_ablation=True)
    res = synapse.silencing_experiment(model, model.params, batch, labels, np.arange(n), {site: (probe, None)},
                                       cfg, means=means, attribution={site: attribution}, progress=False)
    (lr,) = res.layers
    kinds = [(s.kind, s.ablation) for s in lr.selections if s.k == 25.0]
    assert kinds == [("top", "zero"), ("attribution", "zero")] + [("random", "zero")] * 3 + [
        ("top", "mean"), ("attribution", "mean")] + [("random", "mean")] * 3
    _, masks = synapse.selections_and_masks(probe, None, cfg, seed=0, attribution=attribution)
    logp = clean_logits - np.log(np.exp(clean_logits).sum(1, keepdims=True))
    rows = np.arange(n)
    for g, sel in enumerate(lr.selections):
        iv = (Replace(means[site], positions=np.array([0]), neurons=masks[g]) if sel.ablation == "mean"
              else Scale(np.float32(0), positions=np.array([0]), neurons=masks[g]))
        z = np.asarray(model.forward(batch, {site: iv}).logits, np.float64)
        np.testing.assert_array_equal(lr.counts[:, g].argmax(-1), z.argmax(1))
        other = z.copy()
        other[rows, labels] = -np.inf
        np.testing.assert_allclose(lr.margin[:, g], z[rows, labels] - other.max(1), rtol=1e-4, atol=1e-4)
        logq = z - np.log(np.exp(z).sum(1, keepdims=True))
        np.testing.assert_allclose(lr.kl[:, g], (np.exp(logp) * (logp - logq)).sum(1), rtol=1e-3, atol=1e-6)
    assert (res.clean_margin[:2] < 0).all() and (res.clean_margin[2:] > 0).all()
    for score in ("accuracy", "margin", "kl"):
        rows_ = res.controls(score)
        assert len(rows_) == 2 * 4 and all(r["draws"] == 3 for r in rows_)
    for g, sel in enumerate(lr.selections):  # the attribution selections are its own top-k%
        if sel.kind == "attribution":
            np.testing.assert_array_equal(masks[g], rankings.top_k(attribution, sel.k))
    kl = {(r["selection"], r["ablation"], r["k_percent"]): r for r in res.controls("kl")}
    row = kl["attribution", "zero", 50.0]  # the KL's "drop" is its increase over the clean 0
    assert row["clean"] == 0 and row["value"] == row["drop"] == pytest.approx(lr.kl[:, 1 + 10].mean())
    table = res.table()
    assert {"ablation", "mean_margin", "mean_kl"} <= set(table[0])
    with pytest.raises(ValueError, match="mode='zero'"):
        synapse.SilenceConfig(mode="noise", mean_ablation=True).check(2)
    with pytest.raises(ValueError, match="attribution scores"):
        synapse.silencing_experiment(model, model.params, batch, labels, np.arange(n), {site: (probe, None)},
                                     cfg, means=means, progress=False)
