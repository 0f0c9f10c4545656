"""The float32 polynomial math (kernels/vecmath.py) and the float32 activation bodies built on it, held to
float64 libm in ulps: a sweep over every 1021st float32 bit pattern of a wide range (every binade, the
subnormals included) plus the special values.  The bounds are the ones stated in vecmath.py and
docs/kernels.md (measured there on a 32x denser sweep); float64 is held to the table by
test_activation_table.py.

The ulp of a result is the spacing of float32 at the float64 reference rounded to float32, so a correctly
rounded result is within 0.5.  Two places are measured absolutely, because any formula loses the relative
digits there: results below 2^-120 (subnormal, or x·Φ(x) made from a subnormal Φ; absolutely, ≤ 2^-140) and f' within 0.5 of its zero crossing
(gelu' at -0.7518, silu' at -1.2785; in units of 2^-24, f' being of order 0.1 there)."""
import math
import os

import numpy as np
import pytest
from numba import njit, vectorize

from tinymoon.kernels import pointwise as P, vecmath as V

STEP = int(os.environ.get("TINYMOON_ULP_STEP", 1021))   # 32: the docs' denser sweep (a few GB, minutes)


def sweep(lo, hi, step=STEP):
    """Every step-th float32 from lo to hi in bit-pattern order (so every binade is sampled alike)."""
    def ordered(v):
        b = np.int64(np.float32(v).view(np.int32))
        return -(b & 0x7FFFFFFF) if b < 0 else b
    k = np.arange(ordered(lo), ordered(hi) + 1, step, dtype=np.int64)
    return np.where(k < 0, (-k) | 0x80000000, k).astype(np.uint32).view(np.float32)


SPECIAL = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1e-38, -1e-38, 1e-30, -1e-30, 88.72, 88.73,
                    -87.3, -103.9, -104.5, 3e38, -3e38], np.float32)


def ulps(got, ref):
    """|got − ref| in float32 ulps of ref (ref float64); NaN where either is NaN."""
    ref32 = ref.astype(np.float32)
    spacing = np.maximum(np.spacing(np.abs(ref32)).astype(np.float64), 2.0**-149)
    with np.errstate(invalid="ignore"):
        return np.abs(got.astype(np.float64) - ref) / spacing


def assert_same_specials(got, ref, what):
    """NaN at the same places, and the same value where the reference is ±inf or 0 in float32."""
    ref32 = ref.astype(np.float32)
    assert np.array_equal(np.isnan(got), np.isnan(ref32)), f"{what}: NaN at other places"
    inf = np.isinf(ref32)
    assert np.array_equal(got[inf], ref32[inf]), f"{what}: differs where the reference is ±inf"


def assert_within(got, ref, bound, what, x):
    assert_same_specials(got, ref, what)
    e = ulps(got, ref)
    fin = np.isfinite(ref) & ~np.isnan(got)
    worst = np.nanmax(e[fin])
    assert worst <= bound, f"{what}: {worst:.2f} ulp > {bound} at x = {x[fin][np.nanargmax(e[fin])]!r}"


# ---- the building blocks --------------------------------------------------------------------------------------
@njit
def _run_exp(x, em1, e):
    for i in range(x.size):
        em1[i], e[i] = V.exp_pair(x[i])


@njit
def _run_log1p(t, out):
    for i in range(t.size):
        out[i] = V.log1p01(t[i])


@njit
def _run_phi(x, phi, e):
    for i in range(x.size):
        phi[i], e[i] = V.gelu_phi32(x[i])


@vectorize(["float64(float64)"])
def _erfc64(v):
    return math.erfc(v)


def test_exp_and_expm1_within_one_ulp():
    x = np.concatenate([sweep(-110.0, 110.0), SPECIAL])
    em1, e = np.empty_like(x), np.empty_like(x)
    _run_exp(x, em1, e)
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore"):
        assert_within(e, np.exp(x64), 1.0, "exp", x)
    neg = ~(x > 0)                                      # e^x − 1 is claimed for x <= 0 (elu's branch), NaN too
    assert_within(em1[neg], np.expm1(x64[neg]), 1.0, "expm1", x[neg])
    assert np.isposinf(e[x == np.float32(88.73)]).all() and (e[x == np.float32(-104.5)] == 0).all()
    assert e[x == np.float32(-103.9)][0] > 0                                   # the subnormal tail reached


