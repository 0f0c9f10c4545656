"""Few-bit activations: keep a b-bit bin index of x instead of x, and a piecewise-constant derivative.

  forward:  y = f(x),  idx = searchsorted(borders, x)  (side "left": borders[idx-1] < x <= borders[idx]),
            packed = pack_bins(idx, b)                  borders: K = 2^b − 1 sorted interior borders
  backward: x̄ = levels[idx] · ȳ                        levels: 2^b derivative values, cast to ȳ's dtype

NaN inputs get idx = K = 2^b − 1, as numpy.searchsorted sorts NaN last.

The Numba kernels (after the forward's value pass) do one pass over memory each, block by block (BLOCK elements, a multiple of 8 so that a
block holds whole groups of 8 codes = whole bytes of the bitpack layout, see bitpack.py):

  forward   1. y = f(x), the exact activation's value bit for bit, by a pass of its own before the kernel
               (pointwise.act_value_numba; tanh: NumPy's SIMD np.tanh), which then only bins and packs;
            2. the block's codes into a small uint8 buffer (in L1): for b <= 4 a branch-free count over the K
               thresholds t (see `thresholds`),   idx = K − #{j : x <= t_j},
               K compares and subtractions per element with no data-dependent branch or load, which LLVM
               vectorises (NaN compares False everywhere: idx = K, the last bin).  Wider tables (b >= 5,
               up to 255 borders) take a branch-free binary search of b steps instead;
            3. pack: each group's 8 code bytes, read as one 64-bit word, are squeezed to 8·b bits by three
               SWAR steps (pairs of fields merged, then pairs of pairs...) and written as b bytes.
  backward  1. the block's groups unpacked into the code buffer (the same SWAR steps backwards);
            2. x̄ = lv[code] · ȳ: for b <= 4 a select tree over the levels (a vector blend per bit of the
               code), a table gather above; lv = the levels cast to ȳ's dtype, so the product is bitwise
               levels.astype(ȳ.dtype)[idx] · ȳ.

Thresholds: the borders are float64; x is float32 or float64.  t_j = the largest value of x's dtype <= s_j,
so for every x of that dtype  x <= s_j  <=>  x <= t_j  — the comparison stays exact without promoting x.

Each kernel is a threads.Kernel: serial below the pool's break-even work, the prange over blocks above it
(blocks write disjoint bytes: no atomics).  The thresholds and levels reach the kernel as tuples, so each
table size is its own compilation and the loops over them are unrolled.
"""
import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from .bitpack import check_bits, nbytes_for, pack_bins_reference, unpack_bins_reference
from .pointwise import act_reference, act_value_numba
from .threads import kernel

BLOCK = 2048            # elements per block: its codes (2 KiB) and values stay in L1
# y = f(x) is the exact activation's value, bit for bit (the tests hold it to pointwise.act_numba's y): a pass of
# its own before the kernel (pointwise.act_value_numba: the exact kernel's bodies and flags, y only; tanh's from
# np.tanh), which then only bins and packs. A value loop inside this kernel ran scalar in its serial compilation
# (the one a single thread takes: LLVM cannot prove y and x do not overlap there), GELU at 2^20 float32 10.2 ms
# against 0.65 ms for the value pass (measured, 1 thread); two passes over x measured faster than one.


def check_fewbit(borders, levels, bits, what):
    bits = check_bits(bits)
    if borders is not None:
        borders = np.asarray(borders, np.float64).ravel()
        if borders.size != 2 ** bits - 1:
            raise ValueError(f"{what}: {bits} bits need 2^{bits} - 1 = {2 ** bits - 1} borders, got {borders.size}")
        if np.any(borders[1:] < borders[:-1]):
            raise ValueError(f"{what}: borders must be sorted ascending")
    if levels is not None and np.asarray(levels).size != 2 ** bits:
        raise ValueError(f"{what}: {bits} bits need 2^{bits} = {2 ** bits} levels, got {np.asarray(levels).size}")
    return bits, borders


