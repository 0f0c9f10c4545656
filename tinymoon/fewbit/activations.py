"""Pointwise activations: the value f(x) and the exact derivative f'(x), as plain NumPy functions.

These are the *reference* functions the few-bit tables are fitted to (and that tests compare against
PyTorch); they are not engine primitives. Every function takes an array (or scalar) `x` and keyword
parameters with PyTorch's names and defaults, computes in float64, and returns an array of `x`'s dtype
when that is a floating dtype (float64 otherwise) — no silent promotion.

Two kinds:

* smooth-ish ("continuous") activations — gelu, silu, tanh, ... — whose derivative is approximated in
  backward by a fitted b-bit piecewise-constant table (see `solver.py`);
* piecewise-linear activations — relu, leaky_relu, relu6, hardtanh, hardsigmoid — whose derivative *is*
  piecewise constant: backward needs only an exact 1-bit mask (`Activation.code`) and the level of each code
  (`Activation.code_levels`). No table, no approximation.

At a point where f' jumps (relu at 0, selu at 0, hardswish at ±3, ...) the derivative returned is the one
PyTorch's backward uses there, stated next to each function; the tests check these points against
torch.autograd.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import FewBitError

__all__ = ["Activation", "ACTIVATIONS", "activation", "names", "continuous_names", "piecewise_names"]


# ---- numerical helpers (float64, overflow-free) --------------------------------------------------

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_erfc = np.frompyfunc(math.erfc, 1, 1)     # math.erfc is accurate to ~1 ulp; vectorised element by element


def _f64(x):
    return np.asarray(x, dtype=np.float64)


def _out(y, x):
    """Return y in x's floating dtype (float64 for integer / bool / scalar inputs)."""
    x = np.asarray(x)
    dt = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    return np.asarray(y, dtype=dt)


def _sigmoid(z):
    # σ(z) = exp(-log(1 + e^{-z})): never overflows, accurate in both tails.
    return np.exp(-np.logaddexp(0.0, -z))


def _softplus1(z):
    # log(1 + e^z), overflow-free.
    return np.logaddexp(0.0, z)


def _normal_cdf(z):
    # Φ(z) = erfc(-z/√2)/2 — erfc (not 1+erf) keeps full relative accuracy in the left tail.
    return 0.5 * np.asarray(_erfc(-z / _SQRT2), dtype=np.float64)


# ---- the activations ------------------------------------------------------------------------------
# Each pair (value, derivative) has the signature fn(x, **params). Comments give f and f'.

def _gelu(x):
    x = _f64(x)
    return x * _normal_cdf(x)                                   # f = x Φ(x)  (exact GELU, not the tanh form)


def _gelu_d(x):
    x = _f64(x)
    return _normal_cdf(x) + x * _INV_SQRT_2PI * np.exp(-0.5 * x * x)   # f' = Φ(x) + x φ(x)


def _silu(x):
    x = _f64(x)
    return x * _sigmoid(x)                                      # f = x σ(x)


def _silu_d(x):
    x = _f64(x)
    s = _sigmoid(x)
    return s + x * s * _sigmoid(-x)                             # f' = σ + x σ (1-σ), with 1-σ(x) = σ(-x)


def _tanh(x):
    return np.tanh(_f64(x))


def _tanh_d(x):
    t = np.tanh(_f64(x))
    return 1.0 - t * t                                          # f' = 1 - tanh²


def _sigmoid_v(x):
    return _sigmoid(_f64(x))


def _sigmoid_d(x):
    x = _f64(x)
    return _sigmoid(x) * _sigmoid(-x)                           # f' = σ(x) σ(-x)


def _elu(x, alpha):
    x = _f64(x)
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))       # x > 0 ? x : α(eˣ-1)


def _elu_d(x, alpha):
    x = _f64(x)
    # torch: x <= 0 takes the exponential branch, so f'(0) = α (a jump at 0 unless α = 1).
    return np.where(x > 0, 1.0, alpha * np.exp(np.minimum(x, 0.0)))


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _selu(x):
    return _SELU_SCALE * _elu(x, _SELU_ALPHA)                   # λ · elu(x, α) with torch's constants


