"""apex_jax.specs: σ grids and k% levels, each value once."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from apex_jax import specs


def test_sigma_specs():
    np.testing.assert_allclose(specs.parse_sigmas("logspace:0.01:1:3"), [0.01, 0.1, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(specs.parse_sigmas("1,0.5,0"), np.array([0, 0.5, 1.0], np.float32))
    assert specs.parse_sigmas("logspace:0.5:2:1").tolist() == [0.5]


@pytest.mark.parametrize("bad", ["logspace:1:0.5:4", "logspace:1:1:4", "logspace:0:1:4", "logspace:-1:1:4",
                                 "logspace:0.1:1:0", "logspace:0.1:1", "logspace:0.1:1:4:5", "logspace:a:1:4",
                                 "0.1,-1", "nan", "a,b", ""])
def test_bad_sigma_specs_raise_without_numpy_warnings(bad):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="sigma"):
            specs.parse_sigmas(bad)


def test_repeated_sigmas_are_an_error():
    with pytest.raises(ValueError, match=r"sigmas repeat \[0.5\]"):
        specs.parse_sigmas("0.5,1,0.5")
    with pytest.raises(ValueError, match="repeat"):
        specs.check_sigmas([0.1, np.float64(np.float32(0.1))])  # equal in float32, the sweep's precision


def test_k_specs():
    assert specs.parse_k("synapse") == tuple(float(k) for k in specs.K_LEVELS)
    assert specs.parse_k("5, 10,20") == (5.0, 10.0, 20.0)
    with pytest.raises(ValueError, match=r"k levels repeat \['10'\]"):
        specs.parse_k("10,5,10")
    for bad in ("0", "101", "a", "", "nan"):
        with pytest.raises(ValueError, match="k"):
            specs.parse_k(bad)
