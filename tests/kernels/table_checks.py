"""Holding a compiled activation body to the table (kernels/activations.py), shared by the Numba tests, the
CUDA simulator checks and the real-GPU tests.

Inputs: every special value (±0, ±inf, NaN, the kinks, tiny and huge numbers) among random ones, at odd
sizes. Agreement: NaN at the same places; the non-finite values of the table exactly; finite values within
8 ε·max(|f|, 1) (a few ulps where f is of order 1 or larger; an absolute few ε where f' is near a
cancellation, e.g. σ(1 − σ) for large x); relu and leaky_relu bit for bit (signed zeros included).
"""
import numpy as np

from tinymoon.kernels import COMPILED, pointwise as P

PARAMS = {"leaky_relu": {"slope": 0.1}, "elu": {"alpha": 0.7}, "softplus": {"beta": 2.0, "threshold": 7.0}}
BITWISE = ("relu", "leaky_relu")
SPECIAL = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30, -1e-30, 1e-8, -1e-8, 3.0, -3.0, 3.5, 6.0, -0.7518,
           -1.2785, 20.0, 88.0, -88.0, 700.0, -700.0]


def inputs(n, dtype, seed=0):
    """n values (n may be odd, or smaller than the special values): the specials first, then random."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([SPECIAL, rng.standard_normal(max(n, 0)) * 4, rng.standard_normal(max(n // 8, 0)) * 40])
    return x[:n].astype(dtype)


def _bits(a):
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def check_matches_table(name, x, y, d):
    """y, d (host arrays) from a compiled body on x against the table's f, f'."""
    with np.errstate(invalid="ignore", over="ignore"):
        want = P.act_reference(name, x, **PARAMS.get(name, {}))
    eps = np.finfo(x.dtype).eps
    for what, got, ref in (("f", y, want[0]), ("f'", d, want[1])):
        assert got.dtype == x.dtype and got.shape == x.shape, (name, what)
        assert np.array_equal(np.isnan(got), np.isnan(ref)), f"{name} {what}: NaN at other places"
        inf = np.isinf(ref)
        assert np.array_equal(got[inf], ref[inf]), f"{name} {what}: different value where the table is ±inf"
        fin = np.isfinite(ref)
        err = np.abs(got[fin].astype(np.float64) - ref[fin]) / np.maximum(np.abs(ref[fin]), 1.0)
        assert err.size == 0 or err.max() <= 8 * eps, \
            f"{name} {what} ({x.dtype}): {err.max() / eps:.1f} ε off the table at x = {x[fin][err.argmax()]!r}"
        if name in BITWISE:
            assert np.array_equal(_bits(got), _bits(ref)), f"{name} {what}: not bit for bit"


def act_params(name):
    return PARAMS.get(name, {})


__all__ = ["COMPILED", "PARAMS", "inputs", "check_matches_table", "act_params"]
