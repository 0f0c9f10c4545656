"""Few-bit activations: keep a b-bit bin index of x instead of x, and a piecewise-constant derivative.

  forward:  y = f(x),  idx = searchsorted(borders, x)  (side "left": borders[idx-1] < x <= borders[idx]),
            packed = pack_bins(idx, b)                  borders: K = 2^b − 1 sorted interior borders
  backward: x̄ = levels[idx] · ȳ                        levels: 2^b derivative values, cast to ȳ's dtype

NaN inputs get idx = K = 2^b − 1, as numpy.searchsorted sorts NaN last.

The Numba kernels do one pass over memory each, block by block (BLOCK elements, a multiple of 8 so that a
block holds whole groups of 8 codes = whole bytes of the bitpack layout, see bitpack.py):

  forward   1. the block's y = f(x), the exact activation's value bit for bit (pointwise.act_values: the exact
               kernel's bodies and flags, y only; tanh's y is NumPy's SIMD np.tanh, made before the kernel);
            2. the block's codes into a small uint8 buffer (in L1): for b <= 4 a branch-free binary search
               over the K thresholds t (see `thresholds`),   idx = #{j : not (x <= t_j)},
               b steps, each a compare against a threshold picked from the bits found so far by a select
               tree: no data-dependent branch or load, which LLVM vectorises (NaN compares False everywhere:
               idx = K, the last bin).  Wider tables (b >= 5, up to 255 borders, in an array) take a binary
               search of b steps with loads;
            3. pack: each group's 8 code bytes, read as one 64-bit word, are squeezed to 8·b bits by three
               SWAR steps (pairs of fields merged, then pairs of pairs...) and written as b bytes (3 bits:
               eight groups as three 64-bit words).
  backward  1. the block's groups unpacked into the code buffer (the same SWAR steps backwards);
            2. x̄ = lv[code] · ȳ: for b <= 4 a select tree over the levels (a vector blend per bit of the
               code), a table gather above; lv = the levels cast to ȳ's dtype, so the product is bitwise
               levels.astype(ȳ.dtype)[idx] · ȳ.

Thresholds: the borders are float64; x is float32 or float64.  t_j = the largest value of x's dtype <= s_j,
so for every x of that dtype  x <= s_j  <=>  x <= t_j  — the comparison stays exact without promoting x.

Each kernel is a threads.Kernel: serial below the pool's break-even work, the prange over chunks of blocks
above it (blocks write disjoint bytes: no atomics).  The thresholds and levels become tuples in the kernel
(b <= 4), their size from the bit width, which is a compile-time constant: the loops over them unroll.
"""
import numpy as np
from numba import njit, prange, types
from numba.extending import overload
from numba.np.unsafe.ndarray import to_fixed_tuple

from .bitpack import check_bits, nbytes_for, pack_bins_reference, unpack_bins_reference
from .pointwise import COMPILED, _constants, act_reference, act_values, constant_tuple, parse_activation
from .vecmath import CONTRACT
from .threads import kernel

BLOCK = 2048            # elements per block: its codes (2 KiB) and values stay in L1
TANH = COMPILED["tanh"][0]
# Value, bins and pack in one pass per block: the value loop vectorises in both compilations (pointwise.
# constant_tuple), and the block's x is still in L1 when the bins read it.  Measured against a value pass of its
# own before a bins-and-pack kernel (GELU, 3 bits, float32, one thread): 1.7 against 5.1 µs at 256 elements,
# 4.8 against 8.3 at 4096, the same from 2^16 on (one call fewer, the same work).


# Borders already checked, by content (bits, bytes) -> the flat float64 copy that passed: a training step
# checks the same few tables on every call, and the sort check alone cost ~2.5 µs of a ~25 µs small step.
# Keyed by content, so a table edited in place is checked again; bounded, as _args below.
_checked = {}
_ARGS_MAX = 256


