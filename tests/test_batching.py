"""apex_jax.batching: the padding rule, fixed-shape chunks, encoding data sets."""

from __future__ import annotations

import types

import numpy as np
import pytest

from apex_jax import batching


def test_padded_width():
    assert batching.PAD_MULTIPLE == 16
    assert [batching.padded_width(n) for n in (0, 1, 16, 17, 33)] == [16, 16, 16, 32, 48]


def test_chunks_crop_text_to_the_padded_width():
    mask = np.zeros((5, 64), np.int32)
    for i, n in enumerate((3, 40, 5, 2, 9)):
        mask[i, :n] = 1
    inputs = {"input_ids": mask * 7, "attention_mask": mask}
    chunks = list(batching.iter_chunks(inputs, 2))
    assert [(c.start, c.stop, c.batch["input_ids"].shape) for c in chunks] == [(0, 2, (2, 48)), (2, 4, (2, 16)),
                                                                              (4, 5, (2, 16))]
    assert chunks[-1].rows.tolist() == [4, 4]
    with pytest.raises(ValueError, match="disagree"):
        batching.num_rows({"input_ids": mask, "attention_mask": mask[:2]})


def test_encode_text_and_images_and_several_sets():
    calls = []

    class Stub:
        def encode(self, x, max_length=None):
            calls.append((x if isinstance(x, list) else np.shape(x), max_length))
            return {"n": len(x)}

    text = lambda *xs: types.SimpleNamespace(kind="text", inputs=np.array(xs))
    image = lambda n: types.SimpleNamespace(kind="image", inputs=np.zeros((n, 1, 4, 4)))
    assert batching.encode(Stub(), text("a", "b"), max_length=8) == {"n": 2}
    assert batching.encode(Stub(), [text("a"), text("b", "c")]) == {"n": 3}
    assert batching.encode(Stub(), [image(2), image(3)]) == {"n": 5}
    assert calls == [(["a", "b"], 8), (["a", "b", "c"], None), ((5, 1, 4, 4), None)]