def _selu_d(x):
    return _SELU_SCALE * _elu_d(x, _SELU_ALPHA)                 # f'(0) = λα ≈ 1.758 (left branch), jump to λ


def _celu(x, alpha):
    x = _f64(x)
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0) / alpha))   # x > 0 ? x : α(e^{x/α}-1)


def _celu_d(x, alpha):
    x = _f64(x)
    return np.where(x > 0, 1.0, np.exp(np.minimum(x, 0.0) / alpha))         # continuous: f'(0) = 1


def _softplus(x, beta, threshold):
    x = _f64(x)
    z = beta * x
    # torch: linear above the threshold (β x > threshold), log(1 + e^{βx})/β below.
    return np.where(z > threshold, x, _softplus1(np.minimum(z, threshold)) / beta)


def _softplus_d(x, beta, threshold):
    x = _f64(x)
    z = beta * x
    # f' = σ(βx) below the threshold and exactly 1 above it (a jump of σ(-threshold) ≈ 2e-9, as in torch).
    return np.where(z > threshold, 1.0, _sigmoid(z))


def _mish(x):
    x = _f64(x)
    return x * np.tanh(_softplus1(x))                          # f = x tanh(softplus(x))


def _mish_d(x):
    x = _f64(x)
    t = np.tanh(_softplus1(x))
    return t + x * (1.0 - t * t) * _sigmoid(x)                  # f' = tanh(sp) + x sech²(sp) σ(x)


def _softsign(x):
    x = _f64(x)
    return x / (1.0 + np.abs(x))


def _softsign_d(x):
    x = _f64(x)
    return 1.0 / (1.0 + np.abs(x)) ** 2                         # f' = 1/(1+|x|)²


def _logsigmoid(x):
    return -_softplus1(-_f64(x))                                # f = log σ(x) = -softplus(-x)


def _logsigmoid_d(x):
    return _sigmoid(-_f64(x))                                   # f' = σ(-x)


def _hardswish(x):
    x = _f64(x)
    return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0                 # x · relu6(x+3)/6


def _hardswish_d(x):
    x = _f64(x)
    # torch: x <= -3 → 0;  -3 < x < 3 → x/3 + 1/2;  x >= 3 → 1  (the outer value at both jumps).
    return np.where(x <= -3.0, 0.0, np.where(x < 3.0, x / 3.0 + 0.5, 1.0))


def _tanhshrink(x):
    x = _f64(x)
    return x - np.tanh(x)


def _tanhshrink_d(x):
    t = np.tanh(_f64(x))
    return t * t                                                # f' = 1 - (1 - tanh²) = tanh²


# Piecewise-linear. "code" is the exact 1-bit mask backward stores; f'(x) = code_levels[code(x)].
# The comparisons are PyTorch's backward conditions, so the subgradient at a kink is torch's.

def _relu(x):
    x = _f64(x)
    return np.maximum(x, 0.0)


def _relu_code(x):
    return (_f64(x) > 0).astype(np.uint8)                       # torch: grad passes where x > 0; f'(0) = 0


def _leaky_relu(x, negative_slope):
    x = _f64(x)
    return np.where(x > 0, x, negative_slope * x)


def _leaky_relu_code(x, negative_slope):
    return (_f64(x) > 0).astype(np.uint8)                       # torch: x > 0 ? 1 : slope; f'(0) = slope


def _hardtanh(x, min_val, max_val):
    return np.clip(_f64(x), min_val, max_val)


def _hardtanh_code(x, min_val, max_val):
    x = _f64(x)
    return ((x > min_val) & (x < max_val)).astype(np.uint8)     # torch: 0 where x <= min or x >= max


def _relu6(x):
    return _hardtanh(x, 0.0, 6.0)


def _relu6_code(x):
    return _hardtanh_code(x, 0.0, 6.0)                          # f'(0) = f'(6) = 0, as torch


def _hardsigmoid(x):
    x = _f64(x)
    return np.clip(x / 6.0 + 0.5, 0.0, 1.0)


