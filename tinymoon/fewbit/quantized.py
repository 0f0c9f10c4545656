"""The quantised primitives: few-bit activations as engine primitives (docs/design.md, residual policy "quantised").

Two primitives, one per family:

* `FewBitActivation` — a continuous activation f (gelu, silu, tanh, ...) with a b-bit Table (borders s,
  levels y). Forward computes f(x) *exactly* and keeps only the bin index of every element,
  idx = searchsorted(s, x, side="left"), packed at exactly b bits per element (`PackedBins`, ceil(n·b/8)
  bytes). The derivative used by every rule is the piecewise-constant surrogate q(x) = y[idx(x)]:

      vjp   x̄ = y[idx] · ȳ                (bitwise: levels cast to ȳ's dtype, one multiply per element)
      jvp   ẏ = y[idx] · ẋ                (the same q, so ⟨u, J t⟩ = ⟨u J, t⟩ holds exactly for the surrogate)
      vijp  ȳ = x̄ / y[idx]                where |y[idx]| >= DIAG_TOL (the engine-wide threshold), the fragment
                                           (ȳ on the other elements) elsewhere — so a level that is 0 (or tiny)
                                           makes its bin non-invertible, exactly as a vanishing f' does for
                                           every other diagonal primitive.

  The jvp is *not* f'(x)·ẋ: forward and reverse mode must differentiate the same function, and in few-bit
  training that function is the surrogate (f in value, q in derivative). A finite-difference check of the
  jvp therefore compares against f', not q, and only agrees up to the table's approximation error.

* `PiecewiseLinearActivation` — relu, leaky_relu, relu6, hardtanh, hardsigmoid. Their derivative takes only two
  values, so an exact 1-bit mask (`Activation.code`: PyTorch's backward conditions) and the two code levels
  give f' with no approximation: x̄ = code_levels[code] · ȳ. Same packed storage (b = 1).

Both are `Diagonal` primitives (tinymoon/ops/elementwise.py): the fragment/vijp logic is shared; only the
derivative (from the packed residual) and the fast fused paths differ. The fused kernels
(`tinymoon.kernels.fewbit_forward`/`fewbit_backward`: activation + bin search + pack in one pass, unpack +
lookup + multiply in one pass) are used where the kernel library has the activation; the others compute f
with array expressions and pack with `kernels.pack_bins`. Everything works on NumPy and CuPy arrays.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from ..ops.elementwise import DIAG_TOL, Diagonal
from ..ops.special import SQRT_HALF, erf
from .. import kernels

__all__ = ["PackedBins", "FewBitActivation", "PiecewiseLinearActivation", "value", "mask", "bin_index",
           "thresholds", "lookup", "FUSED", "FUSED_FORWARD", "FUSED_BACKWARD", "PIECEWISE"]

# The forward can run the kernel library's fused one-pass kernel (f + bin search + pack) for the activations
# it has. Measured slower than the split path below on the 2-core test machine (docs/fewbit.md: the kernel
# evaluates f and f' in float64 and binary-searches per element), so it is off by default; the benchmark
# times both. The split path: f as array expressions, `bin_index` (k - 1 vectorised comparisons), then
# `kernels.pack_bins`. Both give the same bins, hence bitwise the same backward.
FUSED_FORWARD = False
# Activations the fused kernel library computes, and the kernel's name for each of our parameters.
# (softplus is left out: the kernel has no `threshold`, PyTorch's linear branch above it.)
FUSED = {"gelu": {}, "silu": {}, "tanh": {}, "sigmoid": {}, "elu": {"alpha": "alpha"}}
PIECEWISE = ("relu", "leaky_relu", "relu6", "hardtanh", "hardsigmoid")

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


class PackedBins:
    """n bin indices of `bits` bits each, packed LSB-first into ceil(n·bits/8) bytes (kernels' bitpack layout;
    for bits = 1 the layout of numpy.packbits(bitorder="little")). `nbytes` is what the engine counts."""
    __slots__ = ("packed", "bits", "shape", "size")

    def __init__(self, packed, bits, shape):
        self.packed, self.bits, self.shape = packed, int(bits), tuple(shape)
        self.size = int(np.prod(self.shape, dtype=np.int64))

    @classmethod
    def pack(cls, idx, bits):
        """From uint8 indices < 2^bits (any shape)."""
        return cls(pack_codes(idx.reshape(-1), bits), bits, idx.shape)

    def unpack(self):
        """uint8 indices of the original shape."""
        return kernels.unpack_bins(self.packed, self.bits, self.size).reshape(self.shape)

    @property
    def nbytes(self):
        return int(self.packed.nbytes)

    def __repr__(self):
        return f"PackedBins(bits={self.bits}, shape={self.shape}, nbytes={self.nbytes})"


def pack_codes(idx, bits):
    """The kernels' bitpack layout (kernels.pack_bins) in a few whole-array passes: each group of 8 codes is
    OR-ed into one 8·b-bit word, whose b bytes are written out LSB first.
    TODO(kernels): kernels.pack_bins (Numba, parallel) stalls for ~10 ms per call on an oversubscribed CPU
    (docs/fewbit.md); this NumPy/CuPy version is used instead and tested against it."""
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


# ---- the exact values, as array expressions in x's dtype (NumPy or CuPy) -------------------------------

def _sigmoid(xp, x):
    e = xp.exp(-xp.abs(x))                       # never overflows
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softplus1(xp, x):
    return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))     # log(1 + e^x), overflow-free


def value(name, x, **p):
    """f(x) for a registered activation with resolved parameters `p`, in x's dtype (no promotion)."""
    xp = get_array_module(x)
    if name == "gelu":
        return x * (0.5 * (1 + erf(x * SQRT_HALF)))                  # x Φ(x), exact (erf) form
    if name == "silu":
        return x * _sigmoid(xp, x)
    if name == "tanh":
        return xp.tanh(x)
    if name == "sigmoid":
        return _sigmoid(xp, x)
    if name in ("elu", "selu"):
        a = p["alpha"] if name == "elu" else _SELU_ALPHA
        y = xp.where(x > 0, x, a * xp.expm1(xp.minimum(x, 0)))
        return y if name == "elu" else _SELU_SCALE * y
    if name == "celu":
        a = p["alpha"]
        return xp.where(x > 0, x, a * xp.expm1(xp.minimum(x, 0) / a))
    if name == "softplus":
        b, t = p["beta"], p["threshold"]
        return xp.where(b * x > t, x, _softplus1(xp, b * x) / b)    # linear above the threshold, as PyTorch
    if name == "mish":
        return x * xp.tanh(_softplus1(xp, x))
    if name == "softsign":
        return x / (1 + xp.abs(x))
    if name == "logsigmoid":
        return -_softplus1(xp, -x)
    if name == "hardswish":
        return x * xp.clip(x + 3, 0, 6) / 6
    if name == "tanhshrink":
        return x - xp.tanh(x)
    if name == "relu":
        return xp.where(x > 0, x, 0)
    if name == "leaky_relu":
        return xp.where(x > 0, x, p["negative_slope"] * x)
    if name == "relu6":
        return xp.clip(x, 0, 6)                                      # 6 above 6
    if name == "hardtanh":
        return xp.clip(x, p["min_val"], p["max_val"])
    if name == "hardsigmoid":
        return xp.clip(x / 6 + 0.5, 0, 1)
    raise KeyError(name)


