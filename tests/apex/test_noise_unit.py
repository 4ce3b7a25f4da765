"""The unit of relative σ (`noise_unit`): site-rms, dim-rms and median-abs.

A tiny random Llama (pre-LN: the residual stream carries the embedding) gets one planted huge
residual dimension (one embedding column × 1000, as the "massive activations" of real LMs): the
site RMS is then dominated by it, dim-rms gives every dimension its own RMS, median-abs the median
|x|; each scale is checked against numpy on the captured activations. Noise under dim-rms has a
per-dimension std of σ × that dimension's RMS; the unit is recorded in run.json / summary.json
and enters the sweep fingerprint.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

import apex_jax
from apex_jax import apex
from apex_jax.apex.analysis import _noise, _noise_grid
from apex_jax.engine import checkpoints_in, run_sweep, sweep_inputs
from apex_jax.errors import InputError
from apex_jax.models.loading import resolve
from apex_jax.settings import ApexSettings
from tests.helpers.tiny_text import tiny_bert_folder

D, BIG, PLANT = 16, 1000.0, 5
CFG = dict(model_type="llama", vocab_size=32, hidden_size=D, num_hidden_layers=2, num_attention_heads=2,
           num_key_value_heads=1, intermediate_size=32, max_position_embeddings=64)
SITES = ["hook_embed", "blocks.0.hook_resid_post", "blocks.1.attn.hook_z", "head.hook_cls"]


@pytest.fixture(scope="module")
def planted():
    model = apex_jax.create(CFG, num_labels=3)
    params = jax.tree.map(lambda a: a, model.params)
    emb = np.asarray(params["embed"]["embedding"]).copy()
    emb[:, PLANT] *= BIG  # one massive residual dimension on every token
    params["embed"]["embedding"] = emb
    model = model.replace(params)
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 32, size=(6, 12))
    mask = np.ones((6, 12), np.int32)
    mask[1, 8:] = 0
    mask[4, 5:] = 0  # padding must not enter the scales
    return model, {"input_ids": ids, "attention_mask": mask}


def _real(model, batch, site):
    x = np.asarray(model.forward(batch, capture=(site,)).captured[site], np.float64)
    return x[batch["attention_mask"] > 0] if x.shape[:2] == batch["attention_mask"].shape else x


def test_site_rms_is_dominated_by_the_planted_dimension(planted):
    model, batch = planted
    site = "blocks.0.hook_resid_post"
    rms = apex.calibrate_scale(model, model.params, batch, [site], "site-rms")[site]
    x = _real(model, batch, site)
    assert rms == pytest.approx(np.sqrt(np.mean(x ** 2)), rel=1e-6)
    planted_rms = np.sqrt(np.mean(x[:, PLANT] ** 2))
    # all but the planted dimension together are a tiny share of the site RMS
    assert rms == pytest.approx(planted_rms / np.sqrt(D), rel=1e-3)
    others = np.sqrt(np.mean(np.delete(x, PLANT, axis=1) ** 2, axis=0))
    assert others.max() < rms / 40  # σ = 0.025 of the site RMS is already each other dimension's full size


@pytest.mark.parametrize("site, shape", [("hook_embed", (1, D)), ("blocks.0.hook_resid_post", (1, D)),
                                         ("blocks.1.attn.hook_z", (1, 2, D // 2)), ("head.hook_cls", (D,))])
def test_dim_rms_is_each_dimensions_rms_over_real_tokens(planted, site, shape):
    model, batch = planted
    scale = apex.calibrate_scale(model, model.params, batch, [site], "dim-rms")[site]
    assert scale.shape == shape
    x = _real(model, batch, site)  # [tokens, *features] ([n, d_model] at head.hook_cls)
    np.testing.assert_allclose(scale.reshape(x.shape[1:]), np.sqrt(np.mean(x ** 2, axis=0)), rtol=1e-6)
    if shape == (1, D):  # residual sites: the planted dimension is huge, the others keep their own size
        flat = scale.reshape(-1)
        assert flat[PLANT] > 100 * np.delete(flat, PLANT).max()


@pytest.mark.parametrize("site", SITES)
def test_median_abs_is_numpys_median(planted, site):
    model, batch = planted
    med = apex.calibrate_scale(model, model.params, batch, [site], "median-abs")[site]
    assert med == pytest.approx(np.median(np.abs(_real(model, batch, site))), rel=1e-6)


def test_dim_rms_noise_has_per_dimension_std_sigma_times_dim_rms(planted):
    model, _ = planted
    rng = np.random.default_rng(1)
    batch = {"input_ids": rng.integers(3, 32, size=(16, 48)), "attention_mask": np.ones((16, 48), np.int32)}
    site, sigma = "hook_embed", 0.3
    scale = apex.calibrate_scale(model, model.params, batch, [site], "dim-rms")[site]
    pert = apex.DimNoisePerturbation((site,))({"sigma": np.float32(sigma), "scale": (scale.astype(np.float32),)},
                                              jax.random.key(3))
    clean = _real(model, batch, site)
    noisy = np.asarray(model.forward(batch, pert, capture=(site,)).captured[site], np.float64).reshape(clean.shape)
    std = (noisy - clean).std(0)  # 768 tokens per dimension
    np.testing.assert_allclose(std / (sigma * scale[0]), 1.0, atol=0.12)
    assert std[PLANT] > 100 * np.delete(std, PLANT).max()  # the unit follows each dimension's size


def test_units_refused_where_they_do_not_apply(planted):
    model, batch = planted
    with pytest.raises(InputError, match="noise_unit must be one of site-rms, dim-rms, median-abs; got 'rms'"):
        apex.run_apex(model, batch, [0.1], draws=2, noise_unit="rms", progress=False)
    with pytest.raises(InputError, match="but σ is absolute"):
        apex.run_apex(model, batch, [0.1], draws=2, noise_unit="dim-rms", relative=False, progress=False)
    with pytest.raises(InputError, match="blocks.0.attn.hook_pattern is an attention pattern"):
        apex.calibrate_scale(model, model.params, batch, ["blocks.0.attn.hook_pattern"], "dim-rms")
    with pytest.raises(InputError, match="--noise-unit must be one of site-rms, dim-rms, median-abs"):
        ApexSettings(noise_unit="dim")
    with pytest.raises(InputError, match="--noise-unit dim-rms scales relative σ, but --absolute"):
        ApexSettings(noise_unit="dim-rms", absolute=True)


def test_units_give_other_fingerprints_and_site_rms_keeps_its_tag(planted, tmp_path):
    model, batch = planted
    sites = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    prints, curves = {}, {}
    for unit in apex.NOISE_UNITS:
        res = apex.run_apex(model, batch, [0.0, 0.05, 2.0], sites=sites, draws=4, noise_unit=unit,
                            run_dir=tmp_path / unit, progress=False)
        (info,) = checkpoints_in(tmp_path / unit)
        prints[unit], curves[unit] = info.fingerprint, res.consistency
        assert res.noise_unit == unit and (res.consistency[:, 0] == 1).all()
        assert ("noise_unit" in res.sweep.settings["tag"]) == (unit != "site-rms")  # old fingerprints kept
    assert len(set(prints.values())) == 3
    # the default is site-rms, and site_rms is filled only under it
    default = apex.run_apex(model, batch, [0.0, 0.05, 2.0], sites=sites, draws=4, progress=False)
    np.testing.assert_array_equal(default.consistency, curves["site-rms"])
    assert default.site_rms is not None and default.noise_unit == "site-rms"


def test_the_unit_is_recorded_in_run_json_and_summary(tmp_path_factory):
    folder = tiny_bert_folder(tmp_path_factory.mktemp("tiny") / "bert", resolve("minilm"))
    out = tmp_path_factory.mktemp("runs") / "apex"
    s = apex.apex_run(str(folder), ["a fine film", "a dull film", "it was long"], out, sigmas=[0.1, 1.0], draws=4,
                      noise_unit="dim-rms", progress=False, log=None)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["noise_unit"] == "dim-rms" == s["settings"]["noise_unit"]
    assert summary["settings"]["site_rms"] is None
    scale = summary["settings"]["noise_scale"]["blocks.0.hook_resid_post"]
    assert scale["shape"] == [1, 16] and 0 < scale["min"] <= scale["median"] <= scale["max"]
    assert "dim-rms" in (out / "run.json").read_text()


def test_dim_rms_per_input_grid_matches_the_shared_grid(planted):
    # adaptive_escape's form: one σ per input ([G, n] grid leaves, scales [G, n, *features])
    model, batch = planted
    sites, sigmas = ["hook_embed", "blocks.1.hook_resid_post"], np.array([0.05, 2.0])
    res = apex.run_apex(model, batch, sigmas, sites=sites, draws=4, noise_unit="dim-rms", progress=False)
    swept = sweep_inputs(model, batch)
    perturb, scale, _, tag = _noise(model, model.params, swept, sites, True, "dim-rms")
    n = len(batch["input_ids"])
    grid = _noise_grid(np.repeat(sigmas[:, None], n, 1), scale)
    assert grid["scale"][0].shape == (2, n, 1, D)
    per_input = run_sweep(model, model.params, swept, np.arange(n), perturb, grid, sites=sites, draws=4, seed=0,
                          tag=tag, common_noise=True, per_input_grid=True, progress=False)
    np.testing.assert_array_equal(per_input.counts, res.sweep.counts)
    assert res.consistency[:, 1].mean() < 1  # σ = 2 moves some draws: the comparison is not vacuous
