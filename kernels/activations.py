"""The activation table: every pointwise activation's f and f', written once.

Each entry is a `Formula`: the value f(x), the derivative f'(x) and the parameters (PyTorch's names and
defaults), as plain array expressions in an array module `xp` (NumPy or CuPy; any module with these
functions works, which is what lets a later f'' come from running f' on tensors). Everything else is held
to this table: the compiled kernel bodies (pointwise.py, cuda/pointwise.py, cupy_impl.py: tested against it
at odd sizes, NaN and ±inf, float32 and float64), the engine's primitives (tinymoon/ops/activations.py: they
call it, or the compiled kernels), and the few-bit tables (tinymoon/fewbit/solver.py fits f' from here).

Conventions of every formula: x and the result share a dtype (constants are Python numbers, which NumPy 2
keeps in x's dtype; `value`/`derivative` cast a result made only of constants); the derivative receives
y = f(x) too, for the rules cheaper from it (tanh' = 1 − y²); at a kink f' is the value PyTorch's backward
takes there, stated on the line. One formula cannot be written with plain xp operations: GELU needs erf,
which NumPy lacks (`erf` below: Numba's math.erf as a ufunc, CuPy's cupyx.scipy.special.erf, else xp.erf).

Piecewise-linear activations (relu, leaky_relu, relu6, hardtanh, hardsigmoid) take two derivative values:
`code(x)` is the exact 1-bit mask (PyTorch's backward conditions) and f'(x) = `code_levels()`[code(x)].
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

__all__ = ["Formula", "ACTIVATIONS", "names", "continuous_names", "piecewise_names", "xp_of", "erf",
           "sigmoid", "softplus1"]

SQRT_HALF = math.sqrt(0.5)                        # 1/√2, correctly rounded
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)     # 1/√(2π)
SELU_ALPHA = 1.6732632423543772848170429916717    # PyTorch's SELU constants
SELU_SCALE = 1.0507009873554804934193349852946


def xp_of(x):
    """The array module of x: CuPy for CuPy arrays (never imported here), NumPy otherwise."""
    cupy = sys.modules.get("cupy")
    return cupy if cupy is not None and isinstance(x, cupy.ndarray) else np


# ---- the special functions the formulas share -----------------------------------------------------------
_erf_ufunc = None


def erf(xp, x):
    """erf in x's dtype. NumPy has none: math.erf compiled by Numba as a ufunc (float32 stays float32)."""
    if xp is np:
        global _erf_ufunc
        if _erf_ufunc is None:
            from numba import vectorize

            @vectorize(["float32(float32)", "float64(float64)"], cache=True)
            def _erf(v):
                return math.erf(v)
            _erf_ufunc = _erf
        return _erf_ufunc(x)
    if xp is sys.modules.get("cupy"):
        from cupyx.scipy.special import erf as cupy_erf
        return cupy_erf(x)
    return xp.erf(x)


def sigmoid(xp, z):
    """σ(z) = 1/(1 + e^−z), as e^z/(1 + e^z) for z < 0: exp never overflows, both tails keep their digits."""
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1 / (1 + e), e / (1 + e))


def softplus1(xp, z):
    """log(1 + e^z) = max(z, 0) + log1p(e^−|z|), overflow-free."""
    return xp.maximum(z, 0) + xp.log1p(xp.exp(-xp.abs(z)))