def thresholds(borders, dtype):
    """The borders as values of `dtype` that keep the float64 comparison exact: for x of that dtype,
    x <= s  <=>  x <= t,  t = the largest `dtype` value <= s (so no input is ever promoted to float64)."""
    dtype = np.dtype(dtype)
    s = np.asarray(borders, np.float64)
    t = s.astype(dtype)
    return np.where(t > s, np.nextafter(t, dtype.type(-np.inf)), t).astype(dtype)


# ---------------------------------------------------------------------------------------------- reference
def fewbit_forward_reference(name, x, borders, bits, **params):
    y, _ = act_reference(name, x, **params)
    idx = np.searchsorted(np.asarray(borders, np.float64), x.ravel())
    return y, pack_bins_reference(idx, bits)


def fewbit_backward_reference(packed, levels, bits, y_bar):
    idx = unpack_bins_reference(packed, bits, y_bar.size).reshape(y_bar.shape)
    return np.asarray(levels).astype(y_bar.dtype)[idx] * y_bar


# ---------------------------------------------------------------------------------------------- numba CPU
# -- bins ---------------------------------------------------------------------------------------------------
# idx = searchsorted(s, v, "left") = K − #{j : v <= t_j}.  A NaN compares False everywhere: idx = K.
# The loops over a tuple t have a constant trip count, so LLVM unrolls them and vectorises the loop over
# elements around them; past ~8 borders it stops unrolling, so 15 borders are counted as 8 + 7.
def _below(v, t):
    c = np.int32(0)
    for j in range(len(t)):
        c += np.int32(1) if v <= t[j] else np.int32(0)
    return c


_below_jit = njit(inline="always")(_below)


def _count_small(v, t):
    return np.int32(len(t)) - _below_jit(v, t)


def _count_split(v, t):
    return np.int32(len(t)) - _below_jit(v, t[:8]) - _below_jit(v, t[8:])


def _search(v, t):
    # wide tables (K = 2^b − 1 borders in an array): b halving steps, each a select.  Before each step
    # idx = #{j : v > t_j} restricted to the borders already passed; the step tests the border half a step up.
    idx = 0
    step = (t.size + 1) >> 1
    while step:
        idx += step if v > t[idx + step - 1] else 0
        step >>= 1
    return t.size if v != v else idx


def _bin(v, t):
    """searchsorted(borders, v, side="left") from the thresholds t (NaN -> len(t), the last bin)."""
    return np.searchsorted(t, v) if v == v else len(t)


@overload(_bin, inline="always")
def _bin_impl(v, t):
    # chosen at compile time from the type of t: a tuple (b <= 4, counted) or an array (b >= 5, searched)
    if isinstance(t, types.UniTuple):
        return _count_small if t.count <= 8 else _count_split
    return _search


@njit(inline="always")
def _bins(xs, t, codes):
    for i in range(xs.size):
        codes[i] = _bin(xs[i], t)


# -- SWAR packing of one group: 8 code bytes <-> 8·b bits ---------------------------------------------------
_LO8, _LO16, _LO32 = np.uint64(0x00FF00FF00FF00FF), np.uint64(0x0000FFFF0000FFFF), np.uint64(0xFFFFFFFF)


@njit(inline="always")
def _squeeze(w, b):
    # w: 8 byte fields, each < 2^b (field t = code t).  Merge neighbouring fields three times: fields of
    # 8 bits holding b bits -> 16 holding 2b -> 32 holding 4b -> 64 holding 8b.  b = 8: every shift is 0.
    u = np.uint64(8 - b)
    w = (w & _LO8) | ((w >> u) & (~_LO8 >> u))
    u = np.uint64(16 - 2 * b)
    w = (w & _LO16) | ((w >> u) & (~_LO16 >> u))
    u = np.uint64(32 - 4 * b)
    return (w & _LO32) | ((w >> u) & (~_LO32 >> u))


