"""Fused pointwise activations: y = f(x) and its derivative f'(x) computed in one pass over x.

The math of every activation is in the table (activations.py); `act_reference` is that table, and the
compiled bodies below are the same formulas as scalar Numba code, held to it by the tests
(tests/kernels/test_activation_table.py). Only the activations in `COMPILED` have a compiled body.

Why fuse: an activation's backward needs f'(x).  Computed the NumPy way, the forward expression and the
derivative expression each sweep x and allocate temporaries (sigmoid alone is exp, add, divide...).  The
fused kernel reads x once and writes y and dydx once: memory traffic drops to the minimum of 3 arrays.

Each compiled activation is a scalar rule `_relu(x, k)`, `_gelu(x, k)`... -> (y, dy/dx), its parameters
(leaky_relu slope, elu alpha, softplus beta and threshold) and all constants in `k`.  One compiled kernel
per dtype serves every activation (simple for Numba's disk cache): it branches on the activation number
once, outside the element loops.  tanh is the exception: see act_numba.

float32 bodies take their exp / expm1 / log1p / Φ from vecmath.py (polynomials Numba vectorises; float64
keeps libm), and are held to float64 in ulps by tests/kernels/test_vecmath.py (bounds: docs/kernels.md).
The kernels' disk cache is stamped with the whole package (numba_cache.py): editing vecmath.py recompiles them.
"""
import math

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from .activations import ACTIVATIONS
from .bitpack import nbytes_for, pack_bits_reference, unpack_bits_reference
from .threads import kernel
from .vecmath import CONTRACT, exp_pair, fdiv, gelu_phi32, log1p01

# The activations with a compiled body: name -> (code of the body, the kernel parameters in k[4], k[7]).
# act_forward takes the table's parameter names, and `slope` for leaky_relu's negative_slope (the name
# relu_mask_forward and masked_grad use too).
COMPILED = {
    "relu": (0, ()),
    "leaky_relu": (1, ("negative_slope",)),
    "elu": (2, ("alpha",)),
    "gelu": (3, ()),
    "silu": (4, ()),
    "tanh": (5, ()),
    "sigmoid": (6, ()),
    "softplus": (7, ("beta", "threshold")),
}
_ALIASES = {"slope": "negative_slope"}


_parsed = {}        # (name, *params.items()) -> (code, resolved parameters): every small op parses its activation


def parse_activation(name, params):
    """(code, resolved table parameters) for a compiled activation; rejects unknown names/parameters.
    Parameters already seen are answered from a small cache (a copy of the resolved dict: callers may keep it)."""
    key = (name, *params.items())
    try:
        hit = _parsed.get(key)
    except TypeError:                          # an unhashable parameter value: resolve() will say what is wrong
        hit = key = None
    if hit is not None:
        return hit[0], dict(hit[1])
    code, p = _parse_activation(name, params)
    if key is not None:
        if len(_parsed) >= 256:                # many distinct slopes: start over rather than grow without bound
            _parsed.clear()
        _parsed[key] = (code, dict(p))
    return code, p


def _parse_activation(name, params):
    if name not in COMPILED:
        extra = f"; {name!r} is in the activation table, without a compiled body" if name in ACTIVATIONS else ""
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(COMPILED)}{extra}")
    code, pnames = COMPILED[name]
    params = {_ALIASES.get(k, k): v for k, v in params.items()}
    extra = set(params) - set(pnames)
    if extra:
        allowed = ", ".join(repr(n) for n in pnames) or "none"
        raise ValueError(f"activation {name!r} got unexpected parameters {sorted(extra)} (allowed: {allowed})")
    return code, ACTIVATIONS[name].resolve(**params)


def check_float(x, what):
    if x.dtype not in (np.float32, np.float64):
        raise ValueError(f"{what}: needs float32 or float64, got {x.dtype}")


# ---------------------------------------------------------------------------------------------- reference
def act_reference(name, x, **params):
    """The spec: the table's f and f' (activations.py), plain NumPy expressions in x's dtype."""
    _, p = parse_activation(name, params)
    return ACTIVATIONS[name].forward(x, p)