# ---- one Formula per activation ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Formula:
    """One activation: f(xp, x, **p) and f'(xp, x, y, **p) (y = f(x)), parameters with their defaults.

    jump_points(p): where f' is discontinuous. Piecewise-linear ones also have code_fn(xp, x, **p) -> bool (the
    exact mask), levels_fn(p) -> (f' where the code is 0, where it is 1), breakpoints_fn(p), slopes_fn(p).
    f_at / df_at / forward evaluate on any array for resolved parameters p; value / derivative / code / ...
    are the host conveniences that check the parameters first.
    `error` is the exception class parameter checks raise (tinymoon.fewbit hands these out raising its own).
    """
    name: str
    f: Callable
    df: Callable
    defaults: dict = field(default_factory=dict)
    check: Callable = lambda p: None
    jump_points: Callable = lambda p: ()
    code_fn: Callable | None = None
    levels_fn: Callable | None = None
    breakpoints_fn: Callable | None = None
    slopes_fn: Callable | None = None
    error: type = ValueError
    df_reads_y: bool = False        # f' is written with y = f(x) (tanh, sigmoid); else df ignores y

    @property
    def piecewise_linear(self) -> bool:
        return self.code_fn is not None

    def raising(self, error):
        """This formula, with parameter errors raised as `error`."""
        return replace(self, error=error)

    # -- parameters --
    def resolve(self, **params) -> dict:
        """Defaults overridden by `params`, as floats; unknown names and bad values raise `self.error`."""
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            accepted = ", ".join(f"{k}={v!r}" for k, v in self.defaults.items()) or "none"
            raise self.error(f"{self.name}: unknown parameter(s) {unknown}; accepted parameters: {accepted}")
        out = dict(self.defaults)
        for k, v in params.items():
            try:
                v = float(v)
            except (TypeError, ValueError):
                raise self.error(f"{self.name}: parameter {k} must be a real number, got {v!r}") from None
            if not math.isfinite(v):
                raise self.error(f"{self.name}: parameter {k} must be finite, got {v!r}")
            out[k] = v
        why = self.check(out)
        if why:
            raise self.error(f"{self.name}: {why}")
        return out

    def is_default(self, **params) -> bool:
        return self.resolve(**params) == self.defaults

    # -- values on arrays of any float dtype (host or device); no parameter check: p is resolved --
    def f_at(self, x, p):
        """f(x) in x's dtype, for resolved parameters p."""
        return _cast(xp_of(x), self.f(xp_of(x), x, **p), x.dtype)

    def df_at(self, x, p):
        """f'(x) alone, in x's dtype (f(x) is computed only for a derivative written with it)."""
        y = self.f_at(x, p) if self.df_reads_y else None
        return _cast(xp_of(x), self.df(xp_of(x), x, y, **p), x.dtype)

    def forward(self, x, p):
        """(f(x), f'(x)) in x's dtype, for resolved parameters p."""
        y = self.f_at(x, p)
        return y, _cast(xp_of(x), self.df(xp_of(x), x, y, **p), x.dtype)

    # -- conveniences for the host (lists, scalars: float64), checking the parameters --
    def value(self, x, **params):
        return self.f_at(_float_array(x), self.resolve(**params))

    def derivative(self, x, **params):
        return self.df_at(_float_array(x), self.resolve(**params))

    def jumps(self, **params) -> tuple:
        return tuple(float(s) for s in self.jump_points(self.resolve(**params)))

    # -- piecewise-linear only --
    def _need_piecewise(self, what):
        if not self.piecewise_linear:
            raise self.error(f"{self.name} is not piecewise-linear, so it has no {what}; its derivative is "
                             f"approximated by a fitted table: tinymoon.fewbit.get_table({self.name!r}, bits)")

    def code(self, x, **params) -> np.ndarray:
        """The exact 1-bit mask (uint8 on the host): f'(x) = code_levels()[code(x)]."""
        self._need_piecewise("exact mask")
        return np.asarray(self.code_fn(np, _float_array(x), **self.resolve(**params))).astype(np.uint8)

    def code_levels(self, **params) -> np.ndarray:
        self._need_piecewise("exact mask")
        return np.array(self.levels_fn(self.resolve(**params)), dtype=np.float64)

    @property
    def code_bits(self) -> int:
        self._need_piecewise("exact mask")
        return 1        # every piecewise-linear activation here has exactly two derivative values

    def breakpoints(self, **params) -> np.ndarray:
        self._need_piecewise("breakpoints")
        return np.array(self.breakpoints_fn(self.resolve(**params)), dtype=np.float64)

    def slopes(self, **params) -> np.ndarray:
        self._need_piecewise("slopes")
        return np.array(self.slopes_fn(self.resolve(**params)), dtype=np.float64)

    def __repr__(self):
        kind = "piecewise-linear" if self.piecewise_linear else "continuous"
        return f"Formula({self.name!r}, {kind}, defaults={self.defaults})"


def _float_array(x):
    x = np.asarray(x)
    return x if x.dtype.kind == "f" else x.astype(np.float64)


