"""APEX analyses: exact at σ = 0, the analyses on hand-made counts, calibration, spec parsing."""

from __future__ import annotations


import numpy as np
import pytest

import apex_jax
from apex_jax.engine.sweep import SweepResult
from apex_jax import apex
from apex_jax.models.loading import resolve
from tests.helpers.tiny_text import tiny_bert_folder

TEXTS = ["what a great one", "the film was awful", "i found it boring", "a lovely cast", "meh"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return apex_jax.load(tiny_bert_folder(tmp_path_factory.mktemp("tiny") / "bert", resolve("minilm")))


def test_sigma_zero_keeps_every_prediction_and_large_sigma_does_not(model):
    batch = model.encode(TEXTS)
    res = apex.run_apex(model, model.params, batch, range(5), [0.0, 0.5, 4.0], draws=8, seed=1,
                        progress=False)
    assert (res.consistency[:, 0] == 1.0).all()
    assert res.consistency[:, 2].mean() < res.consistency[:, 0].mean()
    np.testing.assert_array_equal(res.clean, np.asarray(model.forward(batch).logits).argmax(-1))
    np.testing.assert_allclose(res.probs.sum(-1), 1.0)
    embed = apex.run_apex(model, model.params, batch, range(5), [0.0, 4.0], draws=8,
                          sites=["hook_embed"], progress=False)  # input perturbation
    assert (embed.consistency[:, 0] == 1.0).all() and embed.sites == ["hook_embed"]


def test_analyses_on_hand_made_counts():
    # 3 inputs, σ grid of 3, 3 classes, 10 draws; clean predictions 0, 1, 2.
    counts = np.array([
        [[10, 0, 0], [6, 4, 0], [2, 8, 0]],   # escapes at σ=3 (0.2 < 0.5), moves to class 1
        [[0, 10, 0], [0, 4, 6], [0, 0, 10]],  # escapes at σ=2 (0.4 < 0.5), moves to class 2
        [[0, 0, 10], [0, 0, 10], [1, 0, 9]],  # never escapes
    ])
    sweep = SweepResult(counts, np.array([0, 1, 2]), 10, 0.0, 0, {})
    res = apex.ApexResult(np.array([1.0, 2.0, 3.0]), ["hook_embed"], sweep, 0.5, None)
    np.testing.assert_array_equal(res.escape_sigma(), [3.0, 2.0, np.inf])
    np.testing.assert_array_equal(res.top_transition(1), [1, 2, -1])
    np.testing.assert_array_equal(res.transitions(2), [[2, 8, 0], [0, 0, 10], [1, 0, 9]])
    bias = res.bias(-1)
    np.testing.assert_allclose(bias["class_shares"], [3 / 30, 8 / 30, 19 / 30])
    assert bias["dominant_class"] == 2
    shares = np.array([3, 8, 19]) / 30
    assert bias["entropy"] == pytest.approx(-(shares * np.log(shares)).sum())


def test_relative_sigma_is_calibrated_on_real_tokens(model):
    batch = model.encode(TEXTS)
    rms = apex.calibrate_rms(model, model.params, batch, ["blocks.0.hook_resid_post"])
    x = np.asarray(model.forward(batch, capture=("blocks.0.hook_resid_post",)).captured["blocks.0.hook_resid_post"])
    real = x[batch["attention_mask"] > 0]
    assert rms["blocks.0.hook_resid_post"] == pytest.approx(np.sqrt((real.astype(np.float64) ** 2).mean()), rel=1e-6)


def test_site_and_sigma_specs(model):
    n = model.config.n_layers
    assert apex_jax.parse_sites(model, "resid_post") == [f"blocks.{i}.hook_resid_post" for i in range(n)]
    assert apex_jax.parse_sites(model, "0-1:mlp.hook_post") == ["blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"]
    assert apex_jax.parse_sites(model, "embed") == ["hook_embed"]
    with pytest.raises(ValueError, match="unknown site"):
        apex_jax.parse_sites(model, "blocks.9.hook_resid_post")
    with pytest.raises(ValueError, match="outside"):
        apex_jax.parse_sites(model, "0-7:hook_resid_post")
    np.testing.assert_allclose(apex_jax.parse_sigmas("logspace:0.01:1:3"), [0.01, 0.1, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(apex_jax.parse_sigmas("1,0.5"), np.array([0.5, 1.0], np.float32))
    for bad in ("0.1,-1", "nan", "logspace:1", "a,b"):
        with pytest.raises(ValueError, match="sigma"):
            apex_jax.parse_sigmas(bad)
    with pytest.raises(ValueError, match="draws must be"):
        apex.run_apex(model, model.params, model.encode(TEXTS), range(5), [0.1], draws=0, progress=False)


def test_adaptive_escape_agrees_with_a_fine_grid(model):
    texts = TEXTS + ["the cast is superb", "terrible plot", "honestly a dreadful one", "wonderful"]
    batch, ids = model.encode(texts), np.arange(len(texts))
    lo, hi, res_ = 0.05, 8.0, 0.1
    grid = np.geomspace(lo, hi, 64).astype(np.float32)  # ratio 1.1 between grid points
    fine = apex.run_apex(model, model.params, batch, ids, grid, draws=16, seed=2, progress=False)
    adaptive = apex.adaptive_escape(model, model.params, batch, ids, lo, hi, resolution=res_,
                                    draws=16, seed=2, progress=False)
    g, a = fine.escape_sigma(), adaptive.escape_sigma
    # Bisection finds *a* threshold crossing; the grid reports the first. They must agree where
    # the consistency curve crosses the threshold at most once (a random tiny model also has
    # inputs whose curve dips below and comes back; those are excluded and counted).
    below = fine.consistency < fine.threshold
    single = np.abs(np.diff(below.astype(int), axis=1)).sum(1) <= 1
    np.testing.assert_array_equal(np.isinf(g)[single], np.isinf(a)[single])
    ok = np.isfinite(g) & single
    assert ok.sum() >= 3, (g, single)  # the test needs inputs that escape inside the bracket
    # Same noise (common random numbers): the bisection's bracket contains the grid's escape
    # point up to one grid step on each side.
    step = grid[1] / grid[0]
    assert (g[ok] <= a[ok] * step * (1 + 1e-6)).all() and (g[ok] >= adaptive.lower[ok] / step).all()
    assert (a[ok] / np.maximum(adaptive.lower[ok], lo) <= 1 + res_ + 1e-6).all()
    assert adaptive.perturbed_forwards < fine.sweep.perturbed_forwards / 3


def test_sequential_stopping_saves_draws_and_keeps_clear_decisions(model):
    texts = TEXTS + ["the cast is superb", "terrible plot", "honestly a dreadful one", "wonderful"]
    batch, ids = model.encode(texts), np.arange(len(texts))
    kw = dict(resolution=0.2, draws=64, seed=2, progress=False)
    full = apex.adaptive_escape(model, model.params, batch, ids, 0.05, 8.0, **kw)
    seq = apex.adaptive_escape(model, model.params, batch, ids, 0.05, 8.0, stage_draws=16, delta=0.05, **kw)
    assert seq.perturbed_forwards < full.perturbed_forwards
    # With these margins nearly every early stop is far from the threshold: results agree.
    assert (np.isinf(seq.escape_sigma) == np.isinf(full.escape_sigma)).mean() >= 0.8
    with pytest.raises(ValueError, match="stage_draws must divide"):
        apex.adaptive_escape(model, model.params, batch, ids, 0.05, 8.0, stage_draws=5, **kw)


def test_noise_perturbation_is_a_value():
    """The engine keys compiled kernels on the perturbation: equal site lists must be equal."""
    a, b = apex.NoisePerturbation(("hook_embed",)), apex.NoisePerturbation(("hook_embed",))
    assert a == b and hash(a) == hash(b) and a != apex.NoisePerturbation(("blocks.0.hook_resid_post",))


def test_run_folder_reports_margin_and_kl(model, tmp_path):
    """samples.csv, sigmas.csv and summary.json carry the engine's continuous scores: the
    clean margin, mean margin and mean KL per σ (0 and the clean margin at σ = 0)."""
    import csv
    import json

    from apex_jax.data import Dataset

    data = Dataset("tiny", "text", list(TEXTS), np.array([1, 0, 0, 1, 0], np.int32), ("neg", "pos"))
    out = apex.apex_run(model, data, tmp_path / "run", sigmas=[0.0, 2.0], draws=4, progress=False)
    res = out["result"]
    rows = list(csv.DictReader(open(tmp_path / "run" / "samples.csv")))
    for j, r in enumerate(rows):
        # the tiny random model's logits are close together: KL of order 1e-5 at σ = 2
        assert float(r["kl_sigma_0"]) < 1e-8 < float(r["kl_sigma_2"])
        assert float(r["margin_sigma_0"]) == pytest.approx(float(r["clean_margin"]), rel=1e-5, abs=1e-7)
        assert float(r["clean_margin"]) > 0  # the clean prediction's own margin
        # cells hold 6 significant digits
        assert float(r["kl_sigma_2"]) == pytest.approx(res.mean_kl[j, 1], rel=1e-5)
        assert float(r["margin_sigma_2"]) == pytest.approx(res.mean_margin[j, 1], rel=1e-5)
    curves = list(csv.DictReader(open(tmp_path / "run" / "sigmas.csv")))
    assert [float(c["sigma"]) for c in curves] == [0.0, 2.0]
    assert float(curves[1]["mean_kl"]) == pytest.approx(res.mean_kl[:, 1].mean(), rel=1e-5)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())["results"]
    np.testing.assert_allclose(summary["mean_margin"], res.mean_margin.mean(0), rtol=1e-6)
    np.testing.assert_allclose(summary["mean_kl"], res.mean_kl.mean(0), rtol=1e-6)
    assert summary["clean_margin"] == pytest.approx(res.clean_margin.mean(), rel=1e-6)
    assert summary["mean_kl"][1] > summary["mean_kl"][0]


def test_escape_histogram_labels_its_log_axis_at_the_grid_sigmas():
    """A log axis spanning under a decade gets matplotlib minor-tick labels that overlap; the
    histogram labels the grid's σ values in range instead (thinned to at most 7), nothing else."""
    from apex_jax.apex.plots import _grid_ticks
    from apex_jax.fileio import pyplot

    plt = pyplot()
    fig, ax = plt.subplots()
    ax.hist([0.6, 1.5, 3.0], bins=np.logspace(np.log10(0.5), np.log10(3.5), 5))
    ax.set_xscale("log")
    _grid_ticks(ax, np.array([0.02, 0.05, 0.1, 0.5, 1, 2, 4], np.float32), 0.5, 3.5)
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels() if 0.5 <= t.get_position()[0] <= 3.5] == ["0.5", "1", "2"]
    assert all(t.get_text() == "" for t in ax.get_xticklabels(minor=True))
    many = np.geomspace(0.01, 10, 20)
    ax2 = fig.add_subplot(2, 1, 2)
    ax2.set_xscale("log")
    _grid_ticks(ax2, many, 0.01, 10)
    assert len(ax2.xaxis.get_major_locator()()) == 7
    plt.close(fig)


def test_apex_run_refuses_a_folder_holding_other_settings(model, tmp_path):
    """The Python run layer gives the command line's guarantee: a folder holding a run with
    other settings is refused with RunExistsError (the old run untouched) unless overwrite."""
    import json

    from apex_jax.data import Dataset
    from apex_jax.errors import RunExistsError

    data = Dataset("tiny", "text", list(TEXTS), np.array([1, 0, 0, 1, 0], np.int32), ("neg", "pos"))
    out = tmp_path / "run"
    apex.apex_run(model, data, out, sigmas=[0.0, 2.0], draws=4, progress=False, log=None)
    before = (out / "samples.csv").read_bytes()
    with pytest.raises(RunExistsError, match=r"draws: 4 -> 3.*overwrite"):
        apex.apex_run(model, data, out, sigmas=[0.0, 2.0], draws=3, progress=False, log=None)
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "complete" and manifest["settings"]["draws"] == 4
    assert (out / "samples.csv").read_bytes() == before
    apex.apex_run(model, data, out, sigmas=[0.0, 2.0], draws=4, progress=False, log=None)  # same: resumes
    apex.apex_run(model, data, out, sigmas=[0.0, 2.0], draws=3, progress=False, log=None, overwrite=True)
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "complete" and manifest["settings"]["draws"] == 3
    assert manifest["settings"]["model"] == "<in-memory model>" and manifest["settings"]["data"] == "tiny"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "apex" and summary["settings"]["draws"] == 3 and "label_space" in summary
