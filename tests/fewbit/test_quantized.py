"""The quantised primitives (tinymoon/fewbit/quantized.py) and the tensor functions (functional.py).

- backward is exactly levels[idx] · ȳ (bitwise), float32 and float64, both kernel implementations; relu's and
  leaky_relu's is the exact primitive's (bitwise);
- the saved bytes of one activation are exactly ceil(n·b/8), read from tinymoon.memory;
- check_grads: the adjoint identity (jvp vs vjp) and the inverse identities on the surrogate; finite
  differences too for the exact piecewise-linear family;
- the forward value is the activation's exact value (the registry's, and PyTorch's when importable);
- bad input raises FewBitError.
"""
import math

import numpy as np
import pytest

import tinymoon as tm
import tinymoon.fewbit as fb
from tinymoon import kernels
from tinymoon.fewbit import FewBitError, activation, continuous_names, piecewise_names
from tinymoon.testing import check_grads

IMPLS = ["reference", "numba"]
NONDEFAULT = {"elu": {"alpha": 0.5}, "celu": {"alpha": 2.0}, "softplus": {"beta": 2.0, "threshold": 5.0},
              "leaky_relu": {"negative_slope": 0.2}, "hardtanh": {"min_val": -2.0, "max_val": 0.5}}


def _x(n, dtype, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, scale, n)
    x[: min(n, 7)] = [-3.0, 0.0, 3.0, 6.0, -1.0, 1.0, 0.5][: min(n, 7)]     # kinks and borders of some tables
    return x.astype(dtype)


def _bits(a):
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def _grad(fn, x, y_bar):
    _, vjp_fn = tm.vjp(fn, tm.tensor(x))
    return vjp_fn(tm.tensor(y_bar))[0].numpy()


# ---- backward: exactly levels[idx] * y_bar ----------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", continuous_names())
def test_backward_is_levels_at_index_times_ybar_bitwise(name, dtype, impl):
    n = 5003                                    # above the numba threshold, not a multiple of 8
    x, y_bar = _x(n, dtype), _x(n, dtype, seed=1, scale=1.0)
    for bits in (1, 2, 3, 4):
        table = fb.get_table(name, bits)
        with kernels.use(impl):
            got = _grad(lambda t: fb.activate(name, t, bits=bits), x, y_bar)
        want = table.levels.astype(dtype)[table.index(x)] * y_bar
        assert got.dtype == dtype
        assert np.array_equal(_bits(got), _bits(want)), (name, bits)


@pytest.mark.parametrize("bits", [5, 8])
def test_backward_bitwise_wide_tables(bits):
    table = fb.solve("gelu", bits, grid=512)
    x, y_bar = _x(4099, np.float32), _x(4099, np.float32, seed=1)
    got = _grad(lambda t: fb.gelu(t, table=table), x, y_bar)
    assert np.array_equal(_bits(got), _bits(table.levels.astype(np.float32)[table.index(x)] * y_bar))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", piecewise_names())
def test_piecewise_backward_is_the_exact_mask(name, dtype, impl):
    # relu and leaky_relu keep the exact primitive's sign mask and take its backward: their gradient is the
    # exact primitive's bit for bit (relu: exactly +0 off the mask, also where ȳ = ±inf, as PyTorch), and
    # equal in value to levels[code]·ȳ wherever that is a number; the others are levels[code]·ȳ bitwise
    act = activation(name)
    for params in ({}, NONDEFAULT.get(name)):
        if params is None:
            continue
        x, y_bar = _x(5003, dtype), _x(5003, dtype, seed=1, scale=1.0)
        y_bar[10:13] = [np.inf, -np.inf, np.nan]
        x[10:13] = -1.0                                   # off the mask
        with kernels.use(impl), np.errstate(invalid="ignore"):     # 0·inf in levels[code]·ȳ is NaN
            got = _grad(lambda t: fb.activate(name, t, **params), x, y_bar)
            want = act.code_levels(**params).astype(dtype)[act.code(x, **params)] * y_bar
        if name in ("relu", "leaky_relu"):
            exact = _grad(lambda t: getattr(tm, name)(t, **params), x, y_bar)
            assert np.array_equal(_bits(got), _bits(exact)), (name, params)
            assert np.array_equal(got, want, equal_nan=True) if params else \
                np.array_equal(np.delete(got, [10, 11, 12]), np.delete(want, [10, 11, 12]))
            if name == "relu":
                assert np.array_equal(_bits(got[10:13]), _bits(np.zeros(3, dtype)))    # +0, not 0·inf
        else:
            assert np.array_equal(_bits(got), _bits(want))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bits", [1, 3, 6, 7, 8])
