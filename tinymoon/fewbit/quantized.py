"""The quantised residual policy (docs/design.md §2): a b-bit code of each activation input instead of the input.

A few-bit activation is the ordinary activation primitive (tinymoon/ops/activations.py) with this policy as
its residual: `apply(ops.activations.GELU, x, residual=Quantised(table))`. Its forward computes f(x) exactly
(the activation table's f) and keeps a `PackedBins`: the code of every element at exactly b bits, packed
(ceil(n·b/8) bytes), with the levels it stands for. Every rule reads f' as the piecewise-constant q(x) =
levels[code(x)] from it:

    vjp   x̄ = q ȳ          (bitwise: levels cast to ȳ's dtype, one multiply per element)
    jvp   ẏ = q ẋ          (the same q, so ⟨u, J t⟩ = ⟨u J, t⟩ holds exactly for the surrogate)
    vijp  ȳ = x̄ / q        where |q| >= DIAG_TOL (the engine-wide threshold), the fragment (ȳ on the other
                           elements) elsewhere: a level that is 0 (or tiny) makes its bin non-invertible,
                           exactly as a vanishing f' does for every other diagonal primitive.

The jvp is *not* f'(x)·ẋ: forward and reverse mode must differentiate the same function, and in few-bit
training that function is the surrogate (f in value, q in derivative).

Two codes:
* `Quantised(table)` — a continuous activation (gelu, silu, tanh, ...): code = the bin of x among the table's
  borders, searchsorted(s, x, side="left"); q approximates f'.
* `Quantised.exact(formula, params)` — a piecewise-linear one (relu, leaky_relu, relu6, hardtanh, hardsigmoid):
  code = the formula's exact 1-bit mask (PyTorch's backward conditions), q = f' exactly.

The default path on the host is one fused kernel pass each way (kernels.fewbit_forward / fewbit_backward,
FUSED_FORWARD and FUSED_BACKWARD): forward computes f (a pass of the compiled body of kernels/pointwise.py,
the value the exact primitive computes; tanh's from NumPy's SIMD np.tanh), then one pass bins (a branch-free
b-step search over the thresholds) and packs; backward reads the packed bytes and the levels and
multiplies.  relu and leaky_relu, whose exact code is the sign bit, are the exact primitives' residual and
backward (`SignMask`: value and mask from the relu-mask kernel in one pass, the masked gradient back), so their
gradient is the exact one bit for bit.  The whole-array NumPy/CuPy path below (`bin_index` as k − 1
comparisons, `pack_codes`, `lookup`) is the readable reference, the path for activations the kernels do not
compile and for device arrays; the tests hold both to the same bits (docs/fewbit.md, "Speed").
"""
from __future__ import annotations

import math

import numpy as np

from .. import kernels
from ..backend import get_array_module
from ..ops.masks import BitMask, where_mask
from ..ops.residuals import DiagonalResidual
from .errors import FewBitError

__all__ = ["Quantised", "PackedBins", "bin_index", "thresholds", "lookup", "pack_codes", "FUSED",
           "FUSED_FORWARD", "FUSED_BACKWARD"]

# The fused forward (f + bins + pack in one kernel pass) exists for the activations the kernels compile.
# Measured 1.5-4x faster than the NumPy path (docs/fewbit.md, "Speed"), so it is the default on host arrays;
# False switches to the NumPy path (the benchmark times both). Both give the same bins, hence bitwise the
# same backward; the value is the compiled body's (the exact primitive's own), the NumPy path's the table's f.
FUSED_FORWARD = True
FUSED = ("gelu", "silu", "tanh", "sigmoid", "elu", "softplus")


class Quantised:
    """The policy: what to keep of x (see the module docstring). `levels` (2^bits float64), and either the
    table's `borders` or a piecewise-linear `formula` whose exact mask is the code."""
    __slots__ = ("levels", "bits", "borders", "formula")

    def __init__(self, table):
        self.levels, self.bits, self.borders, self.formula = table.levels, table.bits, table.borders, None

    @classmethod
    def exact(cls, formula, params):
        q = cls.__new__(cls)
        q.levels, q.bits, q.borders, q.formula = formula.code_levels(**params), 1, None, formula
        return q

    def keep(self, formula, x, p, needed):
        """(f(x) exactly, the PackedBins of x) — or (f(x), None) when nothing will differentiate (inference)."""
        if x.dtype.kind != "f" or x.dtype.itemsize not in (4, 8):
            raise FewBitError(f"fewbit.{formula.name}: needs a float32 or float64 input, got {x.dtype}; cast it "
                              f"with .astype(tm.float32)")
        if needed and self.formula is not None and formula.name in ("relu", "leaky_relu"):
            # their exact code is the sign bit: value and packed mask in one kernel pass (the table's f, bit for bit)
            slope = p.get("negative_slope", 0.0)
            y, packed = kernels.relu_mask_forward(x, slope)
            return y, SignMask(packed, 1, x.shape, self.levels, x.dtype, slope)
        if needed and FUSED_FORWARD and get_array_module(x) is np and self.formula is None and formula.name in FUSED:
            y, packed = kernels.fewbit_forward(formula.name, x, self.borders, self.bits, **p)   # f + bins + pack
            return y, PackedBins(packed, self.bits, x.shape, self.levels, x.dtype)
        y = formula.f_at(x, p)
        if not needed:
            return y, None
        if self.formula is not None:                   # the exact 1-bit mask
            code = self.formula.code_fn(get_array_module(x), x, **p)
            return y, PackedBins(kernels.pack_bits(code), 1, x.shape, self.levels, x.dtype)
        return y, PackedBins.pack(bin_index(x, self.borders), self.bits, self.levels, x.dtype)


