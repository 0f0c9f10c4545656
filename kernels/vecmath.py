"""Vectorisable float32 transcendentals for Numba loops: exp, expm1, log1p, and GELU's Φ(x) with φ(x).

Why: Numba compiles math.exp / math.erf / math.log1p to calls into the scalar libm (no Intel SVML here), and
a call in a loop body stops LLVM's loop vectoriser: the activations ran at ~2-15 ns per element where
PyTorch's (SLEEF-style) vector code runs at ~0.5.  These functions are straight-line arithmetic — a range
reduction, a polynomial, 2^n built from its exponent bits — with selects instead of branches, so a loop
over them becomes AVX-512 code.  Only float32 takes them: float64 keeps libm (exact to < 1 ulp, what the
gradient checks rely on); `exp_pair` / `log1p01` pick by type at compile time (overload), GELU's body
in pointwise.py picks `gelu_phi32` or libm the same way.

NaN, ±inf, overflow and underflow follow libm: every clamp is written `c if v > c else v` (false for NaN, so
NaN passes through), exp overflows to +inf above 88.72 and underflows through the subnormals to +0.

Accuracy (float32, max error in ulps against float64 libm, measured on every 32nd float32 bit pattern of
the range; tests/kernels/test_vecmath.py asserts them on a sparser sweep; the bodies' bounds are in
docs/kernels.md):
  exp_pair(x) -> (e^x − 1, e^x)    e^x ≤ 0.98 ulp for all x; e^x − 1 ≤ 0.88 ulp for x ≤ 0 (elu's branch:
                                   relative also for tiny |x|, where e^x − 1 written plainly would cancel)
  log1p01(t)                       ≤ 1.15 ulp for t in [0, 1] (softplus' log1p(e^{−|z|}))
  gelu_phi32(x) -> (Φ(x), e^{−x²/2}) ≤ 5.1 and ≤ 1.13 ulp, relative in both tails too (Φ from erfc there)

Polynomials: least-squares fits refined towards minimax (Lawson), coefficients rounded to float32 one at a
time with the rest refitted; the fit script's recipe is in docs/kernels.md.
"""
import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

f32 = np.float32
# The one fast-math flag: a·b + c may become one FMA (one rounding instead of two: the polynomials run ~2x
# faster and no less accurate).  No 'nnan'/'ninf'/'reassoc': NaN, ±inf and the order of every sum stay IEEE.
# Callers that inline these at the IR level (pointwise._act_kernel) pass the same flag.
CONTRACT = {"contract"}

# ---- 2^n from its exponent bits ----------------------------------------------------------------------------
@intrinsic
def _ldexp32(typingctx, v, nf):
    """v · 2^n for float32 v and an integer-valued float32 n in [−252, 254]: two factors 2^⌊n/2⌋, 2^⌈n/2⌉,
    each an IEEE exponent field built by integer shift (so 2^n may be subnormal or overflow to inf, with
    one rounding).  A NaN n counts as 0 (fptosi of NaN is undefined in LLVM; v is NaN then anyway)."""
    if v != types.float32 or nf != types.float32:
        return None

    def codegen(context, builder, sig, args):
        val, n_f = args
        i32 = ir.IntType(32)
        n_f = builder.select(builder.fcmp_unordered("uno", n_f, n_f), ir.Constant(ir.FloatType(), 0.0), n_f)
        n = builder.fptosi(n_f, i32)
        n1 = builder.ashr(n, ir.Constant(i32, 1))
        n2 = builder.sub(n, n1)

        def pow2(m):
            bits = builder.shl(builder.add(m, ir.Constant(i32, 127)), ir.Constant(i32, 23))
            return builder.bitcast(bits, ir.FloatType())
        return builder.fmul(builder.fmul(val, pow2(n1)), pow2(n2))
    return types.float32(types.float32, types.float32), codegen


@intrinsic
def fdiv(typingctx, a, b):
    """a / b as the bare IEEE division (±inf, NaN for /0), whatever the caller's error_model: Numba's
    default model tests b == 0 to raise ZeroDivisionError, and a raise in a loop body stops vectorisation —
    also in a caller that inlines these functions at the IR level (the bodies in pointwise.py, the few-bit
    kernel), where the caller's model applies."""
    if a != b or a not in (types.float32, types.float64):
        return None

    def codegen(context, builder, sig, args):
        return builder.fdiv(*args)
    return a(a, b), codegen