def _hardsigmoid_code(x):
    x = _f64(x)
    return ((x > -3.0) & (x < 3.0)).astype(np.uint8)            # torch: 1/6 strictly inside (-3, 3)


# ---- the registry ---------------------------------------------------------------------------------

def _no_check(p):
    pass


def _check_celu(p):
    if p["alpha"] == 0:
        raise FewBitError("celu: alpha must be non-zero (the negative branch is α(e^{x/α} - 1)); got alpha=0")


def _check_softplus(p):
    if not p["beta"] > 0:
        raise FewBitError(f"softplus: beta must be > 0; got beta={p['beta']!r}")
    if not p["threshold"] > 0:
        raise FewBitError(f"softplus: threshold must be > 0; got threshold={p['threshold']!r}")


def _check_hardtanh(p):
    if not p["min_val"] < p["max_val"]:
        raise FewBitError(f"hardtanh: need min_val < max_val; got min_val={p['min_val']!r}, "
                          f"max_val={p['max_val']!r}")


@dataclass(frozen=True)
class Activation:
    """One activation: value, exact derivative, parameters with their defaults.

    value(x, **params), derivative(x, **params): NumPy functions (see the module docstring).
    jumps(**params): the points where f' is discontinuous (a border placed there is exact, and
        Lloyd–Max conditions do not apply there).
    For piecewise-linear activations (`piecewise_linear=True`) also:
        breakpoints(**params), slopes(**params): the kinks s_1 < ... < s_m and the m+1 slopes between them;
        code(x, **params) -> uint8 array and code_levels(**params): the exact mask backward stores and the
        derivative of each code, f'(x) = code_levels[code(x)]; `code_bits` bits per element.
    """

    name: str
    _value: Callable
    _derivative: Callable
    defaults: dict = field(default_factory=dict)
    _check: Callable = _no_check
    _jumps: Callable = lambda p: ()
    piecewise_linear: bool = False
    _breakpoints: Callable | None = None
    _slopes: Callable | None = None
    _code: Callable | None = None
    _code_levels: Callable | None = None

    # -- parameters --
    def resolve(self, **params) -> dict:
        """Defaults overridden by `params`, as floats; unknown names and bad values raise FewBitError."""
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            accepted = ", ".join(f"{k}={v!r}" for k, v in self.defaults.items()) or "none"
            raise FewBitError(f"{self.name}: unknown parameter(s) {unknown}; accepted parameters: {accepted}")
        out = dict(self.defaults)
        for k, v in params.items():
            try:
                v = float(v)
            except (TypeError, ValueError):
                raise FewBitError(f"{self.name}: parameter {k} must be a real number, got {v!r}") from None
            if not math.isfinite(v):
                raise FewBitError(f"{self.name}: parameter {k} must be finite, got {v!r}")
            out[k] = v
        self._check(out)
        return out

    def is_default(self, **params) -> bool:
        return self.resolve(**params) == self.defaults

    # -- functions --
    def value(self, x, **params):
        return _out(self._value(x, **self.resolve(**params)), x)

    def derivative(self, x, **params):
        p = self.resolve(**params)
        if self.piecewise_linear:
            y = np.asarray(self._code_levels(**p))[self._code(x, **p)]
        else:
            y = self._derivative(x, **p)
        return _out(y, x)

    def jumps(self, **params) -> tuple:
        return tuple(float(s) for s in self._jumps(self.resolve(**params)))

    # -- piecewise-linear only --
    def _need_piecewise(self, what):
        if not self.piecewise_linear:
            raise FewBitError(f"{self.name} is not piecewise-linear, so it has no {what}; its derivative is "
                              f"approximated by a fitted table: tinymoon.fewbit.get_table({self.name!r}, bits)")

    def breakpoints(self, **params) -> np.ndarray:
        self._need_piecewise("breakpoints")
        return np.array(self._breakpoints(**self.resolve(**params)), dtype=np.float64)

    def slopes(self, **params) -> np.ndarray:
        self._need_piecewise("slopes")
        return np.array(self._slopes(**self.resolve(**params)), dtype=np.float64)

    def code(self, x, **params) -> np.ndarray:
        self._need_piecewise("exact mask")
        return self._code(x, **self.resolve(**params))

    def code_levels(self, **params) -> np.ndarray:
        self._need_piecewise("exact mask")
        return np.array(self._code_levels(**self.resolve(**params)), dtype=np.float64)

    @property
    def code_bits(self) -> int:
        self._need_piecewise("exact mask")
        return 1        # every piecewise-linear activation here has exactly two derivative values

    def __repr__(self):
        kind = "piecewise-linear" if self.piecewise_linear else "continuous"
        return f"Activation({self.name!r}, {kind}, defaults={self.defaults})"