def relu_mask_forward_reference(x, slope=0.0):
    """(relu or leaky_relu of x, the bit x > 0): the table's f and its exact mask."""
    if slope == 0:
        y = ACTIVATIONS["relu"].forward(x, {})[0]
    else:
        y = ACTIVATIONS["leaky_relu"].forward(x, {"negative_slope": float(slope)})[0]
    return y, pack_bits_reference(ACTIVATIONS["relu"].code_fn(np, x))


def masked_grad_reference(packed, y_bar, slope=0.0):
    bit = unpack_bits_reference(packed, y_bar.size).reshape(y_bar.shape)
    off = y_bar.dtype.type(0) if slope == 0 else y_bar.dtype.type(slope) * y_bar   # relu: exactly 0 (even for ȳ = ∞)
    return np.where(bit, y_bar, off)


# ---------------------------------------------------------------------------------------------- numba CPU
# Every constant comes in through `k`, an array in x's dtype: a Python literal (1, 0.5) is int64/float64
# to Numba and would promote float32 arithmetic to float64 (2-4x slower libm calls, no SIMD).
# k = [0, 1, 1/2, 2, p, 1/√2, 1/√(2π), p2]: p, p2 the activation's parameters (COMPILED's order), else 0
# Made once per (dtype, activation, parameters) and reused (the kernels only read it): building it cost ~1 µs,
# a twentieth of a small activation step.  Bounded as _parsed.
_k = {}


def _constants(dtype, name, p):
    key = (dtype, name, *p.values())
    k = _k.get(key)
    if k is None:
        p1, p2 = (tuple(p[n] for n in COMPILED[name][1]) + (0.0, 0.0))[:2]
        if len(_k) >= 256:
            _k.clear()
        k = _k[key] = np.array([0, 1, 0.5, 2, p1, math.sqrt(0.5), 1 / math.sqrt(2 * math.pi), p2], dtype)
    return k


# The transcendental parts come from vecmath: float32 there is straight-line polynomial code (range
# reduction, polynomial, 2^n from exponent bits; selects, no calls), so each loop below vectorises; float64
# keeps libm.  Each body is also written branch-free (both sides computed, then a select), for the same reason.
@njit(inline="always")
def _sigmoid_parts(z, k):
    """(σ(z), 1 − σ(z)), each without cancellation: e = e^{−|z|} never overflows, and
    σ = 1/(1+e), 1 − σ = e/(1+e) for z >= 0 (swapped for z < 0)."""
    return _sigmoid_parts_of(z, exp_pair(-abs(z))[1], k)


@njit(inline="always")
def _sigmoid_parts_of(z, e, k):
    """_sigmoid_parts with e = e^{−|z|} given (softplus needs e itself too)."""
    inv = fdiv(k[1], k[1] + e)
    small = e * inv
    pos = z >= k[0]
    return (inv if pos else small), (small if pos else inv)


@njit(inline="always")
def _sigmoid(z, k):
    return _sigmoid_parts(z, k)[0]


@njit(inline="always")
def _relu(x, k):
    return (k[0] if x <= k[0] else x), (k[1] if x > k[0] else k[0])    # max(x, 0) (NaN stays NaN); f'(0) = 0


@njit(inline="always")
def _leaky_relu(x, k):
    return (x, k[1]) if x > k[0] else (k[4] * x, k[4])


@njit(inline="always")
def _elu(x, k):
    em1, e = exp_pair(k[0] if x > k[0] else x)  # e^x − 1 (float32: relative, as the table's expm1), e^x; x <= 0
    pos = x > k[0]
    return (x if pos else k[4] * em1), (k[1] if pos else k[4] * e)


def _gelu_typed(x, k):
    """(GELU(x), GELU'(x)) in x's type: see the overload below."""