def mask(name, x, **p):
    """The exact 1-bit code of a piecewise-linear activation: f'(x) = code_levels[code] (PyTorch's conditions,
    the same as tinymoon.fewbit.activations)."""
    if name in ("relu", "leaky_relu"):
        return x > 0                                                 # f'(0) = 0 (relu), slope (leaky)
    lo, hi = {"relu6": (0.0, 6.0), "hardsigmoid": (-3.0, 3.0)}.get(name, (p.get("min_val"), p.get("max_val")))
    return (x > lo) & (x < hi)                                       # slope 0 on and beyond both kinks


def thresholds(borders, dtype):
    """The borders as values of `dtype` that keep the float64 comparison exact: for x of that dtype,
    x <= s  <=>  x <= t,  t = the largest `dtype` value <= s (so no input is ever promoted to float64)."""
    t = np.asarray(borders, np.float64).astype(dtype)
    return np.where(t > borders, np.nextafter(t, dtype.type(-np.inf)), t).astype(dtype)


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
# kernels.fewbit_backward (Numba, one pass) measured slower than this table lookup on the test machine
# (docs/fewbit.md, "Speed"), so it is off; FUSED_BACKWARD = True switches to it.
FUSED_BACKWARD = False
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


def _dtype_out(y, x):
    return y if y.dtype == x.dtype else y.astype(x.dtype)


