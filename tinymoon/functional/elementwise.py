"""Tensor-level elementwise math and activations: each function converts its operands and applies one primitive.

With its sibling modules this is the public math of tinymoon (`tm.exp`, `tm.where`, `tm.gelu`, ...);
tinymoon/_methods.py binds Tensor's operators and methods to these functions.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..autodiff.apply import apply
from ..backend import is_float
from ..ops import activations as A
from ..ops import elementwise as E
from ..errors import ArgumentError, DTypeError, ShapeError, TinymoonError
from ..tensor import Tensor, as_tensor, floating, is_foreign_tensor

__all__ = ["add", "sub", "mul", "div", "maximum", "minimum", "neg", "exp", "log", "sqrt", "abs", "pow", "where",
           "clip", "astype", "to_device", "tanh", "sigmoid", "relu", "gelu", "silu", "leaky_relu", "elu",
           "softplus", "eq", "ne", "lt", "le", "gt", "ge"]


def _scalar_like(value, like: Tensor, op="binary op") -> Tensor:
    """A Python number as a 0-d tensor of like's dtype (floats) on like's device."""
    dt = like.data.dtype
    if not is_float(dt) and isinstance(value, float):
        dt = np.dtype("float32") if dt.kind != "f" else dt
    if isinstance(value, (complex, np.complexfloating)):
        raise DTypeError(f"{op}: complex numbers are not supported (tinymoon computes in float32 or float64)")
    try:
        return Tensor._wrap(like.xp.asarray(value, dtype=dt))
    except OverflowError:
        raise DTypeError(f"{op}: {value!r} does not fit the {dt} operand; cast the tensor first "
                         "(e.g. .astype('int64'))") from None


def _refuse_foreign(a, b, op):
    for v in (a, b):
        if is_foreign_tensor(v):
            kind = type(v)
            raise DTypeError(f"{op}: cannot mix a tinymoon Tensor with a {kind.__module__}.{kind.__qualname__}; "
                            "convert it first with tm.from_dlpack(t) (or tm.as_tensor(t)), which shares its memory")


def _operands(a, b, op="binary op"):
    """Tensors for a binary op. Python numbers take the tensor operand's dtype; an integer/bool tensor
    meeting a float tensor is cast to the float dtype (never float32 <-> float64: that raises). A tensor of
    another library (PyTorch...) is refused: mixing them in an expression is almost always a mistake."""
    if type(a) is not Tensor or type(b) is not Tensor:
        _refuse_foreign(a, b, op)
    if not isinstance(a, Tensor):
        if isinstance(b, Tensor) and isinstance(a, (numbers.Number, np.generic)):
            a = _scalar_like(a, b, op)
        else:
            a = as_tensor(a, what=op)
    if not isinstance(b, Tensor):
        if isinstance(b, (numbers.Number, np.generic)):
            b = _scalar_like(b, a, op)
        else:
            b = as_tensor(b, what=op)
    ka, kb = a._data.dtype.kind, b._data.dtype.kind
    if ka == "f" and kb != "f":
        b = Tensor._wrap(b.data.astype(a.data.dtype))
    elif kb == "f" and ka != "f":
        a = Tensor._wrap(a.data.astype(b.data.dtype))
    return a, b


def broadcast_error(op, *tensors):
    """A ShapeError naming op and the shapes, when NumPy's broadcasting rejects them (else None)."""
    shapes = [t.shape for t in tensors]
    try:
        np.broadcast_shapes(*shapes)
        return None
    except ValueError:
        return ShapeError(f"{op}: shapes {' and '.join(map(str, shapes))} do not broadcast (trailing axes must "
                          "be equal or 1); reshape or unsqueeze one operand")


def _apply_broadcasting(prim, *ts, **params):
    """apply() for an elementwise op, with NumPy's broadcast ValueError turned into a ShapeError naming it."""
    try:
        return apply(prim, *ts, **params)
    except ValueError as e:
        err = None if isinstance(e, TinymoonError) else broadcast_error(prim.name, *ts)
        if err is None:
            raise
        raise err from None


def _unary(prim, doc, float_valued=False):
    entry = floating if float_valued else as_tensor

    def f(x, **params):
        return apply(prim, entry(x, what=prim.name), **params)
    f.__name__, f.__doc__ = prim.name, doc
    return f


def _binary(prim, doc, float_valued=False):
    def f(a, b):
        a, b = _operands(a, b, prim.name)
        if float_valued and a.data.dtype.kind != "f":    # int / int: float32 (see tensor.floating)
            a, b = floating(a), floating(b)
        return _apply_broadcasting(prim, a, b)
    f.__name__, f.__doc__ = prim.name, doc
    return f


# ---- elementwise -----------------------------------------------------------------------------------
add = _binary(E.Add, "a + b (broadcasting)")
def sub(a, b):
    """a - b (broadcasting); two bool tensors are refused (NumPy and PyTorch refuse them too: use ^ or ne)."""
    a, b = _operands(a, b, "sub")
    if a.data.dtype == b.data.dtype == np.bool_:
        raise DTypeError("sub: subtracting two bool tensors is not supported; use tm.ne(a, b) (logical xor) or "
                         "cast one with .astype('int64')")
    return _apply_broadcasting(E.Sub, a, b)


