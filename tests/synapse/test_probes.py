"""SYNAPSE probes: elastic-net logistic probes trained with Optax (and the stratified split they use)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from apex_jax.data import stratified_split
from apex_jax.synapse import probes as P

SEPARATIONS = (0.0, 1.0, 2.5, 6.0)  # one synthetic "layer" per value: chance .. separable


def blobs(n: int = 1000, d: int = 24, n_classes: int = 3, seed: int = 0):
    """Gaussian blobs sharing labels across layers; tiny spread and an offset, like MiniLM's [CLS]."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    feats = {}
    for i, sep in enumerate(SEPARATIONS):
        centers = rng.normal(size=(n_classes, d)) * sep / np.sqrt(d)
        x = centers[y] + rng.normal(size=(n, d))
        feats[f"layer{i}"] = (1e-3 * x + 3.0).astype(np.float32)
    return feats, y


@pytest.fixture(scope="module")
def trained():
    feats, y = blobs()
    train_idx, test_idx = stratified_split(y, 0.2, seed=0)
    return feats, y, train_idx, test_idx, P.train_probes(feats, y, train_idx, test_idx)


def test_split_is_stratified_and_deterministic():
    y = np.repeat([0, 1, 2], [50, 30, 20])
    tr, te = stratified_split(y, 0.2, seed=3)
    assert np.array_equal(np.sort(np.concatenate([tr, te])), np.arange(100))
    assert np.bincount(y[te]).tolist() == [10, 6, 4]
    tr2, te2 = stratified_split(y, 0.2, seed=3)
    assert np.array_equal(te, te2) and np.array_equal(tr, tr2)
    assert not np.array_equal(te, stratified_split(y, 0.2, seed=4)[1])


def test_accuracy_matches_sklearn(trained):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    feats, y, tr, te, probes = trained
    cfg = probes.config
    # Same objective: sklearn minimizes C·Σ CE + ρ|W|₁ + (1-ρ)/2·|W|², i.e. ours divided by C·n.
    C = 1 / (len(tr) * (cfg.l1 + 2 * cfg.l2))
    ratio = cfg.l1 / (cfg.l1 + 2 * cfg.l2)
    sets = {**feats, P.CONCAT: np.concatenate(list(feats.values()), axis=1)}
    for name, x in sets.items():
        scaler = StandardScaler().fit(x[tr])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # saga's convergence warning at a loose budget
            clf = LogisticRegression(C=C, l1_ratio=ratio, solver="saga", max_iter=300, tol=1e-5)
            clf.fit(scaler.transform(x[tr]), y[tr])
        sk = clf.score(scaler.transform(x[te]), y[te])
        ours = probes.metrics(name).accuracy
        assert abs(ours - sk) <= 0.01, (name, ours, sk)
    acc = [probes.metrics(s).accuracy for s in feats]
    assert acc[0] < 0.45 and acc[-1] > 0.95 and acc == sorted(acc)  # separability shows through
    m = probes.metrics("layer2")
    assert len(m.per_class_f1) == 3 and 0 < m.macro_f1 <= 1 and 0 < m.weighted_f1 <= 1
    assert m.train_accuracy >= m.accuracy - 0.05
    # predict() applies the train standardization to raw features
    hits = probes.predict("layer3", feats["layer3"])[te] == y[te]
    assert hits.mean() == probes.metrics("layer3").accuracy
    concat = np.concatenate(list(feats.values()), axis=1)
    assert np.array_equal(probes.predict(P.CONCAT, feats), probes.predict(P.CONCAT, concat))
    assert (probes.predict(P.CONCAT, feats)[te] == y[te]).mean() == probes.metrics(P.CONCAT).accuracy


def test_vmapped_layers_equal_separate_runs(trained):
    feats, y, tr, te, probes = trained
    for site in ("layer1", "layer3"):
        alone = P.train_probes({site: feats[site]}, y, tr, te, probes.config)
        assert list(alone) == [site]  # a single site has no CONCAT probe
        np.testing.assert_allclose(alone[site].W, probes[site].W, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(alone[site].b, probes[site].b, rtol=1e-5, atol=1e-6)
        assert alone.metrics(site).accuracy == probes.metrics(site).accuracy


def test_mixed_widths_are_grouped(trained):
    feats, y, tr, te, _ = trained
    mixed = {"a": feats["layer3"], "b": feats["layer2"][:, :10]}
    probes = P.train_probes(mixed, y, tr, te)
    assert probes["a"].W.shape == (3, 24) and probes["b"].W.shape == (3, 10)
    assert probes[P.CONCAT].W.shape == (3, 34)
    np.testing.assert_array_equal(probes[P.CONCAT].mean[24:], probes["b"].mean)


def test_save_load_round_trip_and_corruption(trained, tmp_path):
    probes = trained[-1]
    path = probes.save(tmp_path / "probes")
    back = P.ProbeSet.load(path)
    assert list(back) == list(probes) and back.sites == probes.sites
    assert back.config == probes.config and back.n_classes == probes.n_classes
    for s in probes:
        for field in ("W", "b", "mean", "std"):
            np.testing.assert_array_equal(getattr(back[s], field), getattr(probes[s], field))
        assert back.metrics(s) == probes.metrics(s)
    probes.save(path)  # overwriting an existing checkpoint works
    with pytest.raises(FileNotFoundError, match="no probe checkpoint"):
        P.ProbeSet.load(tmp_path / "nowhere")
    for f in path.rglob("*"):  # the arrays (PATH/<step>/state/...), not the metadata
        if f.is_file() and "state" in f.relative_to(path).parts:
            f.write_bytes(b"garbage")
    with pytest.raises(P.CheckpointError, match="incomplete or corrupt"):
        P.ProbeSet.load(path)


def test_bad_inputs(trained):
    feats, y, tr, te, _ = trained
    x = feats["layer0"]
    with pytest.raises(ValueError, match="non-empty dict"):
        P.train_probes({}, y, tr, te)
    with pytest.raises(ValueError, match="non-empty"):
        P.train_probes({"a": x[:0]}, y[:0], tr, te)
    with pytest.raises(ValueError, match=r"labels \[2\] are out of range; valid classes are 0..1"):
        P.train_probes({"a": x}, y, tr, te, n_classes=2)
    with pytest.raises(ValueError, match=r"labels \[-1\] are out of range"):
        P.train_probes({"a": x}, np.where(y == 0, -1, y), tr, te)
    with pytest.raises(ValueError, match="labels have 999 rows but the features have n = 1000"):
        P.train_probes({"a": x}, y[:-1], tr, te)
    with pytest.raises(ValueError, match="disagree on the number of examples"):
        P.train_probes({"a": x, "b": x[:-1]}, y, tr, te)
    with pytest.raises(ValueError, match="share"):
        P.train_probes({"a": x}, y, tr, np.concatenate([te, tr[:1]]))
    with pytest.raises(ValueError, match=r"outside \[0, 1000\)"):
        P.train_probes({"a": x}, y, tr, np.append(te, 1000))
    with pytest.raises(ValueError, match="integer class indices"):
        P.train_probes({"a": x}, y.astype(float), tr, te)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        P.train_probes({"a": x}, y, tr, te, P.ProbeConfig(steps=0))
    with pytest.raises(ValueError, match="features must be"):
        P.ProbeSet(trained[-1].probes, trained[-1].sites, 3, trained[-1].config).predict("layer0", x[:, :5])
