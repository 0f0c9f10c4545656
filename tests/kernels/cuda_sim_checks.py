"""Run by test_cuda_sim.py under NUMBA_ENABLE_CUDASIM=1: the "cuda" implementation against the reference.

Plain script (asserts, prints ALL OK): pytest's process has already imported numba.cuda without the
simulator, so these run in a fresh interpreter.  Small random cases covering odd sizes, strides 1-3,
asymmetric padding, dilation, groups, both float dtypes and every bit width.
"""
import os
import sys

import numpy as np

assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", "run me with NUMBA_ENABLE_CUDASIM=1"

import tinymoon.kernels as K  # noqa: E402
from tinymoon.kernels import conv as C, dispatch, fewbit as F, pointwise as P, pool as PL  # noqa: E402

rng = np.random.default_rng(0)
TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-11, atol=1e-12)}
assert "cuda" in K.available_impls()


def check_matmul():
    for sa, sb, dt in [((5, 7), (7, 3), np.float32), ((2, 1, 17, 9), (3, 9, 18), np.float64),
                       ((9,), (9, 4), np.float32), ((2, 4, 5), (5,), np.float64)]:
        a, b = rng.standard_normal(sa).astype(dt), rng.standard_normal(sb).astype(dt)
        with K.use("cuda"):
            got = K.matmul(a, b)
        assert got.shape == np.matmul(a, b).shape and got.dtype == dt
        np.testing.assert_allclose(got, np.matmul(a, b), **TOL[dt])


def check_conv():
    cases = [((2, 4, 5, 6), (6, 2, 3, 2), (2, 1), ((1, 0), (2, 1)), (1, 2), 2, np.float64),
             ((1, 3, 7, 5), (2, 3, 2, 3), (3, 2), ((0, 2), (1, 0)), (2, 1), 1, np.float32),
             ((2, 6, 4, 4), (3, 2, 1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), 3, np.float32)]
    for xs, ws, stride, padding, dilation, groups, dt in cases:
        args = (stride, padding, dilation, groups)
        x, w = rng.standard_normal(xs).astype(dt), rng.standard_normal(ws).astype(dt)
        y_ref = C.conv2d_forward_reference(x, w, *args)
        y_bar = rng.standard_normal(y_ref.shape).astype(dt)
        b = rng.standard_normal(ws[0]).astype(dt)
        with K.use("cuda"):
            y = K.conv2d_forward(x, w, *args)
            yb = K.conv2d_forward(x, w, *args, bias=b)
            x_bar = K.conv2d_grad_input(y_bar, w, x.shape, *args)
            w_bar = K.conv2d_grad_weight(x, y_bar, w.shape, *args)
        for got, want in [(y, y_ref), (yb, y_ref + b.reshape(1, -1, 1, 1)), (x_bar, C.conv2d_grad_input_reference(y_bar, w, x.shape, *args)),
                          (w_bar, C.conv2d_grad_weight_reference(x, y_bar, w.shape, *args))]:
            assert got.dtype == dt and got.shape == want.shape
            np.testing.assert_allclose(got, want, **TOL[dt])


def check_pool():
    # overlapping and non-overlapping windows, padding, ties, NaN, a window of only -inf, both dtypes
    cases = [((2, 3, 7, 6), (3, 2), (2, 1), (1, 1), np.float64), ((1, 2, 5, 5), (2, 2), (2, 2), (0, 0), np.float32),
             ((1, 1, 4, 6), (3, 3), (1, 2), (1, 0), np.float32)]
    for xs, k, s, p, dt in cases:
        x = np.round(rng.standard_normal(xs) * 2).astype(dt)      # rounded: ties
        x.flat[3] = np.nan
        x[..., 0, :] = -np.inf
        y_ref, idx_ref = PL.max_pool2d_forward_reference(x, k, s, p)
        y_bar = rng.standard_normal(y_ref.shape).astype(dt)
        a = rng.standard_normal(xs).astype(dt)
        with K.use("cuda"):
            y, idx = K.max_pool2d_forward(x, k, s, p)
            x_bar = K.max_pool2d_backward(idx_ref, y_bar, xs, k, s, p)
            got = K.max_pool2d_gather(idx_ref, a, k, s, p)
            ya = K.avg_pool2d_forward(a, k, s, p)
            xa = K.avg_pool2d_backward(y_bar, xs, k, s, p)
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(idx, idx_ref)
        assert idx.dtype == idx_ref.dtype == np.uint8
        np.testing.assert_allclose(x_bar, PL.max_pool2d_backward_reference(idx_ref, y_bar, xs, k, s, p), **TOL[dt])
        np.testing.assert_array_equal(got, PL.max_pool2d_gather_reference(idx_ref, a, k, s, p))
        np.testing.assert_allclose(ya, PL.avg_pool2d_forward_reference(a, k, s, p), **TOL[dt])
        np.testing.assert_allclose(xa, PL.avg_pool2d_backward_reference(y_bar, xs, k, s, p), **TOL[dt])


