import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinymoon.kernels as K
from tinymoon.kernels import fewbit as F

# kernels tests: deterministic examples, no example database, no deadline (first calls compile)
KSET = settings(deadline=None, max_examples=30, derandomize=True, database=None)


@KSET
@given(n=st.integers(0, 60), bits=st.integers(1, 8), dtype=st.sampled_from([np.float32, np.float64]),
       name=st.sampled_from(sorted(K.COMPILED)), seed=st.integers(0, 2**16))
def test_numba_matches_reference_and_spec(n, bits, dtype, name, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * 2).astype(dtype)
    borders = np.sort(rng.standard_normal(2**bits - 1) * 2)
    if n and bits > 1:
        x[0] = borders[0]  # a value exactly on a border goes to the lower bin (side="left")
    levels = rng.standard_normal(2**bits)
    y_bar = rng.standard_normal(n).astype(dtype)
    y_r, p_r = F.fewbit_forward_reference(name, x, borders, bits)
    y_n, p_n = F.fewbit_forward_numba(name, x, borders, bits)
    idx = np.searchsorted(borders, x)
    np.testing.assert_array_equal(p_r, K.pack_bins(idx, bits))
    np.testing.assert_array_equal(p_n, p_r)
    np.testing.assert_allclose(y_n, y_r, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)
    want = levels.astype(dtype)[idx] * y_bar
    for f in (F.fewbit_backward_reference, F.fewbit_backward_numba):
        got = f(p_r, levels, bits, y_bar)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, want)


def test_public_shapes_and_nan():
    x = np.array([[np.nan, -1.0, 0.5], [2.0, 0.0, -3.0]], np.float32)
    borders = np.array([-1.0, 0.0, 1.0])
    for impl in ("reference", "numba"):
        with K.use(impl):
            y, packed = K.fewbit_forward("relu", x, borders, 2)
            assert y.shape == x.shape and packed.size == 2
            np.testing.assert_array_equal(K.unpack_bins(packed, 2, 6), [3, 0, 2, 3, 1, 0])
            g = K.fewbit_backward(packed, np.array([0.0, 0.25, 0.5, 1.0]), 2, np.ones_like(x))
            assert g.shape == x.shape and g.dtype == np.float32


def test_validation():
    x = np.ones(4, np.float32)
    with pytest.raises(ValueError, match="2\\^2 - 1 = 3 borders"):
        K.fewbit_forward("relu", x, np.zeros(2), 2)
    with pytest.raises(ValueError, match="sorted"):
        K.fewbit_forward("relu", x, np.array([1.0, 0.0, 2.0]), 2)
    with pytest.raises(ValueError, match="1..8"):
        K.fewbit_forward("relu", x, np.zeros(511), 9)
    with pytest.raises(ValueError, match="4 levels"):
        K.fewbit_backward(np.zeros(1, np.uint8), np.zeros(3), 2, x)
