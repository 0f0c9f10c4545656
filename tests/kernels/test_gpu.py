"""Real-GPU tests (`pytest -m gpu`): the "cuda" and "cupy" implementations on CuPy arrays against the
NumPy reference.  Skipped without CuPy and a GPU."""
import numpy as np
import pytest

from tinymoon.kernels import dispatch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not dispatch.cupy_available() or dispatch.cuda_simulator(),
                                 reason="needs CuPy and a real CUDA GPU")]

IMPLS = ["cuda", "cupy"]
TOL = {np.float32: dict(rtol=1e-4, atol=1e-4), np.float64: dict(rtol=1e-10, atol=1e-10)}


@pytest.fixture
def cp():
    return pytest.importorskip("cupy")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_matmul(cp, impl, dt):
    import tinymoon.kernels as K
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 65, 33)).astype(dt), rng.standard_normal((33, 47)).astype(dt)
    with K.use(impl):
        got = K.matmul(cp.asarray(a), cp.asarray(b))
    np.testing.assert_allclose(cp.asnumpy(got), a @ b, **TOL[dt])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_conv(cp, impl, dt):
    import tinymoon.kernels as K
    from tinymoon.kernels import conv as C
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((4, 6, 11, 9)).astype(dt), rng.standard_normal((8, 3, 3, 2)).astype(dt)
    args = ((2, 1), ((1, 2), (0, 1)), (1, 2), 2)
    y = C.conv2d_forward_reference(x, w, *args)
    y_bar = rng.standard_normal(y.shape).astype(dt)
    with K.use(impl):
        got = [K.conv2d_forward(cp.asarray(x), cp.asarray(w), *args),
               K.conv2d_grad_input(cp.asarray(y_bar), cp.asarray(w), x.shape, *args),
               K.conv2d_grad_weight(cp.asarray(x), cp.asarray(y_bar), w.shape, *args)]
    want = [y, C.conv2d_grad_input_reference(y_bar, w, x.shape, *args),
            C.conv2d_grad_weight_reference(x, y_bar, w.shape, *args)]
    for g, r in zip(got, want):
        np.testing.assert_allclose(cp.asnumpy(g), r, **TOL[dt])


@pytest.mark.parametrize("impl", IMPLS)
def test_pointwise_bitpack_fewbit(cp, impl):
    import tinymoon.kernels as K
    from tinymoon.kernels import pointwise as P
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(10007) * 3).astype(np.float32)
    xd = cp.asarray(x)
    with K.use(impl):
        for name in K.ACTIVATIONS:
            y, d = K.act_forward(name, xd)
            yr, dr = P.act_reference(name, x)
            np.testing.assert_allclose(cp.asnumpy(y), yr, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(cp.asnumpy(d), dr, rtol=1e-5, atol=1e-6)
        y, packed = K.relu_mask_forward(xd)
        np.testing.assert_array_equal(cp.asnumpy(packed), np.packbits(x > 0, bitorder="little"))
        np.testing.assert_array_equal(cp.asnumpy(K.masked_grad(packed, xd, 0.1)), np.where(x > 0, x, np.float32(0.1) * x))
        for bits in range(1, 9):
            idx = rng.integers(0, 2**bits, 1001).astype(np.uint8)
            p = K.pack_bins(cp.asarray(idx), bits)
            np.testing.assert_array_equal(cp.asnumpy(K.unpack_bins(p, bits, 1001)), idx)
            borders = np.sort(rng.standard_normal(2**bits - 1))
            levels = rng.standard_normal(2**bits)
            y, p = K.fewbit_forward("silu", xd, borders, bits)
            want = levels.astype(np.float32)[np.searchsorted(borders, x)] * x
            np.testing.assert_array_equal(cp.asnumpy(K.fewbit_backward(p, levels, bits, xd)), want)


def test_default_for_cupy_arrays_is_cupy(cp):
    assert dispatch.choose("matmul", cp.ones((2, 2))) == "cupy"
