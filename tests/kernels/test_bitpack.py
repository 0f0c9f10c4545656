import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinymoon.kernels as K
from tinymoon.kernels import bitpack as B

# kernels tests: deterministic examples, no example database, no deadline (first calls compile)
KSET = settings(deadline=None, max_examples=30, derandomize=True, database=None)


def spec_pack(idx, bits):
    """The layout contract, one bit at a time: stream bit j = bit (j % bits) of idx[j // bits]."""
    out = np.zeros((len(idx) * bits + 7) // 8, np.uint8)
    for j in range(len(idx) * bits):
        if (int(idx[j // bits]) >> (j % bits)) & 1:
            out[j // 8] |= 1 << (j % 8)
    return out


@KSET
@given(n=st.integers(0, 70), bits=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_pack_bins_all_impls_match_spec(n, bits, seed):
    idx = np.random.default_rng(seed).integers(0, 2**bits, n).astype(np.uint8)
    want = spec_pack(idx, bits)
    for f in (B.pack_bins_reference, B.pack_bins_numba, K.pack_bins):
        got = f(idx, bits)
        assert got.dtype == np.uint8 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    for f in (B.unpack_bins_reference, B.unpack_bins_numba, K.unpack_bins):
        got = f(want, bits, n)
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, idx)


@KSET
@given(shape=st.lists(st.integers(0, 13), min_size=1, max_size=3), seed=st.integers(0, 2**16))
def test_pack_bits_matches_numpy_packbits(shape, seed):
    mask = np.random.default_rng(seed).random(shape) < 0.5
    want = np.packbits(mask.ravel(), bitorder="little")
    for f in (B.pack_bits_reference, B.pack_bits_numba, K.pack_bits):
        np.testing.assert_array_equal(f(mask), want)
    for f in (B.unpack_bits_reference, B.unpack_bits_numba, K.unpack_bits):
        got = f(want, mask.size)
        assert got.dtype == np.bool_
        np.testing.assert_array_equal(got, mask.ravel())


@KSET
@given(n=st.integers(0, 70), bits=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_group_kernels_directly(n, bits, seed):
    # pack_bins_numba routes bits=1 to np.packbits: exercise the group kernels at every width here
    idx = np.random.default_rng(seed).integers(0, 2**bits, n).astype(np.uint8)
    out = np.empty((n * bits + 7) // 8, np.uint8)
    B._pack_groups(idx, bits, out)
    np.testing.assert_array_equal(out, spec_pack(idx, bits))
    back = np.empty(n, np.uint8)
    B._unpack_groups(out, bits, n, back)
    np.testing.assert_array_equal(back, idx)


def test_bits_one_is_packbits_little_and_int_idx_accepted():
    idx = np.random.default_rng(0).integers(0, 2, 1001)
    np.testing.assert_array_equal(K.pack_bins(idx, 1), np.packbits(idx.astype(bool), bitorder="little"))
    with K.use("numba"):
        np.testing.assert_array_equal(K.pack_bins(idx, 1), np.packbits(idx.astype(bool), bitorder="little"))


def test_pack_bits_nonbool_mask_counts_nonzero():
    m = np.array([0.0, 2.5, -1.0, 0.0, 3.0])
    for impl in ("reference", "numba"):
        with K.use(impl):
            np.testing.assert_array_equal(K.unpack_bits(K.pack_bits(m), 5), m != 0)


@pytest.mark.parametrize("bits", [0, 9, -1, 2.0, True, "3"])
def test_invalid_bits_raise_naming_range(bits):
    with pytest.raises(ValueError, match="1..8"):
        K.pack_bins(np.zeros(4, np.uint8), bits)
    with pytest.raises(ValueError, match="1..8"):
        K.unpack_bins(np.zeros(4, np.uint8), bits, 4)


def test_out_of_range_idx_and_short_buffer_raise():
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        K.pack_bins(np.array([0, 8]), 3)
    with pytest.raises(ValueError, match="need 4 bytes"):
        K.unpack_bins(np.zeros(3, np.uint8), 3, 10)
    with pytest.raises(ValueError, match="uint8"):
        K.unpack_bits(np.zeros(3, np.int64), 10)
    with pytest.raises(ValueError, match="integer"):
        K.pack_bins(np.zeros(3), 2)