def check_fewbit(borders, levels, bits, what):
    bits = check_bits(bits)
    if borders is not None:
        borders = _checked_borders(borders, bits, what)
    if levels is not None and np.size(levels) != 2 ** bits:
        raise ValueError(f"{what}: {bits} bits need 2^{bits} = {2 ** bits} levels, got {np.size(levels)}")
    return bits, borders


def _checked_borders(borders, bits, what):
    borders = np.asarray(borders, np.float64)
    key = (bits, borders.tobytes())
    hit = _checked.get(key)
    if hit is not None:
        return hit
    borders = borders.ravel()
    if borders.size != 2 ** bits - 1:
        raise ValueError(f"{what}: {bits} bits need 2^{bits} - 1 = {2 ** bits - 1} borders, got {borders.size}")
    if np.any(borders[1:] < borders[:-1]):
        raise ValueError(f"{what}: borders must be sorted ascending")
    if len(_checked) >= _ARGS_MAX:
        _checked.clear()
    _checked[key] = borders = borders.copy()
    borders.flags.writeable = False                   # shared by every call with this content
    return borders


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
# -- the select tree: lv[c] without a load ------------------------------------------------------------------
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


# -- bins ---------------------------------------------------------------------------------------------------
# idx = searchsorted(s, v, "left") = #{j : not (v <= t_j)}.  For b <= 4 (K = 2^b − 1 thresholds in a tuple)
# a branch-free binary search of b steps: the code so far, c (its top bits found), picks the next step's
# threshold with the same select tree as the backward's level lookup (_pick: one blend per pair), and
# c = 2c + not(v <= that threshold).  b compares and 2^(b-1) − 1 blends per element instead of K compares
# and K adds (4 bits: 4 + 11 + 4 operations against 30; measured 0.46 -> 0.31 ms for bin+pack at 2^20).
# A NaN compares False everywhere, so every step goes up: idx = K, the last bin (searchsorted sorts NaN last).
def _up(v, s):
    return np.int32(0) if v <= s else np.int32(1)


_up_jit = njit(inline="always")(_up)


def _search1(v, t):
    return _up_jit(v, t[0])


def _search3(v, t):
    c = _up_jit(v, t[1])
    return 2 * c + _up_jit(v, _pick(c, (t[0], t[2])))


def _search7(v, t):
    c = _up_jit(v, t[3])
    c = 2 * c + _up_jit(v, _pick(c, (t[1], t[5])))
    return 2 * c + _up_jit(v, _pick(c, (t[0], t[2], t[4], t[6])))


def _search15(v, t):
    c = _up_jit(v, t[7])
    c = 2 * c + _up_jit(v, _pick(c, (t[3], t[11])))
    c = 2 * c + _up_jit(v, _pick(c, (t[1], t[5], t[9], t[13])))
    return 2 * c + _up_jit(v, _pick(c, (t[0], t[2], t[4], t[6], t[8], t[10], t[12], t[14])))


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
    # chosen at compile time from the type of t: a tuple of 1, 3, 7 or 15 (b <= 4) or an array (b >= 5)
    if isinstance(t, types.UniTuple):
        return {1: _search1, 3: _search3, 7: _search7, 15: _search15}[t.count]
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


# 3 bits: the 3-byte groups' byte stores do not vectorise (0.16 ms per 2^20 codes against 0.07 at 4 bits),
# so eight groups (64 codes, 24 bits each) are joined into three 64-bit words, little end first: exactly the
# bytes the byte loop writes, as three word stores (0.10 ms; the whole 3-bit forward kernel 0.21 -> 0.18 ms).
# The blocks' byte offsets (BLOCK/8·3 each) are multiples of 8.  Returns how many groups it did; other widths
# do none there.  (The same words read back measured slower in the backward, 0.21 -> 0.25 ms: it unpacks bytes.)
def _pack_words(words, full, width, pk):
    return 0


