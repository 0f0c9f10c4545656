"""The "cuda" and "cupy" implementations on CuPy arrays against the NumPy reference.

Real GPU (`pytest -m gpu`, skipped without CuPy and a GPU): both implementations, numerics included.
Fake GPU (tests/fake_cupy.py, everywhere): the "cupy" implementation's plumbing — its array calls are held
to CuPy 14.2's API and host/device rules; its one ElementwiseKernel runs the NumPy reference there, so the
activation numbers themselves are only checked on a real GPU. "cuda" (Numba CUDA) needs real device
pointers and is skipped on the fake (the simulator tests in test_cuda_sim.py cover its kernels)."""
import numpy as np
import pytest

from tinymoon.kernels import dispatch

from tests.conftest import fake_gpu

IMPLS = ["cuda", "cupy"]
TOL = {np.float32: dict(rtol=1e-4, atol=1e-4), np.float64: dict(rtol=1e-10, atol=1e-10)}


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.gpu)])
def cp(request, impl):
    if request.param == "real":
        if not dispatch.cupy_available() or dispatch.cuda_simulator():
            pytest.skip("needs CuPy and a real CUDA GPU")
        yield pytest.importorskip("cupy")
        return
    if dispatch.cupy_available():
        pytest.skip("a real GPU is present: the 'real' case covers it")
    if impl == "cuda":
        pytest.skip("Numba CUDA kernels need real device arrays (see test_cuda_sim.py for the simulator)")
    with fake_gpu() as fake:
        yield fake


@pytest.fixture
def impl():
    return "cupy"


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
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_pool(cp, impl, dt):
    import tinymoon.kernels as K
    from tinymoon.kernels import pool as PL
    rng = np.random.default_rng(3)
    x = np.round(rng.standard_normal((2, 3, 9, 8)) * 2).astype(dt)          # ties
    x.flat[5] = np.nan
    for k, s, p in [((2, 2), (2, 2), (0, 0)), ((3, 2), (1, 2), (1, 1))]:
        y, idx = PL.max_pool2d_forward_reference(x, k, s, p)
        y_bar = rng.standard_normal(y.shape).astype(dt)
        with K.use(impl):
            yd, idd = K.max_pool2d_forward(cp.asarray(x), k, s, p)
            got = [K.max_pool2d_backward(cp.asarray(idx), cp.asarray(y_bar), x.shape, k, s, p),
                   K.max_pool2d_gather(cp.asarray(idx), cp.asarray(x), k, s, p),
                   K.avg_pool2d_forward(cp.asarray(np.nan_to_num(x)), k, s, p),
                   K.avg_pool2d_backward(cp.asarray(y_bar), x.shape, k, s, p)]
        np.testing.assert_array_equal(cp.asnumpy(yd), y)
        np.testing.assert_array_equal(cp.asnumpy(idd), idx)
        want = [PL.max_pool2d_backward_reference(idx, y_bar, x.shape, k, s, p),
                PL.max_pool2d_gather_reference(idx, x, k, s, p),
                PL.avg_pool2d_forward_reference(np.nan_to_num(x), k, s, p),
                PL.avg_pool2d_backward_reference(y_bar, x.shape, k, s, p)]
        for g, r in zip(got, want):
            np.testing.assert_allclose(cp.asnumpy(g), r, **TOL[dt])


@pytest.mark.parametrize("impl", IMPLS)
def test_pointwise_bitpack_fewbit(cp, impl):
    import tinymoon.kernels as K
    from tinymoon.kernels import pointwise as P
    from table_checks import act_params, check_matches_table, inputs
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(10007) * 3).astype(np.float32)
    xd = cp.asarray(x)
    with K.use(impl):
        for name in K.COMPILED:
            y, d = K.act_forward(name, xd)
            yr, dr = P.act_reference(name, x)
            np.testing.assert_allclose(cp.asnumpy(y), yr, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(cp.asnumpy(d), dr, rtol=1e-5, atol=1e-6)
            for dt in (np.float32, np.float64):            # held to the table: NaN, ±inf, kinks, odd size
                xs = inputs(1001, dt)
                with np.errstate(invalid="ignore", over="ignore"):
                    y, d = K.act_forward(name, cp.asarray(xs), **act_params(name))
                check_matches_table(name, xs, cp.asnumpy(y), cp.asnumpy(d))
        y, packed = K.relu_mask_forward(xd)
        np.testing.assert_array_equal(cp.asnumpy(packed), np.packbits(x > 0, bitorder="little"))
        np.testing.assert_array_equal(cp.asnumpy(K.masked_grad(packed, xd, 0.1)), np.where(x > 0, x, np.float32(0.1) * x))
        y, packed = K.relu_mask_forward(xd, 0.1)
        np.testing.assert_array_equal(cp.asnumpy(y), np.where(x > 0, x, np.float32(0.1) * x))
        for bits in range(1, 9):
            idx = rng.integers(0, 2**bits, 1001).astype(np.uint8)
            p = K.pack_bins(cp.asarray(idx), bits)
            np.testing.assert_array_equal(cp.asnumpy(K.unpack_bins(p, bits, 1001)), idx)
            borders = np.sort(rng.standard_normal(2**bits - 1))
            levels = rng.standard_normal(2**bits)
            y, p = K.fewbit_forward("silu", xd, borders, bits)
            want = levels.astype(np.float32)[np.searchsorted(borders, x)] * x
            np.testing.assert_array_equal(cp.asnumpy(K.fewbit_backward(p, levels, bits, xd)), want)


def test_default_for_cupy_arrays_is_cupy(cp, impl):
    assert dispatch.choose("matmul", cp.ones((2, 2))) == "cupy"