@njit(inline="always")
def _spread(w, b):
    # the inverse of _squeeze: 8·b packed bits -> 8 byte fields of b bits each
    m = np.uint64((1 << (4 * b)) - 1)
    w = (w & m) | ((w >> np.uint64(4 * b)) << np.uint64(32))
    m = np.uint64((1 << (2 * b)) - 1) * np.uint64(0x0000000100000001)
    w = (w & m) | (((w >> np.uint64(2 * b)) & m) << np.uint64(16))
    m = np.uint64((1 << b) - 1) * np.uint64(0x0001000100010001)
    return (w & m) | (((w >> np.uint64(b)) & m) << np.uint64(8))


def _pack_block(codes, ngroups, width, pk):
    """The block's groups 0..ngroups-1 of codes into its bytes pk (group g: pk[g·b ...], b = len(width));
    the array's last group may own fewer than b bytes (its missing codes are 0 in the buffer)."""
    b = len(width)
    words = codes.view(np.uint64)
    for g in range(ngroups):
        w = _squeeze(words[g], b)
        for q in range(min(b, pk.size - g * b)):
            pk[g * b + q] = np.uint8((w >> np.uint64(8 * q)) & np.uint64(0xFF))


def _unpack_block(pk, ngroups, width, codes):
    """The inverse: the block's bytes pk to its codes (the last group's missing bytes read as 0)."""
    b = len(width)
    words = codes.view(np.uint64)
    for g in range(ngroups):
        w = np.uint64(0)
        for q in range(min(b, pk.size - g * b)):
            w |= np.uint64(pk[g * b + q]) << np.uint64(8 * q)
        words[g] = _spread(w, b)