# ---- the primitives ---------------------------------------------------------------------------------------

class _Quantised(Diagonal):
    """Shared: derivative from the packed residual; vjp/jvp as levels[idx]·v; vijp/fragment from Diagonal."""
    submersive = False       # a level with |y| < DIAG_TOL erases its bin's cotangent

    @classmethod
    def _levels(cls, ctx):
        raise NotImplementedError

    @classmethod
    def derivative(cls, ctx, i=0):
        # q(x) = levels[idx(x)] in the input's dtype
        xp = get_array_module(ctx.bins.packed)
        return xp.asarray(cls._levels(ctx)).astype(ctx.dtype)[ctx.bins.unpack()]

    @classmethod
    def _times_q(cls, ctx, v):
        # levels[idx] · v, bitwise equal to levels.astype(v.dtype)[idx] * v
        if FUSED_BACKWARD:
            return kernels.fewbit_backward(ctx.bins.packed, cls._levels(ctx), ctx.bins.bits, v)
        return lookup(ctx.bins, cls._levels(ctx), v.dtype).reshape(v.shape) * v

    @classmethod
    def vjp(cls, ctx, y_bar):
        return (cls._times_q(ctx, y_bar),)                           # x̄ = q(x) ȳ

    @classmethod
    def jvp(cls, ctx, x_dot):
        return None if x_dot is None else cls._times_q(ctx, x_dot)   # ẏ = q(x) ẋ (the surrogate's derivative)

    @classmethod
    def _erased(cls, ctx, d):
        # bins whose level is (nearly) zero erase ȳ there: the fragment; y = x̄ / q elsewhere
        xp = get_array_module(d)
        return xp.abs(d) < DIAG_TOL


def _check_input(name, x):
    if x.dtype.kind != "f" or x.dtype.itemsize not in (4, 8):
        from .errors import FewBitError
        raise FewBitError(f"fewbit.{name}: needs a float32 or float64 input, got {x.dtype}; cast it with "
                          f".astype(tm.float32)")


class FewBitActivation(_Quantised):
    """y = f(x) exactly; residual: b-bit bin indices; derivative: the table's levels (see module docstring).

    params: name (registered continuous activation), table (a validated fewbit.Table), fn (the activation's
    resolved parameters, a dict).
    """
    name = "fewbit"

    @staticmethod
    def forward(ctx, x, name, table, fn):
        _check_input(name, x)
        ctx.save(dtype=x.dtype)                                     # a dtype object: 0 bytes
        if not any(ctx.needs):                                      # inference: the value only
            return _dtype_out(value(name, x, **fn), x)
        if FUSED_FORWARD and name in FUSED and get_array_module(x) is np:   # f + bins + pack in one kernel
            y, packed = kernels.fewbit_forward(name, x, table.borders, table.bits,
                                               **{FUSED[name][k]: v for k, v in fn.items()})
            ctx.save(bins=PackedBins(packed, table.bits, x.shape))
            return _dtype_out(y, x)
        ctx.save(bins=PackedBins.pack(bin_index(x, table.borders), table.bits))
        return _dtype_out(value(name, x, **fn), x)

    @classmethod
    def _levels(cls, ctx):
        return ctx.params["table"].levels


class PiecewiseLinearActivation(_Quantised):
    """relu, leaky_relu, relu6, hardtanh, hardsigmoid: y = f(x); residual: the exact 1-bit mask;
    f'(x) = code_levels[mask] with no approximation.

    params: name, levels (the two code levels, float64), fn (resolved parameters).
    """
    name = "fewbit_piecewise"

    @staticmethod
    def forward(ctx, x, name, levels, fn):
        _check_input(name, x)
        ctx.save(dtype=x.dtype)
        if not any(ctx.needs):
            return _dtype_out(value(name, x, **fn), x)
        if FUSED_FORWARD and name == "relu" and get_array_module(x) is np:   # fused: max(x, 0) + packed mask
            y, packed = kernels.relu_mask_forward(x)
            ctx.save(bins=PackedBins(packed, 1, x.shape))
            return _dtype_out(y, x)
        ctx.save(bins=PackedBins(kernels.pack_bits(mask(name, x, **fn)), 1, x.shape))
        return _dtype_out(value(name, x, **fn), x)

    @classmethod
    def _levels(cls, ctx):
        return ctx.params["levels"]