@njit(inline="always")
def _gelu_libm(x, k):
    cdf = k[2] * (k[1] + math.erf(x * k[5]))  # Φ(x)
    return x * cdf, cdf + x * math.exp(-k[2] * x * x) * k[6]  # y' = Φ(x) + x φ(x)


@njit(inline="always")
def _gelu_poly(x, k):
    cdf, e = gelu_phi32(x)     # Φ(x) (erfc form in the tails), e^{−x²/2} with the argument taken exactly
    return x * cdf, cdf + x * e * k[6]


@overload(_gelu_typed, inline="always")   # IR-level: too big for LLVM's inliner (a call stops vectorisation)
def _gelu_typed_ov(x, k):
    if x == types.float32:
        return lambda x, k: _gelu_poly(x, k)
    return lambda x, k: _gelu_libm(x, k)


@njit(inline="always")
def _gelu(x, k):
    return _gelu_typed(x, k)


def _silu_one_minus(s, s1, one):
    """1 − σ for silu': float32 the cancellation-free e/(1+e) (the ulp bound needs it for x >~ 8), float64
    the table's 1 − σ (its arithmetic, which the float64 table check holds to 8 ε; the cancellation-free
    form differs from it by up to 9 ε at x ~ 12, where the table is the less accurate one)."""


@overload(_silu_one_minus)
def _silu_one_minus_ov(s, s1, one):
    if s == types.float32:
        return lambda s, s1, one: s1
    return lambda s, s1, one: one - s


@njit(inline="always")
def _silu(x, k):
    s, s1 = _sigmoid_parts(x, k)
    return x * s, s * (k[1] + x * _silu_one_minus(s, s1, k[1]))          # σ (1 + x (1 − σ))


@njit(inline="always")
def _tanh(x, k):
    t = math.tanh(x)
    return t, k[1] - t * t


@njit(inline="always")
def _sigmoid_pair(x, k):
    s, s1 = _sigmoid_parts(x, k)
    return s, s * s1                           # σ (1 − σ), 1 − σ without cancellation


@njit(inline="always")
def _softplus(x, k):
    z = k[4] * x  # y = (max(z, 0) + log1p(e^{−|z|}))/β, y' = σ(z); linear above the threshold k[7]
    e = exp_pair(-abs(z))[1]
    s = _sigmoid_parts_of(z, e, k)[0]
    lin = z > k[7]
    y = fdiv(max(z, k[0]) + log1p01(e), k[4])
    return (x if lin else y), (k[1] if lin else s)


@njit(inline="always")
def constant_tuple(consts):
    """The eight constants as a tuple, read once before the loop.  Read from the array inside the loop, every
    iteration reloads them (a store to y might alias it), and the serial compilation then does not vectorise:
    GELU's value at 4096 float32 elements 41 µs against 2.8 µs from the tuple (measured, bitwise the same)."""
    return (consts[0], consts[1], consts[2], consts[3], consts[4], consts[5], consts[6], consts[7])


# contract: a·b + c as one FMA (vecmath.CONTRACT).  Small arrays: the serial compilation, which vectorises the
# bodies as the parallel one does, bitwise the same, once the constants are a tuple (constant_tuple).
# saves_ns (here and on the other kernels of this file and fewbit.py): what two threads save per float32 element
# over one at 2^21-2^22 elements (measured, 2 cores); threads.Kernel starts the pool where that pays its launch.
@kernel(fastmath=CONTRACT, saves_ns=0.25)
def _act_kernel(code, x, consts, y, d):
    k = constant_tuple(consts)
    # The activation branch sits outside the loops: each loop body is straight-line code the compiler can
    # vectorise (relu, leaky relu) and that never re-tests `code` per element (measured ~6x on relu).
    n = x.size
    if code == 0:
        for i in prange(n):
            y[i], d[i] = _relu(x[i], k)
    elif code == 1:
        for i in prange(n):
            y[i], d[i] = _leaky_relu(x[i], k)
    elif code == 2:
        for i in prange(n):
            y[i], d[i] = _elu(x[i], k)
    elif code == 3:
        for i in prange(n):
            y[i], d[i] = _gelu(x[i], k)
    elif code == 4:
        for i in prange(n):
            y[i], d[i] = _silu(x[i], k)
    elif code == 5:  # not reached from act_numba, which takes tanh's value from NumPy's SIMD tanh
        for i in prange(n):
            y[i], d[i] = _tanh(x[i], k)
    elif code == 6:
        for i in prange(n):
            y[i], d[i] = _sigmoid_pair(x[i], k)
    else:
        for i in prange(n):
            y[i], d[i] = _softplus(x[i], k)


