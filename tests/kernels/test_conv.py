import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinymoon.kernels as K
from tinymoon.kernels import conv as C, threads

# kernels tests: deterministic examples, no example database, no deadline (first calls compile)
KSET = settings(deadline=None, max_examples=30, derandomize=True, database=None)


def naive_conv(x, w, stride, padding, dilation, groups):
    """The definition, seven loops deep (small sizes only)."""
    n_b, c_in, h, wd = x.shape
    c_out, cg, kh, kw = w.shape
    (pt, pb), (pl, pr) = padding
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    ho = (h + pt + pb - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (wd + pl + pr - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    og = c_out // groups
    y = np.zeros((n_b, c_out, ho, wo), x.dtype)
    for n in range(n_b):
        for o in range(c_out):
            g = o // og
            for p in range(ho):
                for q in range(wo):
                    for c in range(cg):
                        for i in range(kh):
                            for j in range(kw):
                                y[n, o, p, q] += w[o, c, i, j] * xp[n, g * cg + c, p * stride[0] + i * dilation[0],
                                                                    q * stride[1] + j * dilation[1]]
    return y


@st.composite
def conv_cases(draw, max_hw=9):
    groups = draw(st.integers(1, 3))
    cg, og = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(2))
    h = draw(st.integers(max(1, dilation[0] * (kh - 1) + 1 - sum(padding[0])), max_hw))
    w_ = draw(st.integers(max(1, dilation[1] * (kw - 1) + 1 - sum(padding[1])), max_hw))
    n = draw(st.integers(1, 3))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal((n, groups * cg, h, w_)).astype(dtype)
    w = rng.standard_normal((groups * og, cg, kh, kw)).astype(dtype)
    return x, w, (stride, padding, dilation, groups), rng


def tol(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)


@KSET
@given(case=conv_cases(max_hw=7))
def test_reference_matches_naive_and_adjoint(case):
    x, w, args, rng = case
    y = C.conv2d_forward_reference(x, w, *args)
    assert y.dtype == x.dtype
    np.testing.assert_allclose(y, naive_conv(x.astype(np.float64), w.astype(np.float64), *args), **tol(x.dtype))
    # the two VJPs are the adjoints of the forward map: <ȳ, J_x ẋ> = <J_xᵀ ȳ, ẋ>, and the same for w
    y_bar = rng.standard_normal(y.shape)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    x_dot, w_dot = rng.standard_normal(x.shape), rng.standard_normal(w.shape)
    lhs = np.vdot(y_bar, C.conv2d_forward_reference(x_dot, w64, *args))
    rhs = np.vdot(C.conv2d_grad_input_reference(y_bar, w64, x.shape, *args), x_dot)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-10)
    lhs = np.vdot(y_bar, C.conv2d_forward_reference(x64, w_dot, *args))
    rhs = np.vdot(C.conv2d_grad_weight_reference(x64, y_bar, w.shape, *args), w_dot)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-10)


@pytest.fixture(params=["serial", "parallel"])
def pool_mode(request, monkeypatch):
    """Run threads.Kernel's serial compilation everywhere, or its parallel one even on tiny arrays."""
    for layer in list(threads.PARALLEL_MIN_WORK):
        monkeypatch.setitem(threads.PARALLEL_MIN_WORK, layer, 1 << 62 if request.param == "serial" else 0)
    return request.param


ALGORITHMS = {  # the Numba implementation picks direct or im2col per layer; each is held to the reference
    "numba": (C.conv2d_forward_numba, C.conv2d_grad_input_numba, C.conv2d_grad_weight_numba),
    "direct": (C.conv2d_forward_direct, C.conv2d_grad_input_direct, C.conv2d_grad_weight_direct),
    "im2col": (C.conv2d_forward_im2col, C.conv2d_grad_input_im2col, C.conv2d_grad_weight_im2col),
}


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_numba_matches_reference(algorithm, pool_mode):
    fwd, gin, gw = ALGORITHMS[algorithm]

    @KSET
    @given(case=conv_cases())
    def check(case):
        x, w, args, rng = case
        y = C.conv2d_forward_reference(x, w, *args)
        y_bar = rng.standard_normal(y.shape).astype(x.dtype)
        pairs = [(fwd(x, w, *args), y),
                 (gin(y_bar, w, x.shape, *args), C.conv2d_grad_input_reference(y_bar, w, x.shape, *args)),
                 (gw(x, y_bar, w.shape, *args), C.conv2d_grad_weight_reference(x, y_bar, w.shape, *args))]
        for got, want in pairs:
            assert got.dtype == want.dtype == x.dtype and got.shape == want.shape
            np.testing.assert_allclose(got, want, **tol(x.dtype))
    check()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_direct_on_layer_sized_cases(dtype, pool_mode):
    """Sizes where the micro-kernels' 8-row, 4-tap blocks, the stacked samples and the 64-position rows all
    engage (the hypothesis cases are too small for some of them): grouped, strided, dilated, 1x1, 5x5."""
    rng = np.random.default_rng(7)
    for xs, ws, args in [((5, 16, 13, 11), (24, 16, 3, 3), ((1, 1), ((1, 1), (1, 1)), (1, 1), 1)),
                         ((3, 16, 15, 14), (16, 2, 3, 3), ((2, 2), ((1, 0), (2, 1)), (1, 1), 8)),
                         ((4, 9, 12, 12), (11, 9, 5, 5), ((1, 2), ((2, 2), (2, 2)), (2, 1), 1)),
                         ((6, 12, 7, 7), (20, 12, 1, 1), ((1, 1), ((0, 0), (0, 0)), (1, 1), 1)),
                         ((2, 1, 28, 28), (16, 1, 5, 5), ((2, 2), ((2, 2), (2, 2)), (1, 1), 1))]:
        x, w = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)
        y = C.conv2d_forward_reference(x, w, *args)
        y_bar = rng.standard_normal(y.shape).astype(dtype)
        t = dict(rtol=1e-4, atol=1e-3) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(C.conv2d_forward_direct(x, w, *args), y, **t)
        np.testing.assert_allclose(C.conv2d_grad_input_direct(y_bar, w, x.shape, *args),
                                   C.conv2d_grad_input_reference(y_bar, w, x.shape, *args), **t)
        np.testing.assert_allclose(C.conv2d_grad_weight_direct(x, y_bar, w.shape, *args),
                                   C.conv2d_grad_weight_reference(x, y_bar, w.shape, *args), **t)