class PackedBins(DiagonalResidual):
    """The residual: n codes of `bits` bits each, packed LSB-first into ceil(n·bits/8) bytes (kernels' bitpack
    layout; for bits = 1 that of numpy.packbits(bitorder="little")), and the `levels` they stand for: f' ≈
    levels[code]. `nbytes` (the packed bytes) is what the engine counts; the levels belong to the table."""
    __slots__ = ("packed", "bits", "shape", "size", "levels", "dtype")

    def __init__(self, packed, bits, shape, levels=None, dtype=np.float64):
        self.packed, self.bits, self.shape, self.levels, self.dtype = packed, int(bits), tuple(shape), levels, dtype
        self.size = int(math.prod(self.shape))       # (np.prod: ~2 µs, a tenth of a small step)

    @classmethod
    def pack(cls, idx, bits, levels=None, dtype=np.float64):
        """From uint8 indices < 2^bits (any shape)."""
        return cls(pack_codes(idx.reshape(-1), bits), bits, idx.shape, levels, dtype)

    def unpack(self):
        """uint8 indices of the original shape."""
        return kernels.unpack_bins(self.packed, self.bits, self.size).reshape(self.shape)

    @property
    def nbytes(self):
        return int(self.packed.nbytes)

    def derivative(self):
        xp = get_array_module(self.packed)
        return xp.asarray(self.levels).astype(self.dtype)[self.unpack()]       # q(x) = levels[code], x's dtype

    def scale(self, v):
        # levels[code] · v, bitwise equal to levels.astype(v.dtype)[code] * v
        if FUSED_BACKWARD and type(v) is np.ndarray and type(self.packed) is np.ndarray:
            return kernels.fewbit_backward(self.packed, self.levels, self.bits, v)
        return lookup(self, self.levels, v.dtype).reshape(v.shape) * v

    def __repr__(self):
        return f"PackedBins(bits={self.bits}, shape={self.shape}, nbytes={self.nbytes})"


class SignMask(PackedBins):
    """relu's and leaky_relu's exact code, the sign bit (x > 0), with the exact primitive's backward
    (ops/masks.where_mask, one pass over the packed bits): ȳ where the bit is set, slope·ȳ elsewhere, where
    relu's slope 0 gives exactly +0, as tm.relu and PyTorch do, not levels[0]·ȳ = 0·ȳ (−0 for ȳ < 0, NaN for
    ȳ = ±inf).  So the few-bit relu's gradient is the exact relu's, bit for bit and at its speed (the general
    lookup was 1.27x the exact relu's step, 2^20 float32)."""
    __slots__ = ("slope",)

    def __init__(self, packed, bits, shape, levels, dtype, slope):
        super().__init__(packed, bits, shape, levels, dtype)
        self.slope = float(slope)

    def scale(self, v):
        return where_mask(BitMask(self.packed, self.shape), v, self.slope)