@njit(inline="always")
def act_values(code, x, k, y):
    """y = f(x) alone, one block, for a kernel that keeps no f' (the few-bit forward): _act_kernel's bodies,
    whose derivative half is then dead code.  Bit for bit _act_kernel's y when the caller compiles with its
    flags (fastmath=CONTRACT) and passes k as the tuple constant_tuple(consts).  tanh (code 5) is not computed
    here: its value is NumPy's np.tanh (see act_numba)."""
    if code == 0:
        for i in range(x.size):
            y[i] = _relu(x[i], k)[0]
    elif code == 1:
        for i in range(x.size):
            y[i] = _leaky_relu(x[i], k)[0]
    elif code == 2:
        for i in range(x.size):
            y[i] = _elu(x[i], k)[0]
    elif code == 3:
        for i in range(x.size):
            y[i] = _gelu(x[i], k)[0]
    elif code == 4:
        for i in range(x.size):
            y[i] = _silu(x[i], k)[0]
    elif code == 6:
        for i in range(x.size):
            y[i] = _sigmoid_pair(x[i], k)[0]
    elif code == 7:
        for i in range(x.size):
            y[i] = _softplus(x[i], k)[0]


@kernel(fastmath=CONTRACT, saves_ns=0.2)
def _tanh_grad_float32_kernel(x, consts, d):
    k = constant_tuple(consts)
    # tanh'(x) = 1 − tanh² = 4 σ(2x)(1 − σ(2x)): from x, not from the rounded y, whose 1 − y² loses every
    # digit for |x| >~ 4.5 (and is 0 beyond 9.01, where tanh' is 6e-8); 2x is exact (inf beyond 1.7e38: 0)
    for i in prange(x.size):
        s, s1 = _sigmoid_parts(k[3] * x[i], k)
        d[i] = (k[3] * k[3]) * (s * s1)


@kernel(saves_ns=0.3)
def _tanh_grad_kernel(y, one, d):
    for i in prange(y.size):
        d[i] = one - y[i] * y[i]  # tanh' = 1 − tanh²


@njit(inline="always")
def _relu_value(xi, slope, zero):
    # slope 0 (relu) writes an exact +0, not 0·x (which is −0 for negative x); NaN stays NaN in both
    if slope == zero:
        return zero if xi <= zero else xi          # max(x, 0): +0 for x <= 0, NaN stays NaN
    return xi if xi > zero else slope * xi


@njit(inline="always")
def _masked_value(g, bit, slope, zero):
    # ȳ where the bit is set, slope·ȳ elsewhere (exactly 0 for slope 0, even where ȳ = ±∞)
    return g if bit else (zero if slope == zero else slope * g)


# The relu mask kernels run over chunks of whole bytes, each chunk a serial loop on slices indexed from 0.
# A prange straight over the bytes (x[8 * k + t] with k the parallel index) compiled to scalar code in the
# parallel version: 2^20 float32, relu_mask 527 µs on one thread against 114 µs serial (masked_grad 301 vs 99,
# measured), so the pool lost to one thread at every size.  Chunked, both compilations run the same loop.
MASK_CHUNK = 1 << 14        # elements per chunk (a multiple of 8: every chunk writes whole bytes of its own)