def _cast(xp, a, dtype):
    """a in `dtype`: a level written as a Python number (where(x > 0, 1.0, slope)) comes back float64."""
    a = xp.asarray(a) if not hasattr(a, "astype") else a
    return a if a.dtype == dtype else a.astype(dtype)


def _piecewise(name, f, code, levels, breakpoints, slopes, defaults=None, check=lambda p: None):
    """f' = levels[code(x)]: written once, through the exact mask."""
    def df(xp, x, y, **p):
        lo, hi = levels(p)
        return xp.where(code(xp, x, **p), hi, lo)
    return Formula(name, f, df, dict(defaults or {}), check, breakpoints, code, levels, breakpoints, slopes)


def _check_celu(p):
    if p["alpha"] == 0:
        return "alpha must be non-zero (the negative branch is α(e^{x/α} - 1)); got alpha=0"


def _check_softplus(p):
    if not p["beta"] > 0:
        return f"beta must be > 0; got beta={p['beta']!r}"
    if not p["threshold"] > 0:
        return f"threshold must be > 0; got threshold={p['threshold']!r}"


def _check_hardtanh(p):
    if not p["min_val"] < p["max_val"]:
        return f"need min_val < max_val; got min_val={p['min_val']!r}, max_val={p['max_val']!r}"


def _gelu_cdf(xp, x):
    return (1 + erf(xp, x * SQRT_HALF)) / 2                      # Φ(x) = (1 + erf(x/√2))/2


def _silu_d(xp, x, y):
    s = sigmoid(xp, x)
    return s * (1 + x * (1 - s))                                  # σ (1 + x (1 − σ))


def _mish_d(xp, x, y):
    t = xp.tanh(softplus1(xp, x))
    return t + x * (1 - t * t) * sigmoid(xp, x)                   # tanh(sp) + x sech²(sp) σ(x)


def _elu_negative(xp, x, alpha):
    return alpha * xp.expm1(xp.minimum(x, 0))                     # α(eˣ − 1) on x <= 0


