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


# ---- the fused kernels, held bit for bit to the reference ------------------------------------------------------

def _cases(n, bits, dtype, seed):
    """x with NaN, ±inf, ±0, every border, its float neighbours in x's dtype, and normal values; borders
    with one not representable in float32; levels; ȳ with ±inf and NaN."""
    rng = np.random.default_rng(seed)
    borders = np.sort(rng.standard_normal(2 ** bits - 1) * 2)
    borders[0] = 0.1
    borders = np.sort(borders)
    near = borders.astype(dtype)
    special = np.concatenate([[np.nan, np.inf, -np.inf, 0.0, -0.0], borders, near,
                              np.nextafter(near, dtype(np.inf)), np.nextafter(near, dtype(-np.inf))]).astype(dtype)
    x = (rng.standard_normal(n) * 3).astype(dtype)
    x[:min(n, special.size)] = special[:n]
    rng.shuffle(x)
    y_bar = rng.standard_normal(n).astype(dtype)
    y_bar[:min(n, 3)] = [np.inf, -np.inf, np.nan][:n]
    return x, borders, rng.standard_normal(2 ** bits), y_bar


def _value(name, x):
    """The value the fused kernel must give, bit for bit: the exact kernel's own (pointwise.act_numba's y; its
    np.tanh for tanh)."""
    return __import__("tinymoon.kernels.pointwise", fromlist=["act_numba"]).act_numba(name, x)[0]