def _A(name, v, d, defaults=None, check=_no_check, jumps=lambda p: ()):
    return Activation(name, v, d, dict(defaults or {}), check, jumps)


def _P(name, v, code, levels, breakpoints, slopes, defaults=None, check=_no_check):
    # derivative() goes through code/code_levels; `_derivative` is unused for these.
    return Activation(name, v, None, dict(defaults or {}), check, lambda p: breakpoints(**p), True,
                      breakpoints, slopes, code, levels)


ACTIVATIONS: dict[str, Activation] = {a.name: a for a in [
    # continuous
    _A("gelu", _gelu, _gelu_d),
    _A("silu", _silu, _silu_d),
    _A("tanh", _tanh, _tanh_d),
    _A("sigmoid", _sigmoid_v, _sigmoid_d),
    _A("elu", _elu, _elu_d, {"alpha": 1.0}, jumps=lambda p: () if p["alpha"] == 1.0 else (0.0,)),
    _A("selu", _selu, _selu_d, jumps=lambda p: (0.0,)),
    _A("celu", _celu, _celu_d, {"alpha": 1.0}, _check_celu),
    _A("softplus", _softplus, _softplus_d, {"beta": 1.0, "threshold": 20.0}, _check_softplus,
       jumps=lambda p: (p["threshold"] / p["beta"],)),
    _A("mish", _mish, _mish_d),
    _A("softsign", _softsign, _softsign_d),
    _A("logsigmoid", _logsigmoid, _logsigmoid_d),
    _A("hardswish", _hardswish, _hardswish_d, jumps=lambda p: (-3.0, 3.0)),
    _A("tanhshrink", _tanhshrink, _tanhshrink_d),
    # piecewise-linear: exact 1-bit masks
    _P("relu", _relu, _relu_code, lambda: (0.0, 1.0), lambda: (0.0,), lambda: (0.0, 1.0)),
    _P("leaky_relu", _leaky_relu, _leaky_relu_code,
       lambda negative_slope: (negative_slope, 1.0), lambda negative_slope: (0.0,),
       lambda negative_slope: (negative_slope, 1.0), {"negative_slope": 0.01}),
    _P("relu6", _relu6, _relu6_code, lambda: (0.0, 1.0), lambda: (0.0, 6.0), lambda: (0.0, 1.0, 0.0)),
    _P("hardtanh", _hardtanh, _hardtanh_code, lambda min_val, max_val: (0.0, 1.0),
       lambda min_val, max_val: (min_val, max_val), lambda min_val, max_val: (0.0, 1.0, 0.0),
       {"min_val": -1.0, "max_val": 1.0}, _check_hardtanh),
    _P("hardsigmoid", _hardsigmoid, _hardsigmoid_code, lambda: (0.0, 1.0 / 6.0),
       lambda: (-3.0, 3.0), lambda: (0.0, 1.0 / 6.0, 0.0)),
]}


def names() -> list[str]:
    return sorted(ACTIVATIONS)


def continuous_names() -> list[str]:
    return sorted(n for n, a in ACTIVATIONS.items() if not a.piecewise_linear)


def piecewise_names() -> list[str]:
    return sorted(n for n, a in ACTIVATIONS.items() if a.piecewise_linear)


def activation(name: str) -> Activation:
    """The registered activation called `name`; FewBitError listing the known names otherwise."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise FewBitError(f"unknown activation {name!r}; known: {', '.join(names())}. "
                          f"For another function pass its derivative as a callable to "
                          f"tinymoon.fewbit.solve(fprime, bits, domain=...)") from None