@overload(_pack_words, inline="always")
def _pack_words_impl(words, full, width, pk):
    if width.count != 3:
        return _pack_words
    s24, s48, s8, s32, s56, s16, s40 = (np.uint64(k) for k in (24, 48, 8, 32, 56, 16, 40))

    def pack3(words, full, width, pk):
        m = full // 8
        out = pk[:24 * m].view(np.uint64)
        for j in range(m):
            s0, s1, s2, s3 = _squeeze(words[8 * j], 3), _squeeze(words[8 * j + 1], 3), \
                _squeeze(words[8 * j + 2], 3), _squeeze(words[8 * j + 3], 3)
            s4, s5, s6, s7 = _squeeze(words[8 * j + 4], 3), _squeeze(words[8 * j + 5], 3), \
                _squeeze(words[8 * j + 6], 3), _squeeze(words[8 * j + 7], 3)
            out[3 * j] = s0 | (s1 << s24) | (s2 << s48)
            out[3 * j + 1] = (s2 >> s16) | (s3 << s8) | (s4 << s32) | (s5 << s56)
            out[3 * j + 2] = (s5 >> s8) | (s6 << s16) | (s7 << s40)
        return 8 * m
    return pack3


# `width` is a tuple of b zeros: b reaches the compiler as a type (UniTuple(int64, b)), not a value, so
# each bit width is its own compilation with b a constant B.  Then the byte loops unroll to B strided byte
# accesses, which LLVM vectorises as interleaved stores/loads (measured 5-12x faster than with a runtime
# b: 0.02-0.1 ns per element).  (numba.literally(bits) would say the same, but its re-typing together with
# the inlined activation bodies blew up Numba's IR block labels.)  Packing: word groups (3 bits), then the
# full groups left, then the short one; unpacking: full groups, then the short one.
@overload(_pack_block)
def _pack_block_impl(codes, ngroups, width, pk):
    B = width.count

    def pack(codes, ngroups, width, pk):
        words = codes.view(np.uint64)
        full = min(ngroups, pk.size // B)
        for g in range(_pack_words(words, full, width, pk), full):
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


# -- table arrays as tuples ---------------------------------------------------------------------------------
# The thresholds and levels come in as arrays and, for b <= 4, become tuples inside the kernel, their size
# from `width` (a compile-time constant): the loops over them unroll to the select trees above, and the values
# sit in registers.  (Passed as tuples from Python, each call paid Numba ~0.5 µs to type the tuple's scalars.)
def _small_thresholds(a, width):
    return a


def _small_levels(a, width):
    return a


def _fixed(n, b):
    """The overload body: a tuple of the first n elements for b <= 4 bits, the array itself above."""
    if b <= 4:
        return lambda a, width: to_fixed_tuple(a, n)
    return lambda a, width: a


@overload(_small_thresholds, inline="always")
def _small_thresholds_impl(a, width):
    return _fixed((1 << width.count) - 1, width.count)         # 2^b − 1 thresholds


@overload(_small_levels, inline="always")
def _small_levels_impl(a, width):
    return _fixed(1 << width.count, width.count)               # 2^b levels


# -- the kernels ----------------------------------------------------------------------------------------------
# Written on block slices indexed from 0 (xs[i], not x[lo + i]): Numba then knows no index is negative and
# emits no wraparound test, which is what lets LLVM vectorise the loops.  error_model="numpy": a division
# (sigmoid's) is not guarded by a ZeroDivisionError branch (measured 3.5x slower for silu).
# The prange runs over at most CHUNKS chunks of whole blocks, each with one code buffer for all its blocks:
# a buffer per block (an allocation and, forward, a memset every 2048 elements) cost 0.02-0.03 ms per 2^20
# elements each way (measured, 1 thread), about a fifth of the 1-bit kernels.
CHUNKS = 64


@njit(inline="always")
def _chunks(n):
    """(blocks, blocks per chunk, chunks) for n elements."""
    nblk = (n + BLOCK - 1) // BLOCK
    per = max(1, (nblk + CHUNKS - 1) // CHUNKS)
    return nblk, per, (nblk + per - 1) // per


# saves_ns: 0.15-0.6 ns per element with the value (silu to softplus, 2^21-2^22 float32, measured), 0.04-0.07
# without it (tanh): its calls pass a third of their elements as the work.  CONTRACT: _act_kernel's flag.
@kernel(error_model="numpy", fastmath=CONTRACT, saves_ns=0.2)
def _fewbit_forward_kernel(code, x, consts, thresholds, width, y, packed):
    k = constant_tuple(consts)
    t = _small_thresholds(thresholds, width)
    bits = len(width)
    n = x.size
    nbytes = packed.size
    nblk, per, nch = _chunks(n)
    for ch in prange(nch):
        codes = np.empty(BLOCK, np.uint8)
        for blk in range(ch * per, min(nblk, ch * per + per)):
            lo = blk * BLOCK
            hi = min(n, lo + BLOCK)
            if code != TANH:                           # tanh's y is np.tanh's, made before the kernel
                act_values(code, x[lo:hi], k, y[lo:hi])
            if hi - lo < BLOCK:
                codes[:] = 0                           # the last block's missing codes pack as 0
            _bins(x[lo:hi], t, codes)
            ng = (hi - lo + 7) // 8
            _pack_block(codes, ng, width, packed[lo // 8 * bits:min(nbytes, (lo // 8 + ng) * bits)])


@kernel(error_model="numpy", saves_ns=0.06)
def _fewbit_backward_kernel(packed, levels, width, y_bar, x_bar):
    lv = _small_levels(levels, width)
    bits = len(width)
    n = y_bar.size
    nbytes = (n * bits + 7) // 8
    nblk, per, nch = _chunks(n)
    for ch in prange(nch):
        codes = np.empty(BLOCK, np.uint8)
        for blk in range(ch * per, min(nblk, ch * per + per)):
            lo = blk * BLOCK
            hi = min(n, lo + BLOCK)
            ng = (hi - lo + 7) // 8
            _unpack_block(packed[lo // 8 * bits:min(nbytes, (lo // 8 + ng) * bits)], ng, width, codes)
            gs, xb = y_bar[lo:hi], x_bar[lo:hi]
            for i in range(gs.size):
                xb[i] = _pick(codes[i], lv) * gs[i]


# The kernels' table arguments, made once per distinct table and dtype (the thresholds cost a few µs a call,
# as much as the kernels themselves at 4096 elements).  Keyed by content (a table's arrays may be edited in
# place); bounded like pointwise's parsed parameters.
_args = {}


def _table_arg(kind, values, dtype):
    """kind "t": the thresholds of borders `values` in `dtype`; "l": the levels cast to `dtype`."""
    dtype = np.dtype(dtype)
    values = np.asarray(values)
    key = (kind, values.dtype.str, values.tobytes(), dtype.str)
    arg = _args.get(key)
    if arg is None:
        arg = thresholds(values, dtype) if kind == "t" else np.ascontiguousarray(values, dtype).ravel()
        if len(_args) >= _ARGS_MAX:
            _args.clear()
        _args[key] = arg
    return arg


def fewbit_forward_numba(name, x, borders, bits, **params):
    code, p = parse_activation(name, params)
    xf = np.ascontiguousarray(x).reshape(-1)
    y = np.tanh(xf) if code == TANH else np.empty_like(xf)     # tanh: NumPy's SIMD value, as act_numba's
    packed = np.empty(nbytes_for(xf.size, bits), np.uint8)
    _fewbit_forward_kernel(code, xf, _constants(xf.dtype, name, p), _table_arg("t", borders, xf.dtype),
                           (0,) * bits, y, packed, work=xf.size // 3 if code == TANH else xf.size)
    return y.reshape(x.shape), packed


def fewbit_backward_numba(packed, levels, bits, y_bar):
    g = np.ascontiguousarray(y_bar).reshape(-1)
    out = np.empty_like(g)
    _fewbit_backward_kernel(packed.reshape(-1), _table_arg("l", levels, y_bar.dtype), (0,) * bits, g, out)
    return out.reshape(y_bar.shape)