def test_log1p_on_zero_to_one_within_one_ulp():
    t = np.concatenate([sweep(0.0, 1.0, max(1, STEP // 4)), np.array([0.0, 1e-45, 1e-30, 1.0, np.nan], np.float32)])
    out = np.empty_like(t)
    _run_log1p(t, out)
    assert_within(out, np.log1p(t.astype(np.float64)), 1.5, "log1p", t)


def test_gelu_phi_and_gaussian_within_their_bounds():
    x = np.concatenate([sweep(-30.0, 30.0), SPECIAL])
    phi, e = np.empty_like(x), np.empty_like(x)
    _run_phi(x, phi, e)
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore"):
        ref_phi, ref_e = 0.5 * _erfc64(-x64 / math.sqrt(2)), np.exp(-x64 * x64 / 2)
    normal = ~(np.abs(ref_phi) < 2.0**-126)
    assert_within(phi[normal], ref_phi[normal], 5.5, "Phi", x[normal])
    assert np.nanmax(np.abs(phi[~normal] - ref_phi[~normal])) <= 4 * 2.0**-149
    assert_within(e, ref_e, 1.2, "exp(-x^2/2)", x)
    assert phi[x == np.inf][0] == 1 and phi[x == -np.inf][0] == 0 and np.isnan(phi[np.isnan(x)]).all()


# ---- the float32 bodies ---------------------------------------------------------------------------------------
def _sigmoid_parts(z):
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e)), np.where(z >= 0, e / (1 + e), 1 / (1 + e)), e / (1 + e) ** 2


def reference(name, x, p):
    """f and f' in float64, each without cancellation (the table's float64 formulas, with 1 − σ as σ(−x),
    σ' as e/(1+e)², Φ from erfc): the truth the float32 bodies are measured against."""
    if name == "gelu":
        phi = 0.5 * _erfc64(-x / math.sqrt(2))
        return x * phi, phi + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    if name == "silu":
        s, s1, _ = _sigmoid_parts(x)
        return x * s, s * (1 + x * s1)
    if name == "sigmoid":
        s, _, d = _sigmoid_parts(x)
        return s, d
    if name == "elu":
        a = p.get("alpha", 1.0)
        neg = np.minimum(x, 0)
        return np.where(x > 0, x, a * np.expm1(neg)), np.where(x > 0, 1.0, a * np.exp(neg))
    if name == "tanh":
        e = np.exp(-2 * np.abs(x))
        return np.tanh(x), 4 * e / (1 + e) ** 2                     # tanh' = 1 − tanh², without cancellation
    b, t = p.get("beta", 1.0), p.get("threshold", 20.0)          # softplus
    z = b * x
    return (np.where(z > t, x, (np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))) / b),
            np.where(z > t, 1.0, _sigmoid_parts(z)[0]))


# (name, parameters, ulp bound of f, of f'): docs/kernels.md's table
BOUNDS = [("gelu", {}, 5.0, 5.5), ("silu", {}, 4.0, 6.0), ("sigmoid", {}, 3.0, 5.0), ("tanh", {}, 1.5, 5.0),
          ("elu", {}, 1.0, 1.0), ("elu", {"alpha": 0.7}, 2.0, 2.0), ("softplus", {}, 2.0, 3.0),
          ("softplus", {"beta": 2.0, "threshold": 7.0}, 2.0, 3.0)]
ZEROS = {"gelu": -0.7517916, "silu": -1.2784645}       # where f' crosses 0


@pytest.mark.parametrize("name, p, bound_f, bound_d", BOUNDS)
def test_float32_bodies_within_their_ulp_bounds(name, p, bound_f, bound_d):
    x = np.concatenate([sweep(-120.0, 120.0), SPECIAL])
    with np.errstate(all="ignore"):
        y, d = P.act_numba(name, x, **p)
        ry, rd = reference(name, x.astype(np.float64), p)
    for what, got, ref, bound in (("f", y, ry, bound_f), ("f'", d, rd, bound_d)):
        sub = np.abs(ref) < 2.0**-120                 # subnormal, or made from a subnormal factor (x Φ(x))
        near = np.abs(x - ZEROS[name]) < 0.5 if (what == "f'" and name in ZEROS) else np.zeros(x.shape, bool)
        keep = ~(sub | near)
        assert_within(got[keep], ref[keep], bound, f"{name} {what}", x[keep])
        with np.errstate(invalid="ignore"):
            assert np.nanmax(np.abs(got[sub] - ref[sub]), initial=0) <= 2.0**-140, f"{name} {what} subnormal"
            assert np.nanmax(np.abs(got[near] - ref[near]), initial=0) <= 4 * 2.0**-24, f"{name} {what} near 0"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(P.COMPILED))
def test_strided_and_odd_inputs_give_the_contiguous_result(name, dtype):
    rng = np.random.default_rng(3)
    base = (rng.standard_normal((37, 2 * 53 + 1)) * 5).astype(dtype)
    base.flat[::97] = np.nan
    x = base[:, ::2]                                   # non-contiguous, odd sizes
    with np.errstate(all="ignore"):
        y, d = P.act_numba(name, x)
        yc, dc = P.act_numba(name, np.ascontiguousarray(x))
    assert y.shape == d.shape == x.shape
    assert np.array_equal(y, yc, equal_nan=True) and np.array_equal(d, dc, equal_nan=True)