@intrinsic
def _high12(typingctx, v):
    """float32 v with the low 12 of its 23 stored mantissa bits cleared (12 significant bits: hi² is exact).
    A bit mask, not Veltkamp's c − (c − v) with c = 4097 v, which FMA contraction would break."""
    if v != types.float32:
        return None

    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        bits = builder.and_(builder.bitcast(args[0], i32), ir.Constant(i32, 0xFFFFF000))
        return builder.bitcast(bits, ir.FloatType())
    return types.float32(types.float32), codegen


# ---- exp and expm1 (float32) ---------------------------------------------------------------------------------
# x = n ln2 + r, |r| <= ln2/2: n = rint(x/ln2) by the 1.5·2^23 shifter (round-to-nearest add), r by Cody–Waite
# with ln2 = LN2_HI + LN2_LO, LN2_HI having 9 trailing zero bits (n·LN2_HI exact for |n| < 2^9).
# e^r − 1 = r + r²·P(r), P of degree 5 (fit error 5e-9 relative on |r| <= 0.357).
LOG2E = f32(1.4426950408889634)
SHIFTER = f32(12582912.0)                      # 1.5·2^23
LN2_HI = f32(6.9314575195e-01)                 # 0x3f317200
LN2_LO = f32(1.4286067653e-06)                 # 0x35bfbe8e
EXP_HI, EXP_LO = f32(89.0), f32(-104.0)        # e^89 = inf, e^−104 = +0 in float32: beyond, clamp
E0, E1, E2 = f32(0.5), f32(0.1666666567325592), f32(0.04166649281978607)
E3, E4, E5 = f32(0.008333584293723106), f32(0.0013932932633906603), f32(0.00019731553038582206)
ONE, ZERO, HALF = f32(1.0), f32(0.0), f32(0.5)


@njit(error_model="numpy", fastmath=CONTRACT)  # no ZeroDivisionError check: a raise in the loop body stops vectorisation
def _reduce(hi, lo):
    """n and r with hi + lo = n ln2 + r (lo: a small tail of the argument, 0 for plain exp)."""
    hi = EXP_HI if hi > EXP_HI else hi      # e^hi overflows / underflows beyond: the clamp keeps n in range
    hi = EXP_LO if hi < EXP_LO else hi
    nf = ((hi + lo) * LOG2E + SHIFTER) - SHIFTER
    r = ((hi - nf * LN2_HI) + lo) - nf * LN2_LO
    return nf, r


@njit(error_model="numpy", fastmath=CONTRACT)  # no ZeroDivisionError check: a raise in the loop body stops vectorisation
def _expm1_r(r):
    return r + r * r * (E0 + r * (E1 + r * (E2 + r * (E3 + r * (E4 + r * E5)))))


@njit(error_model="numpy", fastmath=CONTRACT)  # no ZeroDivisionError check: a raise in the loop body stops vectorisation
def exp32_2(hi, lo):
    """e^(hi + lo) for a float32 pair (|lo| small against hi): the tail enters r before the polynomial."""
    nf, r = _reduce(hi, lo)
    return _ldexp32(ONE + _expm1_r(r), nf)


@njit(error_model="numpy", fastmath=CONTRACT)  # no ZeroDivisionError check: a raise in the loop body stops vectorisation
def exp_pair32(x):
    """(e^x − 1, e^x): e^x − 1 = 2^n (e^r − 1) + (2^n − 1), exact 2^n − 1 for the n of x <= 0."""
    nf, r = _reduce(x, ZERO)
    p = _expm1_r(r)
    two_n = _ldexp32(ONE, nf)
    return _ldexp32(p, nf) + (two_n - ONE), _ldexp32(ONE + p, nf)


def exp_pair(x):
    """(e^x − 1, e^x) in x's type: float32 the polynomial above, float64 libm (e^x − 1 as e^x − 1)."""


@overload(exp_pair)
def _exp_pair_ov(x):
    if x == types.float32:
        return lambda x: exp_pair32(x)

    def exp64(x):
        e = math.exp(x)
        return e - 1.0, e
    return exp64


# ---- log1p on [0, 1] (float32) ----------------------------------------------------------------------------------
# fdlibm's logf: u = 1 + t = 2^k m, m in [√2/2, √2), f = m − 1, s = f/(2 + f),
# log(1 + f) = f − (f²/2 − s (f²/2 + R(s²))), R the fdlibm minimax for |s| <= 0.1716 (Lg1..Lg4);
# plus c = (t − (u − 1))/u, the part of t that 1 + t rounded away.
LG1, LG2 = f32(0.66666662693), f32(0.40000972152)
LG3, LG4 = f32(0.28498786688), f32(0.24279078841)
SQRT2 = f32(1.4142135623730951)