def _bitwise(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(
        a.view(np.uint32 if a.dtype == np.float32 else np.uint64), b.view(np.uint32 if b.dtype == np.float32 else np.uint64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bits", list(range(1, 9)))
def test_fused_kernels_bit_exact_to_the_reference(bits, dtype):
    for n in (0, 1, 7, 8, 9, 15, 2047, 2048, 2049, 6001):
        x, borders, levels, y_bar = _cases(n, bits, dtype, seed=n + 17 * bits)
        idx = np.searchsorted(borders, x.astype(np.float64))
        for name in ("gelu", "silu", "tanh", "sigmoid", "elu", "softplus"):
            with np.errstate(all="ignore"):
                y, packed = F.fewbit_forward_numba(name, x, borders, bits)
                want_y = _value(name, x)
            assert np.array_equal(packed, K.pack_bins(idx, bits)), (name, n)
            assert _bitwise(y, want_y) or np.array_equal(y, want_y, equal_nan=True), (name, n)
        got = F.fewbit_backward_numba(packed, levels, bits, y_bar)
        with np.errstate(all="ignore"):
            want = levels.astype(dtype)[idx] * y_bar
        assert _bitwise(got, want), n
        assert _bitwise(F.fewbit_backward_reference(packed, levels, bits, y_bar), want)


@pytest.mark.parametrize("bits", [1, 3, 4, 8])
def test_fused_kernels_large_odd_size_both_compilations(bits):
    # 1000003 elements: many blocks and a short last group; the parallel and the serial compilation alike
    import tinymoon.kernels.pointwise as P
    for dtype in (np.float32, np.float64):
        x, borders, levels, y_bar = _cases(1000003, bits, dtype, seed=bits)
        idx = np.searchsorted(borders, x.astype(np.float64))
        want_packed = K.pack_bins(idx, bits)
        t = F.thresholds(borders, dtype)
        tt, width = t, (0,) * bits
        k = P._constants(np.dtype(dtype), "silu", {})
        lv = levels.astype(dtype)
        with np.errstate(all="ignore"):
            y_want = P.act_numba("silu", x)[0]
        for compiled in (F._fewbit_forward_kernel.serial, F._fewbit_forward_kernel.parallel):
            packed, y = np.empty(want_packed.size, np.uint8), np.empty_like(x)
            with np.errstate(all="ignore"):
                compiled(P.COMPILED["silu"][0], x, k, tt, width, y, packed)
            assert np.array_equal(packed, want_packed)
            assert _bitwise(y, y_want) or np.array_equal(y, y_want, equal_nan=True)      # the value, both ways
        with np.errstate(all="ignore"):
            want = lv[idx] * y_bar
        for compiled in (F._fewbit_backward_kernel.serial, F._fewbit_backward_kernel.parallel):
            out = np.empty_like(y_bar)
            compiled(want_packed, lv, width, y_bar, out)
            assert _bitwise(out, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_kernels_non_contiguous_inputs(dtype):
    x, borders, levels, y_bar = _cases(3 * 1001, 3, dtype, seed=5)
    xs, gs = x.reshape(3, 1001).T, y_bar[::3]                     # a transposed view and a strided one
    y, packed = K.fewbit_forward("elu", xs, borders, 3)
    assert y.shape == xs.shape
    assert np.array_equal(packed, K.pack_bins(np.searchsorted(borders, xs.astype(np.float64)), 3))
    g = K.fewbit_backward(packed[:(gs.size * 3 + 7) // 8], levels, 3, gs)
    idx = np.searchsorted(borders, xs.ravel().astype(np.float64))[:gs.size]
    with np.errstate(all="ignore"):
        assert _bitwise(g, levels.astype(dtype)[idx] * gs)


@pytest.mark.parametrize("bits", list(range(1, 9)))
def test_swar_squeeze_and_spread_are_inverse(bits):
    # 8 codes of `bits` bits, one per byte of a word, squeezed into 8·bits bits (the bitpack layout) and back
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 1 << bits, 8 * 64).astype(np.uint8)
    words = codes.view(np.uint64)
    packed = K.pack_bins(codes, bits)
    for g, w in enumerate(words):
        s = F._squeeze.py_func(np.uint64(w), bits)
        assert int(s).to_bytes(8, "little")[:bits] == packed[g * bits:(g + 1) * bits].tobytes()
        assert F._spread.py_func(s, bits) == w


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_tree_search_with_tied_borders(bits):
    # the b-step search (b <= 4) against searchsorted(side="left") when borders repeat: all equal, ties at
    # both ends, x on and beside every border, NaN and ±inf
    K_ = 2 ** bits - 1
    rng = np.random.default_rng(bits)
    tables = [np.zeros(K_), np.sort(np.round(rng.standard_normal(K_), 1)),
              np.concatenate([np.full(K_ // 2, -1.0), np.full(K_ - K_ // 2, 2.0)])]
    for borders in tables:
        for dtype in (np.float32, np.float64):
            t = borders.astype(dtype)
            x = np.concatenate([t, np.nextafter(t, dtype(np.inf)), np.nextafter(t, dtype(-np.inf)),
                                [np.nan, np.inf, -np.inf, 0.0, -0.0], rng.standard_normal(3000)]).astype(dtype)
            idx = np.searchsorted(borders, x.astype(np.float64))
            _, packed = F.fewbit_forward_numba("gelu", x, borders, bits)
            assert np.array_equal(packed, K.pack_bins(idx, bits)), (bits, borders, dtype)


def test_three_bit_word_path_matches_the_byte_layout():
    # 3 bits packs eight groups (64 codes) into three 64-bit words; the bytes must be the layout's, for
    # every count of whole word groups, leftover groups and a short last group
    rng = np.random.default_rng(3)
    for n in (63, 64, 65, 127, 128, 129, 2048 + 64 * 3 + 17):
        codes = rng.integers(0, 8, n).astype(np.uint8)
        borders = np.arange(7) + 0.5
        _, packed = F.fewbit_forward_numba("elu", codes.astype(np.float32), borders, 3)
        assert np.array_equal(packed, K.pack_bins(codes, 3)), n
        lv = np.arange(8.0)
        got = F.fewbit_backward_numba(packed, lv, 3, np.ones(n, np.float32))
        assert np.array_equal(got, codes.astype(np.float32)), n