# `width` is a tuple of b zeros: b reaches the compiler as a type (UniTuple(int64, b)), not a value, so
# each bit width is its own compilation with b a constant B.  Then the byte loops unroll to B strided byte
# accesses, which LLVM vectorises as interleaved stores/loads (measured 5-12x faster than with a runtime
# b: 0.02-0.1 ns per element).  (numba.literally(bits) would say the same, but its re-typing together with
# the inlined activation bodies blew up Numba's IR block labels.)  Full groups first, then the short one.
@overload(_pack_block)
def _pack_block_impl(codes, ngroups, width, pk):
    B = width.count

    def pack(codes, ngroups, width, pk):
        words = codes.view(np.uint64)
        full = min(ngroups, pk.size // B)
        for g in range(full):
            w = _squeeze(words[g], B)
            for q in range(B):
                pk[B * g + q] = np.uint8((w >> np.uint64(8 * q)) & np.uint64(0xFF))
        for g in range(full, ngroups):
            w = _squeeze(words[g], B)
            for q in range(pk.size - B * g):
                pk[B * g + q] = np.uint8((w >> np.uint64(8 * q)) & np.uint64(0xFF))
    return pack


@overload(_unpack_block)
def _unpack_block_impl(pk, ngroups, width, codes):
    B = width.count

    def unpack(pk, ngroups, width, codes):
        words = codes.view(np.uint64)
        full = min(ngroups, pk.size // B)
        for g in range(full):
            w = np.uint64(0)
            for q in range(B):
                w |= np.uint64(pk[B * g + q]) << np.uint64(8 * q)
            words[g] = _spread(w, B)
        for g in range(full, ngroups):
            w = np.uint64(0)
            for q in range(pk.size - B * g):
                w |= np.uint64(pk[B * g + q]) << np.uint64(8 * q)
            words[g] = _spread(w, B)
    return unpack


# -- the kernels ----------------------------------------------------------------------------------------------
# Written on block slices indexed from 0 (xs[i], not x[lo + i]): Numba then knows no index is negative and
# emits no wraparound test, which is what lets LLVM vectorise the loops.  error_model="numpy": a division
# (sigmoid's) is not guarded by a ZeroDivisionError branch (measured 3.5x slower for silu).
@kernel(error_model="numpy")
def _fewbit_forward_kernel(x, t, width, packed):
    bits = len(width)
    n = x.size
    nbytes = packed.size
    for blk in prange((n + BLOCK - 1) // BLOCK):
        codes = np.zeros(BLOCK, np.uint8)              # the last block's missing codes stay 0
        lo = blk * BLOCK
        hi = min(n, lo + BLOCK)
        _bins(x[lo:hi], t, codes)
        ng = (hi - lo + 7) // 8
        _pack_block(codes, ng, width, packed[lo // 8 * bits:min(nbytes, (lo // 8 + ng) * bits)])


def _pick(c, lv):
    """lv[c] for a code c < len(lv): compiled as a select tree for 2, 4 or 8 levels (one vector blend per
    level pair, branch-free), as a table gather for more (see _pick_impl)."""
    return lv[c]


def _tree2(c, lv):
    return lv[1] if c & 1 else lv[0]


def _tree4(c, lv):
    lo = lv[1] if c & 1 else lv[0]
    hi = lv[3] if c & 1 else lv[2]
    return hi if c & 2 else lo


def _tree8(c, lv):
    a = lv[1] if c & 1 else lv[0]
    b = lv[3] if c & 1 else lv[2]
    d = lv[5] if c & 1 else lv[4]
    e = lv[7] if c & 1 else lv[6]
    lo = b if c & 2 else a
    hi = e if c & 2 else d
    return hi if c & 4 else lo


def _tree16(c, lv):
    lo = _tree8_jit(c, lv[:8])
    hi = _tree8_jit(c, lv[8:])
    return hi if c & 8 else lo


_tree8_jit = njit(inline="always")(_tree8)


@overload(_pick, inline="always")
def _pick_impl(c, lv):
    # chosen at compile time from the type of lv: a UniTuple of 2, 4 or 8 levels, or an array
    if isinstance(lv, types.UniTuple):
        return {2: _tree2, 4: _tree4, 8: _tree8, 16: _tree16}[lv.count]
    return _pick


@kernel(error_model="numpy")
def _fewbit_backward_kernel(packed, lv, width, y_bar, x_bar):
    bits = len(width)
    n = y_bar.size
    nbytes = (n * bits + 7) // 8
    for blk in prange((n + BLOCK - 1) // BLOCK):
        codes = np.empty(BLOCK, np.uint8)
        lo = blk * BLOCK
        hi = min(n, lo + BLOCK)
        ng = (hi - lo + 7) // 8
        _unpack_block(packed[lo // 8 * bits:min(nbytes, (lo // 8 + ng) * bits)], ng, width, codes)
        gs, xb = y_bar[lo:hi], x_bar[lo:hi]
        for i in range(gs.size):
            xb[i] = _pick(codes[i], lv) * gs[i]


def _as_tuple(a):
    """A small array as a tuple of its dtype's scalars: Numba types it UniTuple(dtype, n), a constant size."""
    return tuple(a.tolist()) if a.dtype == np.float64 else tuple(a.dtype.type(v) for v in a.tolist())


def fewbit_forward_numba(name, x, borders, bits, **params):
    xf = np.ascontiguousarray(x).reshape(-1)
    y = act_value_numba(name, xf, **params)                    # checks the name and parameters too
    packed = np.empty(nbytes_for(xf.size, bits), np.uint8)
    t = thresholds(borders, xf.dtype)
    _fewbit_forward_kernel(xf, _as_tuple(t) if bits <= 4 else t, (0,) * bits, packed)
    return y.reshape(x.shape), packed


def fewbit_backward_numba(packed, levels, bits, y_bar):
    g = np.ascontiguousarray(y_bar).reshape(-1)
    out = np.empty_like(g)
    lv = np.asarray(levels).astype(y_bar.dtype)
    _fewbit_backward_kernel(packed.reshape(-1), _as_tuple(lv) if bits <= 4 else lv, (0,) * bits, g, out)
    return out.reshape(y_bar.shape)