ACTIVATIONS: dict[str, Formula] = {a.name: a for a in [
    # ---- continuous: f' is approximated by a b-bit table in few-bit training -------------------------------
    Formula("gelu",                                               # f = x Φ(x) (exact, erf form)
            lambda xp, x: x * _gelu_cdf(xp, x),
            lambda xp, x, y: _gelu_cdf(xp, x) + x * xp.exp(-x * x / 2) * INV_SQRT_2PI),   # Φ(x) + x φ(x)
    Formula("silu",                                               # f = x σ(x)
            lambda xp, x: x * sigmoid(xp, x),
            _silu_d),
    Formula("tanh",
            lambda xp, x: xp.tanh(x),
            lambda xp, x, y: 1 - y * y, df_reads_y=True),         # 1 − tanh²
    Formula("sigmoid",
            lambda xp, x: sigmoid(xp, x),
            lambda xp, x, y: y * (1 - y), df_reads_y=True),       # σ (1 − σ)
    Formula("elu",                                                # f = x > 0 ? x : α(eˣ − 1)
            lambda xp, x, alpha: xp.where(x > 0, x, _elu_negative(xp, x, alpha)),
            lambda xp, x, y, alpha: xp.where(x > 0, 1.0, alpha * xp.exp(xp.minimum(x, 0))),  # f'(0) = α
            {"alpha": 1.0}, jump_points=lambda p: () if p["alpha"] == 1.0 else (0.0,)),
    Formula("selu",                                               # f = λ elu(x, α), PyTorch's λ, α
            lambda xp, x: SELU_SCALE * xp.where(x > 0, x, _elu_negative(xp, x, SELU_ALPHA)),
            lambda xp, x, y: SELU_SCALE * xp.where(x > 0, 1.0, SELU_ALPHA * xp.exp(xp.minimum(x, 0))),  # f'(0) = λα
            jump_points=lambda p: (0.0,)),
    Formula("celu",                                               # f = x > 0 ? x : α(e^{x/α} − 1)
            lambda xp, x, alpha: xp.where(x > 0, x, alpha * xp.expm1(xp.minimum(x, 0) / alpha)),
            lambda xp, x, y, alpha: xp.where(x > 0, 1.0, xp.exp(xp.minimum(x, 0) / alpha)),  # continuous at 0
            {"alpha": 1.0}, _check_celu),
    Formula("softplus",                                           # f = log(1 + e^{βx})/β, x where βx > threshold
            lambda xp, x, beta, threshold: xp.where(beta * x > threshold, x, softplus1(xp, beta * x) / beta),
            lambda xp, x, y, beta, threshold: xp.where(beta * x > threshold, 1.0, sigmoid(xp, beta * x)),  # σ(βx)
            {"beta": 1.0, "threshold": 20.0}, _check_softplus,
            jump_points=lambda p: (p["threshold"] / p["beta"],)),    # f' jumps by σ(−threshold) ≈ 2e-9 there
    Formula("mish",                                               # f = x tanh(softplus(x))
            lambda xp, x: x * xp.tanh(softplus1(xp, x)),
            _mish_d),
    Formula("softsign",                                           # f = x / (1 + |x|)
            lambda xp, x: x / (1 + xp.abs(x)),
            lambda xp, x, y: 1 / (1 + xp.abs(x)) ** 2),           # 1/(1 + |x|)²
    Formula("logsigmoid",                                         # f = log σ(x) = −softplus(−x)
            lambda xp, x: -softplus1(xp, -x),
            lambda xp, x, y: sigmoid(xp, -x)),                    # σ(−x)
    Formula("hardswish",                                          # f = x relu6(x + 3)/6
            lambda xp, x: x * xp.clip(x + 3, 0, 6) / 6,
            lambda xp, x, y: xp.where(x <= -3, 0.0, xp.where(x < 3, x / 3 + 0.5, 1.0)),  # outer values at ±3
            jump_points=lambda p: (-3.0, 3.0)),
    Formula("tanhshrink",                                         # f = x − tanh(x)
            lambda xp, x: x - xp.tanh(x),
            lambda xp, x, y: xp.tanh(x) ** 2),                    # 1 − (1 − tanh²) = tanh²
    # ---- piecewise-linear: an exact 1-bit mask gives f' --------------------------------------------------------
    _piecewise("relu", lambda xp, x: xp.maximum(x, 0),
               lambda xp, x: x > 0, lambda p: (0.0, 1.0),         # f'(0) = 0
               lambda p: (0.0,), lambda p: (0.0, 1.0)),
    _piecewise("leaky_relu", lambda xp, x, negative_slope: xp.where(x > 0, x, negative_slope * x),
               lambda xp, x, negative_slope: x > 0, lambda p: (p["negative_slope"], 1.0),   # f'(0) = slope
               lambda p: (0.0,), lambda p: (p["negative_slope"], 1.0), {"negative_slope": 0.01}),
    _piecewise("relu6", lambda xp, x: xp.clip(x, 0, 6),
               lambda xp, x: (x > 0) & (x < 6), lambda p: (0.0, 1.0),        # f'(0) = f'(6) = 0
               lambda p: (0.0, 6.0), lambda p: (0.0, 1.0, 0.0)),
    _piecewise("hardtanh", lambda xp, x, min_val, max_val: xp.clip(x, min_val, max_val),
               lambda xp, x, min_val, max_val: (x > min_val) & (x < max_val), lambda p: (0.0, 1.0),  # 0 at both
               lambda p: (p["min_val"], p["max_val"]), lambda p: (0.0, 1.0, 0.0),
               {"min_val": -1.0, "max_val": 1.0}, _check_hardtanh),
    _piecewise("hardsigmoid", lambda xp, x: xp.clip(x / 6 + 0.5, 0, 1),
               lambda xp, x: (x > -3) & (x < 3), lambda p: (0.0, 1.0 / 6.0),   # 1/6 strictly inside (−3, 3)
               lambda p: (-3.0, 3.0), lambda p: (0.0, 1.0 / 6.0, 0.0)),
]}


def names() -> list[str]:
    return sorted(ACTIVATIONS)


def continuous_names() -> list[str]:
    return sorted(n for n, a in ACTIVATIONS.items() if not a.piecewise_linear)


def piecewise_names() -> list[str]:
    return sorted(n for n, a in ACTIVATIONS.items() if a.piecewise_linear)
