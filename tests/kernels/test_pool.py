import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinymoon.kernels as K
from tinymoon.kernels import pool as PL, threads

KSET = settings(deadline=None, max_examples=40, derandomize=True, database=None)


def naive_max_pool(x, k, s, p):
    """The definition, loop by loop: (y, tap index of the first maximum; NaN is the maximum)."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])), constant_values=-np.inf)
    ho, wo = (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1
    y, idx = np.empty((n, c, ho, wo), x.dtype), np.empty((n, c, ho, wo), np.int64)
    for b in range(n):
        for ch in range(c):
            for i in range(ho):
                for j in range(wo):
                    win = xp[b, ch, i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]].ravel()
                    nan = np.flatnonzero(np.isnan(win))
                    t = nan[0] if nan.size else int(np.argmax(win))        # argmax: the first maximum
                    y[b, ch, i, j], idx[b, ch, i, j] = win[t], t
    return y, idx


@st.composite
def pool_cases(draw):
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    p = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    h = draw(st.integers(max(1, k[0] - 2 * p[0]), 9))
    w = draw(st.integers(max(1, k[1] - 2 * p[1]), 9))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal((draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w))
    special = draw(st.sampled_from(["plain", "ties", "nan", "inf"]))
    if special == "ties":
        x = np.round(x)
    elif special == "nan":
        x.flat[rng.integers(0, x.size, 2)] = np.nan
    elif special == "inf":
        x.flat[rng.integers(0, x.size, 3)] = -np.inf
    return x.astype(dtype), k, s, p, rng


@pytest.fixture(params=["serial", "parallel"])
def pool_mode(request, monkeypatch):
    for layer in list(threads.PARALLEL_MIN_WORK):
        monkeypatch.setitem(threads.PARALLEL_MIN_WORK, layer, 1 << 62 if request.param == "serial" else 0)
    return request.param


@KSET
@given(case=pool_cases())
def test_reference_matches_naive_and_adjoint(case):
    x, k, s, p, rng = case
    y, idx = PL.max_pool2d_forward_reference(x, k, s, p)
    y_naive, idx_naive = naive_max_pool(x, k, s, p)
    np.testing.assert_array_equal(y, y_naive)
    np.testing.assert_array_equal(idx, idx_naive)
    assert idx.dtype == np.uint8 and y.dtype == x.dtype
    # backward and gather are adjoint linear maps: <ȳ, gather(a)> = <backward(ȳ), a>; avg likewise
    y_bar, a = rng.standard_normal(y.shape), rng.standard_normal(x.shape)
    lhs = np.vdot(y_bar, PL.max_pool2d_gather_reference(idx, a, k, s, p))
    rhs = np.vdot(PL.max_pool2d_backward_reference(idx, y_bar, x.shape, k, s, p), a)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-10)
    lhs = np.vdot(y_bar, PL.avg_pool2d_forward_reference(a, k, s, p))
    rhs = np.vdot(PL.avg_pool2d_backward_reference(y_bar, x.shape, k, s, p), a)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-10)


def test_numba_matches_reference(pool_mode):
    @KSET
    @given(case=pool_cases())
    def check(case):
        x, k, s, p, rng = case
        y, idx = PL.max_pool2d_forward_reference(x, k, s, p)
        yn, idn = PL.max_pool2d_forward_numba(x, k, s, p)
        np.testing.assert_array_equal(yn, y)                           # exact: a max is a copy
        np.testing.assert_array_equal(idn, idx)
        assert idn.dtype == idx.dtype and yn.dtype == x.dtype
        y_bar = rng.standard_normal(y.shape).astype(x.dtype)
        a = rng.standard_normal(x.shape).astype(x.dtype)
        tol = dict(rtol=1e-6, atol=1e-6) if x.dtype == np.float32 else dict(rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(PL.max_pool2d_backward_numba(idx, y_bar, x.shape, k, s, p),
                                   PL.max_pool2d_backward_reference(idx, y_bar, x.shape, k, s, p), **tol)
        np.testing.assert_array_equal(PL.max_pool2d_gather_numba(idx, a, k, s, p),
                                      PL.max_pool2d_gather_reference(idx, a, k, s, p))
        np.testing.assert_allclose(PL.avg_pool2d_forward_numba(a, k, s, p),
                                   PL.avg_pool2d_forward_reference(a, k, s, p), **tol)
        np.testing.assert_allclose(PL.avg_pool2d_backward_numba(y_bar, x.shape, k, s, p),
                                   PL.avg_pool2d_backward_reference(y_bar, x.shape, k, s, p), **tol)
    check()


@pytest.mark.torch
@pytest.mark.parametrize("impl", ["reference", "numba"])
def test_matches_torch(impl):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 11, 10))
    for k, s, p in [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 1), (1, 1)), ((3, 2), (1, 1), (1, 0))]:
        tx = torch.tensor(x, requires_grad=True)
        ty = torch.nn.functional.max_pool2d(tx, k, s, p)
        y_bar = rng.standard_normal(tuple(ty.shape))
        ty.backward(torch.tensor(y_bar))
        with K.use(impl):
            y, idx = K.max_pool2d_forward(x, k, s, p)
            x_bar = K.max_pool2d_backward(idx, y_bar, x.shape, k, s, p)
        np.testing.assert_array_equal(y, ty.detach().numpy())
        np.testing.assert_allclose(x_bar, tx.grad.numpy(), rtol=1e-12, atol=1e-12)
        tx = torch.tensor(x, requires_grad=True)
        ty = torch.nn.functional.avg_pool2d(tx, k, s, p)
        ty.backward(torch.tensor(y_bar))
        with K.use(impl):
            np.testing.assert_allclose(K.avg_pool2d_forward(x, k, s, p), ty.detach().numpy(), rtol=1e-12)
            np.testing.assert_allclose(K.avg_pool2d_backward(y_bar, x.shape, k, s, p), tx.grad.numpy(), rtol=1e-12)


def test_index_is_small_and_validation_messages():
    x = np.zeros((1, 1, 40, 40), np.float32)
    assert K.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))[1].dtype == np.uint8
    assert K.max_pool2d_forward(x, (17, 17), (1, 1), (0, 0))[1].dtype == np.uint16      # 289 taps
    with pytest.raises(ValueError, match="needs float32 or float64"):
        K.max_pool2d_forward(x.astype(np.int32), (2, 2), (2, 2), (0, 0))
    with pytest.raises(ValueError, match="padding <= kernel // 2"):
        K.avg_pool2d_forward(x, (2, 2), (2, 2), (2, 2))
    y, idx = K.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
    with pytest.raises(ValueError, match="y_bar has shape"):
        K.max_pool2d_backward(idx, np.zeros((1, 1, 5, 5), np.float32), x.shape, (2, 2), (2, 2), (0, 0))
    with pytest.raises(ValueError, match="idx must be the uint8 array"):
        K.max_pool2d_backward(idx.astype(np.int64), y, x.shape, (2, 2), (2, 2), (0, 0))


def test_default_dispatch_is_the_one_pass_kernel():
    from tinymoon.kernels import dispatch
    for op in ("max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward"):
        assert dispatch.choose(op, np.ones((1, 1, 2, 2), np.float32)) == "numba"
