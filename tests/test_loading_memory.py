"""Loading streams the checkpoint: peak host memory of a bf16 load stays <= 1.5x its bytes.

A random ~70M-parameter bf16 Llama is saved by transformers in 3 shards (benchmarks/load_memory.py
phase "build", a subprocess), then loaded by `apex_jax.load(..., dtype="bfloat16")` in a fresh
process (phase "load"). The figure is the load's own peak: VmHWM after the load minus the RSS just
before it, with VmHWM reset there (`/proc/self/clear_refs`), after jax and apex_jax are imported
and the backend started. ru_maxrss is not used: it cannot be reset and a forked child inherits
its parent's. On CPU the parameters themselves are 1.0x; the whole-model host copies of the old
loader made this 4.96x on the 1.1B benchmark model.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import load_memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("llama_bf16")
    load_memory.run_phase(["--phase", "build", "--folder", str(path), "--size", "small"])
    return path


@pytest.fixture(scope="module")
def one_device(folder) -> dict:
    return load_memory.measure(folder, model_parallel=1)


def test_bf16_load_peak_is_bounded_and_logits_match_torch(folder, one_device):
    r = one_device
    assert len(list(folder.glob("*.safetensors"))) >= 2  # a sharded checkpoint
    assert r["param_dtypes"] == ["bfloat16"]  # bf16 stays bf16: never a float32 copy
    assert r["peak_over_checkpoint"] <= load_memory.TARGET, r
    assert r["peak_over_checkpoint"] >= 0.9, r  # the parameters themselves are in RSS: a real measurement
    assert r["logits_finite"]
    # bf16 compute vs torch's float32 compute on the same bf16 weights
    assert r["max_abs_diff_vs_torch"] <= 0.05 * r["max_abs_torch"], r


def test_model_parallel_load_gives_the_same_logits(folder, one_device):
    r = load_memory.measure(folder, model_parallel=2)
    assert r["devices"] == 2 and r["model_parallel"] == 2
    assert r["peak_over_checkpoint"] <= load_memory.TARGET, r
    a, b = np.asarray(one_device["logits"]), np.asarray(r["logits"])
    assert np.isfinite(b).all()
    np.testing.assert_allclose(b, a, atol=0.05 * np.abs(a).max())


class _Unreadable:
    """A lazy weight that fails the test if read."""

    def __init__(self, shape):
        self.shape = shape

    def __array__(self, dtype=None, copy=None):
        raise AssertionError("read before the table was checked")


def test_table_is_checked_from_shapes_before_any_weight_is_read():
    from apex_jax.errors import InputError
    from apex_jax.models.convert import Entry, to_params

    entries = [Entry(("a", "kernel"), "a.weight", "dense", (3, 2)), Entry(("b",), "b", "copy", (4,))]
    state = {"a.weight": _Unreadable((2, 3)), "extra": _Unreadable((1,))}
    with pytest.raises(InputError, match=r"missing weights: \['b'\].*mis-shaped weights: \['a.weight: \(2, 3\), "
                                         r"expected \(3, 2\)'\].*unused weights: \['extra'\]"):
        to_params(entries, state)


def test_each_weight_is_converted_in_the_target_dtype_and_placed():
    import ml_dtypes

    from apex_jax.models.convert import Entry, to_params

    w = np.arange(6, dtype=np.float32).reshape(3, 2).astype(ml_dtypes.bfloat16)  # HF [out, in]
    placed = []
    params = to_params([Entry(("a", "kernel"), "a.weight", "dense", (3, 2))], {"a.weight": w},
                       dtype=ml_dtypes.bfloat16, place=lambda path, x: placed.append((path, x)) or "leaf")
    assert params == {"a": {"kernel": "leaf"}}
    (path, x), = placed
    assert path == ("a", "kernel") and x.dtype == ml_dtypes.bfloat16 and x.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(x.astype(np.float32), w.astype(np.float32).T)