def test_bin_index_is_searchsorted_left(bits, dtype):
    from tinymoon.fewbit.quantized import bin_index
    rng = np.random.default_rng(bits)
    borders = np.sort(rng.normal(0, 2, 2 ** bits - 1))
    borders[0] = 0.1                                        # not representable in float32
    borders.sort()
    near = borders.astype(dtype)
    x = np.concatenate([near, np.nextafter(near, dtype(np.inf)), np.nextafter(near, dtype(-np.inf)),
                        rng.normal(0, 3, 999).astype(dtype), np.array([np.nan, np.inf, -np.inf], dtype)])
    x = x.astype(dtype)
    idx = bin_index(x.reshape(3, -1) if x.size % 3 == 0 else x, borders).ravel()
    assert idx.dtype == np.uint8
    assert np.array_equal(idx, np.searchsorted(borders, x.astype(np.float64), side="left"))


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 15, 1001, 4099])
@pytest.mark.parametrize("bits", list(range(1, 9)))
def test_packing_and_lookup_follow_the_kernels_layout(n, bits):
    from tinymoon.fewbit.quantized import PackedBins, lookup, pack_codes
    idx = np.random.default_rng(n + 10 * bits).integers(0, 1 << bits, n).astype(np.uint8)
    with kernels.use("reference"):
        want = kernels.pack_bins(idx, bits)
    packed = pack_codes(idx, bits)
    assert packed.dtype == np.uint8 and packed.size == math.ceil(n * bits / 8)
    assert np.array_equal(packed, want)
    levels = np.random.default_rng(bits).normal(size=1 << bits)
    bins = PackedBins(packed, bits, (n,))
    assert np.array_equal(bins.unpack(), idx)
    for dt in (np.float32, np.float64):
        assert np.array_equal(lookup(bins, levels, dt), levels.astype(dt)[idx])


def test_packing_reference_vector():
    from tinymoon.fewbit.quantized import pack_codes
    assert pack_codes(np.array([0, 1, 4, 7], np.uint8), 3).tolist() == [0x08, 0x0F]   # fewbit's codec test


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_forward_kernel_gives_the_same_bins(monkeypatch, dtype):
    from tinymoon.fewbit import quantized
    x, y_bar = _x(5003, dtype), _x(5003, dtype, seed=1)
    for name in ("gelu", "elu", "relu"):
        split = _grad(lambda t: fb.activate(name, t, bits=3), x, y_bar)
        monkeypatch.setattr(quantized, "FUSED_FORWARD", True)
        monkeypatch.setattr(quantized, "FUSED_BACKWARD", True)
        fused = _grad(lambda t: fb.activate(name, t, bits=3), x, y_bar)
        monkeypatch.setattr(quantized, "FUSED_FORWARD", False)
        monkeypatch.setattr(quantized, "FUSED_BACKWARD", False)
        assert np.array_equal(_bits(split), _bits(fused))


def test_jvp_uses_the_same_quantised_derivative():
    x, t = _x(1001, np.float64), _x(1001, np.float64, seed=2)
    table = fb.get_table("silu", 2)
    _, y_dot = tm.jvp(lambda v: fb.silu(v, bits=2), [tm.tensor(x)], [tm.tensor(t)])
    assert np.array_equal(y_dot.numpy(), table.levels[table.index(x)] * t)


def test_non_contiguous_input_and_broadcast_cotangent():
    x = _x(60, np.float32).reshape(6, 10).T                 # a transposed view
    xt = tm.tensor(x, requires_grad=True)
    fb.tanh(xt, bits=3).sum().backward()                    # ȳ is a broadcast of 1
    table = fb.get_table("tanh", 3)
    assert np.array_equal(xt.grad.numpy(), table.levels.astype(np.float32)[table.index(x)])


# ---- memory: ceil(n b / 8) bytes per activation -------------------------------------------------------

@pytest.mark.parametrize("n", [1, 7, 1000, 4099])
@pytest.mark.parametrize("bits", list(range(1, 9)))
def test_saved_bytes_are_ceil_n_bits_over_8(n, bits):
    table = fb.solve("gelu", bits, grid=256) if bits > 4 else None
    x = tm.tensor(_x(n, np.float32), requires_grad=True)
    h = x * 2.0                                             # not a leaf: its residuals would count
    before = tm.memory.saved_bytes()
    y = fb.gelu(h, bits=bits, table=table)
    assert tm.memory.saved_bytes() - before == math.ceil(n * bits / 8)
    before = tm.memory.saved_bytes()
    z = fb.relu6(h, bits=bits)                              # exact mask: always 1 bit
    assert tm.memory.saved_bytes() - before == math.ceil(n / 8)
    del y, z