def pack_codes(idx, bits):
    """The kernels' bitpack layout (kernels.pack_bins) in a few whole-array passes: each group of 8 codes is
    OR-ed into one 8·b-bit word, whose b bytes are written out LSB first.  The NumPy/CuPy path's packing
    (any array module, no compilation); the fused kernel packs in its own pass.  Tested against
    kernels.pack_bins."""
    xp = get_array_module(idx)
    n = idx.size
    groups = -(-n // 8)
    if n % 8:
        idx = xp.concatenate([idx, xp.zeros(groups * 8 - n, np.uint8)])
    codes = idx.reshape(groups, 8)
    if bits == 1:
        return xp.packbits(codes.reshape(-1)[:n], bitorder="little")
    if bits == 8:
        return codes.reshape(-1)[:n].astype(np.uint8, copy=True)
    wt = np.uint32 if bits <= 4 else np.uint64
    word = codes[:, 0].astype(wt)
    for j in range(1, 8):
        word |= codes[:, j].astype(wt) << wt(bits * j)
    out = xp.empty((groups, bits), np.uint8)
    for q in range(bits):
        out[:, q] = word >> wt(8 * q)                              # the low byte of each shifted word
    return out.reshape(-1)[:(n * bits + 7) // 8]


def thresholds(borders, dtype):
    """The borders as values of `dtype` that keep the float64 comparison exact: for x of that dtype,
    x <= s  <=>  x <= t,  t = the largest `dtype` value <= s (so no input is ever promoted to float64).
    The kernels' definition (kernels/fewbit.py), which the fused kernel compares against too."""
    return kernels.fewbit.thresholds(borders, dtype)


def bin_index(x, borders):
    """idx = searchsorted(borders, x, side="left") = #{i : s_i < x}, as uint8 of x's shape (NaN -> last bin).

    Computed as (k - 1) - #{i : x <= t_i}: k - 1 vectorised comparisons in x's own dtype, much faster than a
    binary search per element for the small k of few-bit tables (NaN compares False, so it lands in the top bin,
    as with numpy.searchsorted)."""
    xp = get_array_module(x)
    t = thresholds(borders, x.dtype)
    if t.size > 63:                                               # wide tables: a binary search wins
        return xp.searchsorted(xp.asarray(t), x.reshape(-1), side="left").astype(np.uint8).reshape(x.shape)
    below = xp.zeros(x.shape, np.uint8)
    for ti in t:
        below += x <= ti                                          # bool added into uint8: no temporaries kept
    return (t.size - below).astype(np.uint8, copy=False)        # (k-1) - #{x <= t_i}, still uint8


# ---- backward lookup straight from the packed bytes -----------------------------------------------------------
# The default on host arrays is kernels.fewbit_backward (one Numba pass: unpack, select the level, multiply;
# measured 2-5x faster than this lookup, docs/fewbit.md "Speed"); FUSED_BACKWARD = False switches to the
# NumPy path below, the reference (and the path for device arrays).
FUSED_BACKWARD = True
_CHUNK = {1: 8, 2: 4, 3: 4, 4: 2, 5: 2, 6: 2, 7: 1, 8: 1}    # codes per lookup: c·b <= 12 bits, c divides 8


def _chunk_table(levels, bits, dtype, xp):
    """T[v] = the levels of the c codes packed in the (c·bits)-bit value v, LSB first: shape (2^(c·b), c)."""
    c = _CHUNK[bits]
    v = np.arange(1 << (c * bits))
    codes = (v[:, None] >> (bits * np.arange(c))[None, :]) & ((1 << bits) - 1)
    return xp.asarray(np.asarray(levels, np.float64).astype(dtype)[codes])


def lookup(bins, levels, dtype):
    """levels[idx] (flat, length n, `dtype`) read directly from the packed stream.

    Eight b-bit codes fill exactly b bytes. Each group's b bytes are joined into one integer, cut into 8/c chunks
    of c codes (c·b <= 12 bits), and every chunk indexes a small table of its c levels: one gather of n/c rows
    instead of unpacking n indices first."""
    xp = get_array_module(bins.packed)
    b, n, c = bins.bits, bins.size, _CHUNK[bins.bits]
    table = _chunk_table(levels, b, dtype, xp)
    groups = -(-n // 8)
    packed = bins.packed
    if packed.size < groups * b:                                   # the last group's missing bytes are zero
        packed = xp.concatenate([packed, xp.zeros(groups * b - packed.size, np.uint8)])
    if c * b == 8:                                                 # a chunk is a byte: bits 1, 2, 4, 8
        chunks = packed[:groups * b]
    else:
        wt = np.uint32 if b <= 4 else np.uint64                    # the group's 8·b bits
        g = packed[:groups * b].reshape(groups, b)
        word = g[:, 0].astype(wt)
        for j in range(1, b):
            word |= g[:, j].astype(wt) << wt(8 * j)
        chunks = xp.empty((groups, 8 // c), wt)
        for j in range(8 // c):
            xp.bitwise_and(word >> wt(c * b * j), wt((1 << (c * b)) - 1), out=chunks[:, j])
    if xp is np:                                                   # gather whole rows as one opaque item each
        rows = np.ascontiguousarray(table).view(np.dtype((np.void, table.shape[1] * table.itemsize))).ravel()
        return rows.take(chunks.reshape(-1)).view(table.dtype)[:n]
    return table[chunks.reshape(-1)].reshape(-1)[:n]