def check_pointwise():
    from table_checks import act_params, check_matches_table, inputs
    for dt in (np.float32, np.float64):
        for name in K.COMPILED:                 # the table's special values (NaN, ±inf, kinks) at an odd size
            xs = inputs(37, dt)
            with K.use("cuda"), np.errstate(invalid="ignore", over="ignore"):
                y, d = K.act_forward(name, xs, **act_params(name))
            check_matches_table(name, xs, y, d)
        x = (rng.standard_normal(37) * 4).astype(dt)
        x[:3] = 0
        with K.use("cuda"):
            y, packed = K.relu_mask_forward(x.reshape(37, 1))
            g = K.masked_grad(packed, x, 0.1)
        np.testing.assert_array_equal(y.ravel(), np.maximum(x, 0))
        np.testing.assert_array_equal(packed, np.packbits(x > 0, bitorder="little"))
        np.testing.assert_array_equal(g, np.where(x > 0, x, dt(0.1) * x))
        with K.use("cuda"):
            y, packed = K.relu_mask_forward(x, 0.1)
        np.testing.assert_array_equal(y, np.where(x > 0, x, dt(0.1) * x))
        np.testing.assert_array_equal(packed, np.packbits(x > 0, bitorder="little"))


def check_bitpack_and_fewbit():
    for bits in range(1, 9):
        for n in (0, 1, 13, 29):
            idx = rng.integers(0, 2**bits, n).astype(np.uint8)
            with K.use("reference"):
                want = K.pack_bins(idx, bits)
            with K.use("cuda"):
                packed = K.pack_bins(idx, bits)
                back = K.unpack_bins(packed, bits, n)
            np.testing.assert_array_equal(packed, want)
            np.testing.assert_array_equal(back, idx)
        for dt in (np.float32, np.float64):        # the same bins as the host kernels: borders, NaN, ±inf
            borders = np.sort(rng.standard_normal(2**bits - 1) * 2)
            x = np.concatenate([[np.nan, np.inf, -np.inf, 0.1], borders[:4], (rng.standard_normal(14) * 2)])
            x = x.astype(dt)                       # 22 elements: a short last group for every bit width
            levels = rng.standard_normal(2**bits)
            y_bar = rng.standard_normal(x.size).astype(dt)
            with K.use("cuda"), np.errstate(invalid="ignore"):
                y, packed = K.fewbit_forward("gelu", x, borders, bits)
                x_bar = K.fewbit_backward(packed, levels, bits, y_bar)
            with np.errstate(invalid="ignore"):
                yr, pr = F.fewbit_forward_reference("gelu", x, borders, bits)
                yn, pn = F.fewbit_forward_numba("gelu", x, borders, bits)
            np.testing.assert_array_equal(packed, pr)
            np.testing.assert_array_equal(packed, pn)
            np.testing.assert_allclose(y, yr, **TOL[dt])
            np.testing.assert_array_equal(x_bar, levels.astype(dt)[np.searchsorted(borders, x)] * y_bar)
    m = rng.random(29) < 0.5
    with K.use("cuda"):
        np.testing.assert_array_equal(K.pack_bits(m), np.packbits(m, bitorder="little"))
        np.testing.assert_array_equal(K.unpack_bits(np.packbits(m, bitorder="little"), 29), m)


def check_default_stays_on_cpu():
    # host arrays never go to the simulator unless asked for
    assert dispatch.choose("act_forward", np.ones(1 << 20, np.float32)) == "numba"


if __name__ == "__main__":
    for check in (check_matmul, check_conv, check_pool, check_pointwise, check_bitpack_and_fewbit, check_default_stays_on_cpu):
        check()
        print(check.__name__, "ok", flush=True)
    print("ALL OK")
    sys.exit(0)