def test_saved_bytes_against_the_exact_activation():
    x = tm.tensor(_x(1 << 14, np.float32), requires_grad=True)
    h = x * 2.0
    b0 = tm.memory.saved_bytes()
    y_exact = tm.gelu(h)
    b1 = tm.memory.saved_bytes()
    y_2bit = fb.gelu(h, bits=2)
    b2 = tm.memory.saved_bytes()
    assert b1 - b0 == 4 * (1 << 14) and b2 - b1 == (1 << 14) // 4         # 16x smaller at 2 bits
    del y_exact, y_2bit


def test_no_grad_saves_nothing_and_gives_the_same_value():
    x = tm.tensor(_x(100, np.float64), requires_grad=True)
    y = fb.mish(x, bits=2)
    before = tm.memory.saved_bytes()
    with tm.no_grad():
        y2 = fb.mish(x, bits=2)
    assert tm.memory.saved_bytes() == before and y2.requires_grad is False
    np.testing.assert_array_equal(y.numpy(), y2.numpy())


# ---- gradient identities --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", continuous_names())
def test_check_grads_surrogate(name):
    x = _x(40, np.float64, seed=3)
    # adjoint identity (jvp and vjp both use q) and inverse identities (x̄ / q, fragments where |q| < tol)
    check_grads(lambda t: fb.activate(name, t, bits=3), [x], modes=("vjp", "vijp"))
    check_grads(lambda t: fb.activate(name, t, bits=1) * 2.0, [x], modes=("vjp", "vijp"))


@pytest.mark.parametrize("name", piecewise_names())
def test_check_grads_piecewise_exact(name):
    params = NONDEFAULT.get(name, {})
    kinks = activation(name).breakpoints(**params)
    x = np.random.default_rng(4).uniform(-8, 8, 60)
    x = x[np.min(np.abs(x[:, None] - kinks[None, :]), axis=1) > 1e-2]
    check_grads(lambda t: fb.activate(name, t, **params), [x])          # jvp vs finite differences too


def test_vijp_fragment_where_a_level_is_zero():
    table = fb.Table([0.0], [0.0, 1.0])                                   # the relu table
    x = _x(50, np.float64)
    check_grads(lambda t: fb.gelu(t, table=table), [x], modes=("vjp", "vijp"))
    _, vf = tm.vijp(lambda t: fb.gelu(t, table=table), tm.tensor(x))
    assert vf.fragments(np.ones(50))[0].size == int(np.sum(x <= 0))


def test_quantised_chain_in_inverse_mode():
    x = _x(30, np.float64)
    w = np.random.default_rng(5).normal(size=(30, 30))
    check_grads(lambda t: fb.tanh(fb.silu(t, bits=2) @ tm.tensor(w), bits=3), [x], modes=("vjp", "vijp"))


# ---- forward: the exact value ----------------------------------------------------------------------------

def _forward_cases():
    for name in continuous_names() + piecewise_names():
        yield name, {}
        if name in NONDEFAULT:
            yield name, NONDEFAULT[name]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,params", list(_forward_cases()))
