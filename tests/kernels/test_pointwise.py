import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinymoon.kernels as K
from tinymoon.kernels import pointwise as P

# kernels tests: deterministic examples, no example database, no deadline (first calls compile)
KSET = settings(deadline=None, max_examples=30, derandomize=True, database=None)

PARAMS = {"leaky_relu": {"slope": 0.1}, "elu": {"alpha": 0.7}, "softplus": {"beta": 2.0}}
shapes = st.lists(st.integers(0, 17), min_size=1, max_size=3)


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if np.dtype(dtype) == np.float32 else dict(rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", sorted(K.COMPILED))
@KSET
@given(shape=shapes, dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_numba_matches_reference(name, shape, dtype, seed):
    x = (np.random.default_rng(seed).standard_normal(shape) * 4).astype(dtype)
    params = PARAMS.get(name, {})
    yr, dr = P.act_reference(name, x, **params)
    y, d = P.act_numba(name, x, **params)
    assert y.dtype == d.dtype == dtype and y.shape == d.shape == x.shape
    np.testing.assert_allclose(y, yr, **tol(dtype))
    np.testing.assert_allclose(d, dr, **tol(dtype))


@pytest.mark.parametrize("name", sorted(K.COMPILED))
def test_reference_derivative_matches_finite_differences(name):
    x = np.linspace(-6, 6, 101) + 0.013  # avoid the kink at 0
    params = PARAMS.get(name, {})
    h = 1e-6
    _, d = P.act_reference(name, x, **params)
    fd = (P.act_reference(name, x + h, **params)[0] - P.act_reference(name, x - h, **params)[0]) / (2 * h)
    np.testing.assert_allclose(d, fd, rtol=1e-6, atol=1e-7)


def test_extreme_inputs_stay_finite():
    x = np.array([-1e4, -80.0, -1.0, 0.0, 1.0, 80.0, 1e4], np.float32)
    for name in K.COMPILED:
        for f in (P.act_reference, P.act_numba):
            y, d = f(name, x)
            assert np.isfinite(y).all() and np.isfinite(d).all(), (name, f)


def test_kink_subgradients():
    x = np.zeros(3)
    assert (P.act_numba("relu", x)[1] == 0).all()
    assert (P.act_numba("leaky_relu", x, slope=0.2)[1] == 0.2).all()
    assert (P.act_numba("elu", x, alpha=0.5)[1] == 0.5).all()


def test_matches_torch_activations():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = np.random.default_rng(0).standard_normal(1000) * 3
    fns = {"relu": F.relu, "leaky_relu": lambda t: F.leaky_relu(t, 0.1), "elu": lambda t: F.elu(t, 0.7),
           "gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
           "softplus": lambda t: F.softplus(t, beta=2.0)}       # PyTorch's threshold 20, as the table
    for name, fn in fns.items():
        t = torch.tensor(x, requires_grad=True)
        yt = fn(t)
        yt.sum().backward()
        y, d = K.act_forward(name, x, **PARAMS.get(name, {}))
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-14, err_msg=name)
        np.testing.assert_allclose(d, t.grad.numpy(), rtol=1e-12, atol=1e-14, err_msg=name)


def test_bad_name_params_dtype():
    with pytest.raises(ValueError, match="unknown activation"):
        K.act_forward("swish", np.ones(3))
    with pytest.raises(ValueError, match="unexpected parameters"):
        K.act_forward("relu", np.ones(3), slope=0.1)
    with pytest.raises(ValueError, match="float32 or float64"):
        K.act_forward("relu", np.ones(3, np.int64))


@KSET
@given(shape=shapes, dtype=st.sampled_from([np.float32, np.float64]), slope=st.sampled_from([0.0, 0.01, 0.3]),
       seed=st.integers(0, 2**16))
def test_relu_mask_and_masked_grad(shape, dtype, slope, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    x.ravel()[: x.size // 4] = 0  # exact zeros take the x <= 0 branch
    x.ravel()[x.size // 2:x.size // 2 + 1] = np.nan  # NaN stays NaN in the value, and its bit is 0 (NaN > 0 is false)
    g = rng.standard_normal(shape).astype(dtype)
    for f in (P.relu_mask_forward_reference, P.relu_mask_forward_numba):
        y, packed = f(x)
        np.testing.assert_array_equal(y, np.maximum(x, 0))
        assert not np.signbit(y).any()                       # relu writes +0, never -0
        np.testing.assert_array_equal(packed, np.packbits(x.ravel() > 0, bitorder="little"))
        y, packed_leaky = f(x, slope)
        assert y.dtype == dtype
        np.testing.assert_array_equal(y, np.where(x > 0, x, dtype(slope) * x))
        np.testing.assert_array_equal(packed_leaky, packed)
    g.ravel()[-1:] = np.inf                        # relu's x̄ is exactly 0 where x <= 0, even for ȳ = ∞
    want = np.where(x > 0, g, dtype(slope) * g) if slope else np.where(x > 0, g, dtype(0))
    for f in (P.masked_grad_reference, P.masked_grad_numba):
        got = f(packed, g, slope)
        assert got.dtype == dtype and got.shape == g.shape
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n", [(1 << 18) + 5, 1 << 18, 3 * P.MASK_CHUNK + 13, P.MASK_CHUNK - 3])
def test_relu_mask_kernels_parallel_equal_serial(n):
    """The pool's compilation (chunks of whole bytes split across threads, the last chunk partial) gives the
    serial one's bits, at sizes with and without a partial last byte and chunk."""
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n).astype(np.float32)
    x[::7] = 0
    x[3] = np.nan
    g = rng.standard_normal(n).astype(np.float32)
    for slope in (np.float32(0), np.float32(0.25)):
        out = {}
        for name in ("serial", "parallel"):
            run = getattr(P._relu_mask_kernel, name)
            y, packed = np.empty_like(x), np.empty((n + 7) // 8, np.uint8)
            run(x, slope, y, packed)
            x_bar = np.empty_like(g)
            getattr(P._masked_grad_kernel, name)(packed, g, slope, x_bar)
            out[name] = (y, packed, x_bar)
        for a, b in zip(out["serial"], out["parallel"]):
            np.testing.assert_array_equal(a, b)
        y_ref, packed_ref = P.relu_mask_forward_reference(x, float(slope))
        np.testing.assert_array_equal(out["parallel"][0], y_ref)
        np.testing.assert_array_equal(out["parallel"][1], packed_ref)


def _same_bits(a, b, what):
    """Bit for bit (so +0 and −0 differ), every NaN equal to every NaN: a NaN's sign and payload are not a
    value (libm and LLVM's folds differ in them; float64 softplus at NaN gives either sign)."""
    assert np.array_equal(np.isnan(a), np.isnan(b)), what
    ok = ~np.isnan(a)
    np.testing.assert_array_equal(a[ok].view(np.uint8), b[ok].view(np.uint8), err_msg=what)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 7, 17, 1000, 4099])
def test_activation_kernels_serial_equal_parallel(n, dtype):
    """Both compilations of the activation passes give the same bits (each vectorises its loop; the remainder
    of a vector width runs as scalar code), for every compiled body, with ±0, ±inf and NaN among the inputs:
    which one runs depends on the size and the machine only.  (The few-bit forward's value, the same bodies
    inlined per block, is held to act_numba's y in tests/kernels/test_fewbit.py.)"""
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * 6).astype(dtype)
    x[:min(n, 5)] = np.array([0.0, -0.0, np.inf, -np.inf, np.nan], dtype)[:min(n, 5)]
    for name in sorted(K.COMPILED):
        code, p = P.parse_activation(name, {})
        k = P._constants(x.dtype, name, p)
        out = {}
        with np.errstate(all="ignore"):
            for how in ("serial", "parallel"):
                y, d = np.empty_like(x), np.empty_like(x)
                getattr(P._act_kernel, how)(code, x, k, y, d)
                v = np.empty_like(x)        # tanh's float32 f' (its value comes from np.tanh)
                getattr(P._tanh_grad_float32_kernel, how)(x, k, v)
                out[how] = (y, d, v)
        for a, b, what in zip(out["serial"], out["parallel"], ("y", "f'", "tanh's float32 f'")):
            _same_bits(a, b, f"{name} {what}: serial against parallel")


def test_host_arrays_use_numba_by_default():
    x = np.ones(1 << 18, np.float32)        # a threads.Kernel: serial or the pool by size
    assert K.dispatch.choose("act_forward", x) == "numba"
    assert K.dispatch.choose("act_forward", x[:10]) == "numba"
    assert math.isclose(float(K.act_forward("sigmoid", x)[0][0]), 1 / (1 + math.exp(-1)), rel_tol=1e-6)