@njit(inline="always")
def _relu_mask_chunk(xs, slope, ys, pk):
    # One byte (8 elements) per iteration: the full bytes run a fixed 8-step inner loop (unrolled and
    # vectorised: 2x faster than a variable trip count), the last partial byte runs once after them.
    n = xs.size
    zero = slope - slope
    full = n // 8
    for k in range(full):
        v = 0
        for t in range(8):
            xi = xs[8 * k + t]
            ys[8 * k + t] = _relu_value(xi, slope, zero)
            v |= (xi > zero) << t
        pk[k] = v
    if full < pk.size:
        v = 0
        for t in range(n - 8 * full):
            xi = xs[8 * full + t]
            ys[8 * full + t] = _relu_value(xi, slope, zero)
            v |= (xi > zero) << t
        pk[full] = v


@njit(inline="always")
def _masked_grad_chunk(pk, gs, slope, xb):
    # x̄ = ȳ where the bit is set (x > 0), slope·ȳ elsewhere; full bytes with a fixed inner loop, then the tail.
    n = gs.size
    zero = slope - slope
    full = n // 8
    for k in range(full):
        v = pk[k]
        for t in range(8):
            xb[8 * k + t] = _masked_value(gs[8 * k + t], (v >> t) & 1, slope, zero)
    if 8 * full < n:
        v = pk[full]
        for t in range(n - 8 * full):
            xb[8 * full + t] = _masked_value(gs[8 * full + t], (v >> t) & 1, slope, zero)


@kernel(saves_ns=0.05)     # serial below the measured break-even (threads.py), the pool above it
def _relu_mask_kernel(x, slope, y, packed):
    n = x.size
    for c in prange((n + MASK_CHUNK - 1) // MASK_CHUNK):
        lo = c * MASK_CHUNK
        hi = min(n, lo + MASK_CHUNK)
        _relu_mask_chunk(x[lo:hi], slope, y[lo:hi], packed[lo // 8:(hi + 7) // 8])


@kernel(saves_ns=0.03)     # serial below the measured break-even (threads.py), the pool above it
def _masked_grad_kernel(packed, y_bar, slope, x_bar):
    n = y_bar.size
    for c in prange((n + MASK_CHUNK - 1) // MASK_CHUNK):
        lo = c * MASK_CHUNK
        hi = min(n, lo + MASK_CHUNK)
        _masked_grad_chunk(packed[lo // 8:(hi + 7) // 8], y_bar[lo:hi], slope, x_bar[lo:hi])


def act_numba(name, x, **params):
    code, p = parse_activation(name, params)
    xf = np.ascontiguousarray(x).reshape(-1)
    d = np.empty_like(xf)
    if name == "tanh":
        # NumPy's tanh is SIMD (~0.2 ns/element); Numba without Intel SVML calls scalar libm tanh
        # (~24 ns/element, measured).  So y comes from NumPy, and y' is a Numba pass: float32 from x
        # (vectorised exp, within a few ulp everywhere), float64 as the table's 1 − y².
        y = np.tanh(xf)
        if x.dtype == np.float32:
            _tanh_grad_float32_kernel(xf, _constants(x.dtype, name, p), d)
        else:
            _tanh_grad_kernel(y, x.dtype.type(1), d)   # float64: the table's 1 − y², exact to a few ε
        return y.reshape(x.shape), d.reshape(x.shape)
    y = np.empty_like(xf)
    _act_kernel(code, xf, _constants(x.dtype, name, p), y, d)
    return y.reshape(x.shape), d.reshape(x.shape)


def relu_mask_forward_numba(x, slope=0.0):
    xf = np.ascontiguousarray(x).reshape(-1)
    y = np.empty_like(xf)
    packed = np.empty(nbytes_for(xf.size, 1), np.uint8)
    _relu_mask_kernel(xf, x.dtype.type(slope), y, packed)
    return y.reshape(x.shape), packed


def masked_grad_numba(packed, y_bar, slope=0.0):
    g = np.ascontiguousarray(y_bar).reshape(-1)
    out = np.empty_like(g)
    _masked_grad_kernel(packed.reshape(-1), g, y_bar.dtype.type(slope), out)
    return out.reshape(y_bar.shape)