@pytest.mark.parametrize("impl", ["reference", "numba", "direct", "im2col"])
def test_forward_adds_bias_in_place(impl):
    rng = np.random.default_rng(8)
    x, w = rng.standard_normal((3, 4, 7, 6)), rng.standard_normal((6, 2, 3, 3))
    b = rng.standard_normal(6)
    args = ((2, 1), ((1, 0), (1, 2)), (1, 1), 2)
    fwd = C.conv2d_forward_reference if impl == "reference" else ALGORITHMS[impl][0]
    want = C.conv2d_forward_reference(x, w, *args) + b.reshape(1, -1, 1, 1)
    np.testing.assert_allclose(fwd(x, w, *args, bias=b), want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="bias must have shape"):
        K.conv2d_forward(x, w, *args, bias=b[:3])
    with pytest.raises(ValueError, match="no silent promotion"):
        K.conv2d_forward(x, w, *args, bias=b.astype(np.float32))


def test_direct_propagates_nan_and_inf():
    """No kernel drops a NaN or an infinity (the junk positions and padding must never mix into real ones)."""
    x = np.ones((2, 4, 6, 6), np.float32)
    x[0, 1, 2, 3], x[1, 2, 0, 0] = np.nan, np.inf
    w = np.ones((4, 4, 3, 3), np.float32)
    args = ((1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    want = C.conv2d_forward_reference(x, w, *args)
    got = C.conv2d_forward_direct(x, w, *args)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    np.testing.assert_allclose(got[np.isfinite(want)], want[np.isfinite(want)])


@pytest.mark.torch
@pytest.mark.parametrize("impl", ["reference", "numba"])
@KSET
@given(case=conv_cases())
def test_matches_torch_autograd(impl, case):
    torch = pytest.importorskip("torch")
    x, w, (stride, padding, dilation, groups), rng = case
    args = (stride, padding, dilation, groups)
    (pt, pb), (pl, pr) = padding
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    ty = torch.nn.functional.conv2d(torch.nn.functional.pad(tx, (pl, pr, pt, pb)), tw, stride=stride,
                                    dilation=dilation, groups=groups)
    y_bar = rng.standard_normal(tuple(ty.shape)).astype(x.dtype)
    ty.backward(torch.tensor(y_bar))
    with K.use(impl):
        y = K.conv2d_forward(x, w, *args)
        x_bar = K.conv2d_grad_input(y_bar, w, x.shape, *args)
        w_bar = K.conv2d_grad_weight(x, y_bar, w.shape, *args)
    np.testing.assert_allclose(y, ty.detach().numpy(), **tol(x.dtype))
    np.testing.assert_allclose(x_bar, tx.grad.numpy(), **tol(x.dtype))
    np.testing.assert_allclose(w_bar, tw.grad.numpy(), **tol(x.dtype))


def test_validation_messages():
    x, w = np.ones((1, 4, 5, 5), np.float32), np.ones((6, 2, 3, 3), np.float32)
    ok = ((1, 1), ((1, 1), (1, 1)), (1, 1), 2)
    assert K.conv2d_forward(x, w, *ok).shape == (1, 6, 5, 5)
    with pytest.raises(ValueError, match="groups=3 must divide"):
        K.conv2d_forward(x, w, (1, 1), ((0, 0), (0, 0)), (1, 1), 3)
    with pytest.raises(ValueError, match="no silent promotion"):
        K.conv2d_forward(x, w.astype(np.float64), *ok)
    with pytest.raises(ValueError, match="empty output"):
        K.conv2d_forward(x, w, (1, 1), ((0, 0), (0, 0)), (3, 3), 2)
    with pytest.raises(ValueError, match="padding >= 0"):
        K.conv2d_forward(x, w, (1, 1), ((-1, 0), (0, 0)), (1, 1), 2)
    with pytest.raises(ValueError, match="y_bar has shape"):
        K.conv2d_grad_input(np.ones((1, 6, 4, 4), np.float32), w, x.shape, *ok)


def test_non_contiguous_inputs():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 9, 8)).transpose(0, 1, 3, 2)
    w = rng.standard_normal((3, 6, 3, 3))[:, ::2].copy().transpose(0, 1, 3, 2)
    args = ((2, 1), ((0, 1), (2, 0)), (1, 2), 1)
    for impl in ("reference", "numba"):
        with K.use(impl):
            np.testing.assert_allclose(K.conv2d_forward(x, w, *args), naive_conv(x, w, *args), rtol=1e-12, atol=1e-12)
