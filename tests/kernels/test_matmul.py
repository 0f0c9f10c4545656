import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinymoon.kernels as K
from tinymoon.kernels import gemm as M

# kernels tests: deterministic examples, no example database, no deadline (first calls compile)
KSET = settings(deadline=None, max_examples=30, derandomize=True, database=None)


def tol(dtype):
    return dict(rtol=2e-5, atol=2e-5) if np.dtype(dtype) == np.float32 else dict(rtol=1e-11, atol=1e-11)

dims = st.integers(1, 9)


@KSET
@given(batch_a=st.lists(st.sampled_from([1, 2, 3]), max_size=2), batch_b=st.lists(st.sampled_from([1, 2, 3]),
       max_size=2), m=dims, k=st.integers(1, 150), n=dims, dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**16))
def test_numba_matches_numpy_with_broadcasting(batch_a, batch_b, m, k, n, dtype, seed):
    # broadcastable batch shapes: align from the right, replace conflicts with 1
    ba, bb = list(batch_a), list(batch_b)
    for i in range(1, min(len(ba), len(bb)) + 1):
        if ba[-i] != bb[-i]:
            bb[-i] = 1
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(ba + [m, k]).astype(dtype)
    b = rng.standard_normal(bb + [k, n]).astype(dtype)
    want = np.matmul(a, b)
    got = M.matmul_numba(a, b)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, **tol(dtype))


@pytest.mark.parametrize("sa,sb", [((5,), (5, 3)), ((4, 5), (5,)), ((5,), (5,)), ((2, 4, 5), (5,)), ((5,), (3, 5, 2))])
def test_one_d_promotion(sa, sb):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    for impl in ("reference", "numba"):
        with K.use(impl):
            got = K.matmul(a, b)
        assert np.shape(got) == np.matmul(a, b).shape
        np.testing.assert_allclose(got, np.matmul(a, b), rtol=1e-12)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="inner dimensions"):
        M.matmul_numba(np.ones((2, 3)), np.ones((4, 2)))
