"""Noise probe: exact at σ = 0, deterministic across chunking, order and batching."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import apex_jax  # noqa: E402
from apex_jax import noise_probe  # noqa: E402
from apex_jax.models.loading import resolve  # noqa: E402
from tiny_text import tiny_bert_folder  # noqa: E402

TEXTS = ["what a great one", "the film was awful", "i found it boring", "a lovely cast", "meh"]
SIGMAS = [0.0, 0.3, 1.0, 3.0]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return apex_jax.load(tiny_bert_folder(tmp_path_factory.mktemp("tiny") / "bert", resolve("minilm")))


def _run(model, texts, ids, **kw):
    batch = model.encode(texts, pad_to_multiple_of=16)  # same padded length in every call
    return noise_probe.flip_rates(model, model.params, batch, ids, SIGMAS, draws=6, seed=3, **kw)


def test_sigma_zero_never_flips_and_large_sigma_does(model):
    clean, rates = _run(model, TEXTS, range(5), relative=True)
    assert rates.shape == (4, 5)
    assert (rates[0] == 0).all()
    assert rates[-1].mean() > rates[1].mean()
    logits = model.forward(model.encode(TEXTS)).logits
    np.testing.assert_array_equal(clean, np.asarray(logits).argmax(-1))


def test_chunking_order_and_batching_do_not_change_results(model):
    ids = np.array([10, 11, 12, 13, 14])
    _, base = _run(model, TEXTS, ids, draws_per_chunk=6)
    _, chunked = _run(model, TEXTS, ids, draws_per_chunk=3)  # units per call: 3, then a padded chunk
    np.testing.assert_array_equal(base, chunked)
    perm = np.array([3, 0, 4, 1, 2])
    _, permuted = _run(model, [TEXTS[i] for i in perm], ids[perm])
    np.testing.assert_array_equal(base[:, perm], permuted)
    _, alone = _run(model, TEXTS[2:3], ids[2:3])
    np.testing.assert_array_equal(base[:, 2:3], alone)


def test_noise_probe_rejects_bad_settings(model):
    batch = model.encode(TEXTS)
    with pytest.raises(ValueError, match="sigmas must be"):
        noise_probe.flip_rates(model, model.params, batch, range(5), [0.1, -1.0])
    with pytest.raises(ValueError, match="sigmas must be"):
        noise_probe.flip_rates(model, model.params, batch, range(5), [float("nan")])
    with pytest.raises(ValueError, match="draws must be"):
        noise_probe.flip_rates(model, model.params, batch, range(5), [0.1], draws=0)
