"""SYNAPSE [CLS] features: extraction equals a direct capture, fixed-shape chunks, errors, and
compiled readers shared across parameters and inputs of one shape."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from apex_jax.batching import iter_chunks
from apex_jax.synapse import features as F
from apex_jax.synapse import rankings as R

TEXTS = [
    "great", "the film was awful one", "what a wonderful and superb and lovely film this is, "
    "honestly the best thing i have seen in years and years and years of watching films",
    "boring", "i found it dreadful", "this is a brilliant one", "horrible", "lovely cast",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import apex_jax
    from tests.helpers import minilm_folder
    from tests.helpers.tiny_text import tiny_bert_folder

    folder = tiny_bert_folder(tmp_path_factory.mktemp("tiny_probe") / "bert", minilm_folder())
    model = apex_jax.load(folder)
    return model, model.encode(TEXTS)


def test_extract_cls_equals_direct_capture(tiny, tmp_path):
    model, inputs = tiny
    assert inputs["input_ids"].shape[1] > 16  # the long text makes cropping matter
    sites = F.default_sites(model) + ("blocks.1.mlp.hook_post", "head.hook_cls")
    direct = model.apply(model.params, inputs, capture=sites).captured
    full = F.extract_cls(model, model.params, inputs, sites=sites, batch_size=64)
    small = F.extract_cls(model, model.params, inputs, sites=sites, batch_size=3)
    disk = F.extract_cls(model, model.params, inputs, sites=sites, batch_size=3, out=tmp_path)
    assert list(full) == list(sites)
    for s in sites:
        want = np.asarray(direct[s])
        want = want if s.startswith("head.") else want[:, 0]
        assert full[s].dtype == np.float32 and full[s].shape == (len(TEXTS), want.shape[1])
        np.testing.assert_allclose(full[s], want, atol=2e-5, rtol=1e-5)
        np.testing.assert_allclose(small[s], full[s], atol=2e-5, rtol=1e-5)
        assert isinstance(disk[s], np.memmap)
        np.testing.assert_array_equal(np.load(tmp_path / f"{s}.npy"), small[s])
    assert F.default_sites(model) == ("hook_embed", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post")


def test_chunks_are_fixed_shape_and_cropped(tiny):
    _, inputs = tiny
    chunks = list(iter_chunks(inputs, 3))
    assert [(c.start, c.stop) for c in chunks] == [(0, 3), (3, 6), (6, 8)]
    assert all(c.batch["input_ids"].shape[0] == 3 for c in chunks)
    widths = [c.batch["input_ids"].shape[1] for c in chunks]
    assert widths[0] == inputs["input_ids"].shape[1] or widths[0] % 16 == 0
    assert widths[1:] == [16, 16]  # short texts only
    assert chunks[-1].rows.tolist() == [6, 7, 7]


def test_extract_cls_bad_inputs(tiny):
    model, inputs = tiny
    with pytest.raises(ValueError, match="unknown site"):
        F.extract_cls(model, model.params, inputs, sites=["blocks.9.hook_resid_post"])
    with pytest.raises(ValueError, match="attention patterns"):
        F.extract_cls(model, model.params, inputs, sites=["blocks.0.attn.hook_pattern"])
    with pytest.raises(ValueError, match="no examples"):
        F.extract_cls(model, model.params, {k: v[:0] for k, v in inputs.items()})
    with pytest.raises(ValueError, match="disagree"):
        F.extract_cls(model, model.params, {**inputs, "attention_mask": inputs["attention_mask"][:2]})
    with pytest.raises(ValueError, match="batch_size"):
        F.extract_cls(model, model.params, inputs, batch_size=0)


def test_new_params_and_inputs_of_one_shape_do_not_recompile(tiny):
    model, inputs = tiny
    sites = F.default_sites(model)
    F.extract_cls(model, model.params, inputs, sites=sites, batch_size=4)
    R.attribution_ranking(model, model.params, inputs, "blocks.0.hook_resid_post", batch_size=4)
    cls_compiles, attr_compiles = F._read_cls._cache_size(), R._attribution._cache_size()
    other = jax.tree.map(lambda x: x * 1.01, model.params)  # another checkpoint of the architecture
    swapped = {k: v[[1, 0, 2, 3, 5, 4, 6, 7]] for k, v in inputs.items()}  # same chunk shapes
    F.extract_cls(model, other, swapped, sites=sites, batch_size=4)
    R.attribution_ranking(model, other, swapped, "blocks.0.hook_resid_post", batch_size=4)
    assert F._read_cls._cache_size() == cls_compiles
    assert R._attribution._cache_size() == attr_compiles