@njit(error_model="numpy", fastmath=CONTRACT)  # no ZeroDivisionError check: a raise in the loop body stops vectorisation
def log1p01_32(t):
    u = ONE + t
    c = fdiv(t - (u - ONE), u)
    big = u > SQRT2
    m = u * HALF if big else u
    kf = ONE if big else ZERO
    f = m - ONE
    s = fdiv(f, f32(2.0) + f)
    z = s * s
    R = z * (LG1 + z * (LG2 + z * (LG3 + z * LG4)))
    hfsq = HALF * f * f
    return kf * LN2_HI + ((f - (hfsq - s * (hfsq + R))) + (kf * LN2_LO + c))


def log1p01(t):
    """log(1 + t) for t in [0, 1] (NaN passes): float32 the polynomial above, float64 libm."""


@overload(log1p01)
def _log1p01_ov(t):
    if t == types.float32:
        return lambda t: log1p01_32(t)
    return lambda t: math.log1p(t)


# ---- GELU's Φ(x) and e^{−x²/2} (float32) -------------------------------------------------------------------------
# Φ(x) = (1 + erf(x/√2))/2 is accurate only where erf is not near ∓1; in the tails Φ(−|x|) = erfc(z)/2,
# z = |x|/√2, and erfc(z) = e^{−z²} h(z) with h smooth (≈ 1/(z√π)).  So:
#   z < 1/2:  erf(z) = z + z·P(u), u = z², P of degree 5 (fit error 8e-9 relative)
#   z >= 1/2: Q = e^{−x²/2} t k(t − W0)/2, t = 1/(1 + z), k(w) a degree-10 polynomial fitting
#             erfc(z) e^{z²} (1 + z) (8e-9 relative on z in [1/2, 9.7]; beyond 9.7, e^{−x²/2} is already 0
#             in float32); Φ = Q for x < 0, 1 − Q else.
# e^{−x²/2} itself takes the argument exactly: x = xh + xl (xh: x's 12 leading significant bits), so
# −x²/2 = −xh²/2 (exact) − (xh·xl + xl²/2) (small), and exp32_2 adds that tail inside the reduction — the
# plain float32 x·x/2 would be off by up to ~50 ulp of the result at |x| = 10.
P0, P1, P2 = f32(0.12837916612625122), f32(-0.37612631916999817), f32(0.11283641308546066)
P3, P4, P5 = f32(-0.026852041482925415), f32(0.005159225780516863), f32(-0.0007133398321457207)
W0 = f32(0.3822994530200958)
H0 = f32(0.794187605381012)
H1 = f32(0.5577912926673889)
H2 = f32(-0.3046742081642151)
H3 = f32(-0.33838269114494324)
H4 = f32(0.5345941185951233)
H5 = f32(-0.057488564401865005)
H6 = f32(-0.6990835070610046)
H7 = f32(0.9941453337669373)
H8 = f32(-0.1632663607597351)
H9 = f32(-1.6556951999664307)
H10 = f32(2.132328748703003)
GELU_CLAMP = f32(20.0)                 # e^{−200} = 0: beyond, |x| is clamped for the exponential
SQRT_HALF = f32(math.sqrt(0.5))


@njit(error_model="numpy", fastmath=CONTRACT)  # no ZeroDivisionError check: a raise in the loop body stops vectorisation
def _h(w):
    return H0 + w * (H1 + w * (H2 + w * (H3 + w * (H4 + w * (H5 + w * (H6 + w * (H7 + w * (H8 + w * (
        H9 + w * H10)))))))))


@njit(inline="always", error_model="numpy", fastmath=CONTRACT)   # IR-level inline: too big for LLVM's inliner, and a call stops vectorisation
def gelu_phi32(x):
    a = abs(x)
    a = GELU_CLAMP if a > GELU_CLAMP else a
    ah = _high12(a)
    al = a - ah                                                    # exact
    e = exp32_2(-HALF * ah * ah, -(ah * al + HALF * al * al))     # e^{−x²/2}
    zs = x * SQRT_HALF                                             # erf branch, signed
    erf = zs + zs * (P0 + (zs * zs) * (P1 + (zs * zs) * (P2 + (zs * zs) * (P3 + (zs * zs) * (P4 + (zs * zs) * P5)))))
    z = a * SQRT_HALF
    t = fdiv(ONE, ONE + z)
    q = HALF * e * (t * _h(t - W0))
    tail = q if x < ZERO else ONE - q
    phi = HALF + HALF * erf if z < HALF else tail
    return phi, e


