"""Tensor-level elementwise math and activations: each function converts its operands and applies one primitive.

This is the public math of tinymoon (`tm.exp`, `tm.matmul`, `tm.conv2d`, ...); Tensor's operators and
methods are bound to these functions at the bottom of this file.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..autodiff.apply import apply
from ..backend import is_float
from ..ops import activations as A
from ..ops import elementwise as E
from ..tensor import Tensor, as_tensor

__all__ = ["add", "sub", "mul", "div", "maximum", "minimum", "neg", "exp", "log", "sqrt", "abs", "pow", "where",
           "clip", "astype", "to_device", "tanh", "sigmoid", "relu", "gelu", "silu", "leaky_relu", "elu",
           "softplus", "eq", "ne", "lt", "le", "gt", "ge"]


def _scalar_like(value, like: Tensor) -> Tensor:
    """A Python number as a 0-d tensor of like's dtype (floats) on like's device."""
    dt = like.data.dtype
    if not is_float(dt) and isinstance(value, float):
        dt = np.dtype("float32") if dt.kind != "f" else dt
    return Tensor._wrap(like.xp.asarray(value, dtype=dt))


def _pair(a, b):
    """Tensors for a binary op. Python numbers take the tensor operand's dtype; an integer/bool tensor
    meeting a float tensor is cast to the float dtype (never float32 <-> float64: that raises)."""
    if not isinstance(a, Tensor):
        if isinstance(b, Tensor) and isinstance(a, (numbers.Number, np.generic)):
            a = _scalar_like(a, b)
        else:
            a = as_tensor(a)
    if not isinstance(b, Tensor):
        if isinstance(b, (numbers.Number, np.generic)):
            b = _scalar_like(b, a)
        else:
            b = as_tensor(b)
    ka, kb = a.data.dtype.kind, b.data.dtype.kind
    if ka == "f" and kb != "f":
        b = Tensor._wrap(b.data.astype(a.data.dtype))
    elif kb == "f" and ka != "f":
        a = Tensor._wrap(a.data.astype(b.data.dtype))
    return a, b


def _unary(prim, doc):
    def f(x, **params):
        return apply(prim, as_tensor(x), **params)
    f.__name__, f.__doc__ = prim.name, doc
    return f


def _binary(prim, doc):
    def f(a, b):
        a, b = _pair(a, b)
        return apply(prim, a, b)
    f.__name__, f.__doc__ = prim.name, doc
    return f


# ---- elementwise -----------------------------------------------------------------------------------
add = _binary(E.Add, "a + b (broadcasting)")
sub = _binary(E.Sub, "a - b (broadcasting)")
mul = _binary(E.Mul, "a * b (broadcasting)")
div = _binary(E.Div, "a / b (broadcasting)")
maximum = _binary(E.Maximum, "elementwise max; at ties the gradient goes to a")
minimum = _binary(E.Minimum, "elementwise min; at ties the gradient goes to a")
neg = _unary(E.Neg, "-x")
exp = _unary(E.Exp, "e^x")
log = _unary(E.Log, "natural logarithm (x > 0)")
sqrt = _unary(E.Sqrt, "square root (x > 0 for gradients)")
abs = _unary(E.Abs, "|x|; subgradient 0 at 0")   # noqa: A001 - the public name mirrors numpy


def pow(a, b):  # noqa: A001
    """a ** b (b a number or a tensor)."""
    a, b = _pair(a, b)
    return apply(E.Pow, a, b)


def where(cond, a, b):
    """a where cond else b; cond is not differentiable."""
    a, b = _pair(a, b)
    return apply(E.Where, as_tensor(cond), a, b)


def clip(x, lo=None, hi=None):
    """clamp to [lo, hi]; gradient 1 inside and at the bounds, 0 outside."""
    return apply(E.Clip, as_tensor(x), lo=lo, hi=hi)


def astype(x, dtype):
    x = as_tensor(x)
    if x.dtype == dtype:
        return x
    return apply(E.Cast, x, dtype=np.dtype(dtype))


def to_device(x, device):
    x = as_tensor(x)
    if x.device == device:
        return x
    return apply(E.ToDevice, x, device=device)


# ---- activations -----------------------------------------------------------------------------------
tanh = _unary(A.Tanh, "hyperbolic tangent")
sigmoid = _unary(A.Sigmoid, "logistic sigmoid 1/(1+e^-x)")
relu = _unary(A.ReLU, "max(x, 0); subgradient 0 at 0; keeps a 1-bit mask")
gelu = _unary(A.GELU, "exact GELU x Phi(x)")
silu = _unary(A.SiLU, "x sigmoid(x)")


def leaky_relu(x, negative_slope=0.01):
    """x if x > 0 else negative_slope * x; keeps a 1-bit mask."""
    return apply(A.LeakyReLU, as_tensor(x), slope=float(negative_slope))


def elu(x, alpha=1.0):
    """x if x > 0 else alpha (e^x - 1)."""
    return apply(A.ELU, as_tensor(x), alpha=float(alpha))


def softplus(x, beta=1.0, threshold=20.0):
    """log(1 + e^(beta x)) / beta; linear where beta x > threshold."""
    return apply(A.Softplus, as_tensor(x), beta=float(beta), threshold=float(threshold))


# ---- comparisons (not differentiable: plain boolean tensors) -----------------------------------------
def _compare(op):
    def f(a, b):
        a, b = _pair(a, b)
        return Tensor._wrap(op(a.data, b.data))
    return f


eq, ne, lt, le, gt, ge = (_compare(o) for o in (np.equal, np.not_equal, np.less, np.less_equal,
                                                 np.greater, np.greater_equal))