def _no_bool(prim, doc, hint):
    """A unary op that NumPy refuses on bool (neg, abs): a DTypeError naming it and what to use instead."""
    g = _unary(prim, doc)

    def f(x, **params):
        x = as_tensor(x, what=prim.name)
        if x.data.dtype == np.bool_:
            raise DTypeError(f"{prim.name}: not defined on a bool tensor; {hint}")
        return g(x, **params)
    f.__name__, f.__doc__ = prim.name, doc
    return f
mul = _binary(E.Mul, "a * b (broadcasting)")
div = _binary(E.Div, "a / b (broadcasting); integers divide in float32", float_valued=True)
maximum = _binary(E.Maximum, "elementwise max; at ties the gradient goes to a")
minimum = _binary(E.Minimum, "elementwise min; at ties the gradient goes to a")
neg = _no_bool(E.Neg, "-x", "use tm.eq(x, False) (logical not) or cast with .astype('int64')")
exp = _unary(E.Exp, "e^x", float_valued=True)
log = _unary(E.Log, "natural logarithm (x > 0)", float_valued=True)
sqrt = _unary(E.Sqrt, "square root (x > 0 for gradients)", float_valued=True)
abs = _no_bool(E.Abs, "|x|; subgradient 0 at 0", "a bool is its own absolute value")   # noqa: A001


def pow(a, b):  # noqa: A001
    """a ** b (b a number or a tensor)."""
    a, b = _operands(a, b, "pow")
    try:
        return _apply_broadcasting(E.Pow, a, b)
    except ValueError as e:
        if isinstance(e, TinymoonError):
            raise
        raise ArgumentError(f"pow: {e} (integer tensors {a.dtype} ** {b.dtype}); cast the base to a float dtype "
                            "first") from None


def where(cond, a, b):
    """a where cond else b; cond is not differentiable."""
    a, b = _operands(a, b, "where")
    return _apply_broadcasting(E.Where, as_tensor(cond, what="where"), a, b)


def clip(x, lo=None, hi=None):
    """clamp to [lo, hi]; gradient 1 inside and at the bounds, 0 outside."""
    x = as_tensor(x, what="clip")
    if x.data.dtype == np.bool_:
        raise DTypeError("clip: not defined on a bool tensor; cast it with .astype('int64') or .astype('float32')")
    for v, name in ((lo, "lo"), (hi, "hi")):
        if v is not None:
            _number(v, name, "clip")
    return apply(E.Clip, x, lo=lo, hi=hi)


def astype(x, dtype):
    x = as_tensor(x, what="astype")
    if x.dtype == dtype:
        return x
    return apply(E.Cast, x, dtype=np.dtype(dtype))


def to_device(x, device):
    x = as_tensor(x, what="to_device")
    if x.device == device:
        return x
    return apply(E.ToDevice, x, device=device)


# ---- activations -----------------------------------------------------------------------------------
tanh = _unary(A.Tanh, "hyperbolic tangent", float_valued=True)
sigmoid = _unary(A.Sigmoid, "logistic sigmoid 1/(1+e^-x)", float_valued=True)
relu = _unary(A.ReLU, "max(x, 0); subgradient 0 at 0; keeps a 1-bit mask", float_valued=True)
gelu = _unary(A.GELU, "exact GELU x Phi(x)", float_valued=True)
silu = _unary(A.SiLU, "x sigmoid(x)", float_valued=True)


def _number(v, name, op):
    """A float parameter (a Python/NumPy number or a one-element tensor), or an ArgumentError naming it."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Real, Tensor)):
        raise ArgumentError(f"{op}: {name} must be a real number, got {type(v).__name__}")
    if isinstance(v, Tensor) and v.size != 1:
        raise ArgumentError(f"{op}: {name} must be a number, got a tensor of shape {v.shape}")
    return float(v)


def leaky_relu(x, negative_slope=0.01):
    """x if x > 0 else negative_slope * x; keeps a 1-bit mask."""
    return apply(A.LeakyReLU, floating(x, what="leaky_relu"),
                 negative_slope=_number(negative_slope, "negative_slope", "leaky_relu"))


def elu(x, alpha=1.0):
    """x if x > 0 else alpha (e^x - 1)."""
    return apply(A.ELU, floating(x, what="elu"), alpha=_number(alpha, "alpha", "elu"))


def softplus(x, beta=1.0, threshold=20.0):
    """log(1 + e^(beta x)) / beta; linear where beta x > threshold."""
    return apply(A.Softplus, floating(x, what="softplus"), beta=_number(beta, "beta", "softplus"),
                 threshold=_number(threshold, "threshold", "softplus"))


# ---- comparisons (not differentiable: plain boolean tensors) -----------------------------------------
def _compare(op, name):
    def f(a, b):
        a, b = _operands(a, b, name)
        try:
            return Tensor._wrap(op(a.data, b.data))
        except ValueError:
            err = broadcast_error(name, a, b)
            if err is None:
                raise
            raise err from None
    f.__name__ = name
    return f


eq, ne, lt, le, gt, ge = (_compare(o, n) for o, n in ((np.equal, "eq"), (np.not_equal, "ne"), (np.less, "lt"),
                                                       (np.less_equal, "le"), (np.greater, "gt"),
                                                       (np.greater_equal, "ge")))