def test_forward_is_the_exact_value(name, params, dtype):
    x = np.concatenate([np.linspace(-30, 30, 2401), _x(5003, np.float64, scale=4)]).astype(dtype)
    want = activation(name).value(x.astype(np.float64), **params)
    tol = dict(rtol=4e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    for grad in (True, False):                          # with and without the residual (fused kernel or not)
        y = fb.activate(name, tm.tensor(x, requires_grad=grad), **params)
        assert y.dtype == dtype
        np.testing.assert_allclose(y.numpy(), want, **tol)
    if name == "relu6":
        assert fb.relu6(tm.tensor(np.array([7.0, 6.0, 100.0], dtype))).numpy().tolist() == [6.0, 6.0, 6.0]


@pytest.mark.parametrize("name,params", list(_forward_cases()))
def test_forward_matches_torch(name, params):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    fns = {"gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "elu": F.elu,
           "selu": F.selu, "celu": F.celu, "softplus": F.softplus, "mish": F.mish, "softsign": F.softsign,
           "logsigmoid": F.logsigmoid, "hardswish": F.hardswish, "tanhshrink": F.tanhshrink, "relu": F.relu,
           "leaky_relu": F.leaky_relu, "relu6": F.relu6, "hardtanh": F.hardtanh, "hardsigmoid": F.hardsigmoid}
    x = np.concatenate([np.linspace(-30, 30, 2401), _x(500, np.float64, scale=4)])
    y = fb.activate(name, tm.tensor(x, requires_grad=True), **params).numpy()
    np.testing.assert_allclose(y, fns[name](torch.from_numpy(x), **params).numpy(), rtol=1e-12, atol=1e-14)


# ---- parameters and custom tables --------------------------------------------------------------------------

def test_tables_follow_the_activation_parameters():
    x, y_bar = _x(300, np.float64), _x(300, np.float64, seed=1)
    got = _grad(lambda t: fb.elu(t, alpha=0.5, bits=2), x, y_bar)
    table = fb.get_table("elu", 2, alpha=0.5)
    assert table.params["alpha"] == 0.5 and table != fb.get_table("elu", 2)
    assert np.array_equal(got, table.levels[table.index(x)] * y_bar)


def test_custom_table_object_and_pair():
    table = fb.solve("gelu", 2, weight="gaussian", grid=512)
    x, y_bar = _x(300, np.float32), _x(300, np.float32, seed=1)
    want = table.levels.astype(np.float32)[table.index(x)] * y_bar
    assert np.array_equal(_grad(lambda t: fb.gelu(t, table=table), x, y_bar), want)
    assert np.array_equal(_grad(lambda t: fb.gelu(t, table=(table.borders, table.levels)), x, y_bar), want)


# ---- bad input ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [0, 9, -1, 2.5, True, "3"])
def test_bad_bits(bits):
    x = tm.tensor(np.zeros(3, np.float32))
    with pytest.raises(FewBitError, match="bits"):
        fb.gelu(x, bits=bits)
    with pytest.raises(FewBitError, match="bits"):
        fb.relu(x, bits=bits)
    with pytest.raises(FewBitError, match="bits"):
        fb.GELU(bits=bits)


def test_bad_input():
    x = tm.tensor(np.zeros(3, np.float32))
    with pytest.raises(FewBitError, match="unknown activation 'swish2'"):
        fb.activate("swish2", x)
    with pytest.raises(FewBitError, match="strictly increasing"):
        fb.gelu(x, table=([0.5, 0.0, 1.0], [0, 1, 2, 3]))
    with pytest.raises(FewBitError, match="levels"):
        fb.gelu(x, table=([-1.0, 0.0, 1.0], [0, 1, 2]))
    with pytest.raises(FewBitError, match="interior borders"):
        fb.gelu(x, table=([-1.0, 0.0], [0, 1, 2, 3]))
    with pytest.raises(FewBitError, match="2 bits"):
        fb.gelu(x, bits=3, table=fb.get_table("gelu", 2))
    with pytest.raises(FewBitError, match="made for 'silu'"):
        fb.gelu(x, table=fb.get_table("silu", 2))
    with pytest.raises(FewBitError, match="other parameters"):
        fb.elu(x, alpha=2.0, table=fb.get_table("elu", 2))
    with pytest.raises(FewBitError, match="tanh"):
        fb.gelu(x, approximate="tanh")
    with pytest.raises(FewBitError, match="no table"):
        fb.activate("relu", x, table=fb.get_table("gelu", 1))
    with pytest.raises(FewBitError, match="float32 or float64"):
        fb.gelu(tm.tensor(np.arange(3)))
    with pytest.raises(FewBitError, match="unknown parameter"):
        fb.activate("gelu", x, alpha=1.0)
    with pytest.raises(FewBitError, match="alpha must be non-zero"):
        fb.celu(x, alpha=0.0)


# ---- GPU (CuPy) ------------------------------------------------------------------------------------------------

@pytest.mark.gpu
def test_cuda_backward_bitwise():
    if not tm.cuda_available():
        pytest.skip("no CUDA GPU / CuPy")
    import cupy as cp
    for name in ("gelu", "mish", "relu6"):
        x, y_bar = _x(5003, np.float32), _x(5003, np.float32, seed=1)
        xt = tm.tensor(x).to("cuda")
        y, vjp_fn = tm.vjp(lambda t: fb.activate(name, t, bits=3) if name != "relu6" else fb.relu6(t), xt)
        got = cp.asnumpy(vjp_fn(tm.tensor(y_bar).to("cuda"))[0].data)
        act = activation(name)
        if act.piecewise_linear:
            want = act.code_levels().astype(np.float32)[act.code(x)] * y_bar
        else:
            t = fb.get_table(name, 3)
            want = t.levels.astype(np.float32)[t.index(x)] * y_bar
        assert np.array_equal(got, want)
        np.testing.assert_allclose(cp.asnumpy(y.data), act.value(x), rtol=4e-6, atol=1e-6)
