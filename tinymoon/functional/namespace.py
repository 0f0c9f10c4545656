"""NumPy's names on Tensors: the array namespace a rule gets from `get_array_module` when it runs on tensors.

A rule in tinymoon/ops is written once, against `xp = get_array_module(...)` and array methods (`*`, `@`,
`.sum(axis, keepdims)`, `.reshape`, `.T`, `xp.where`, `xp.exp`, ...). For first derivatives the engine runs it
on arrays. When the backward pass itself must be differentiable (grad of grad, jvp of grad,
`backward(create_graph=True)`: tinymoon/autodiff/graph.py), the engine runs the same rule on Tensors: `xp` is
then this module, every name below applies one of tinymoon's primitives, and so every operation the rule
performs is recorded on the tape (and pushes tangents under an outer jvp) — JAX Autodidax's route, in which
the rules need no second version.

Only what the rules use is here, with NumPy's signatures. Arrays met along the way (a bit mask, labels, a
constant) enter as constant tensors. `sign` and `isfinite` are piecewise constant: their results are
constants (the derivative is 0 almost everywhere). `apply` is how a rule uses another primitive
(ops.base.call).
"""
from __future__ import annotations

import numpy as np

from ..autodiff.apply import apply as _apply
from ..ops import elementwise as _ops
from ..tensor import Tensor, as_tensor, floating
from . import elementwise as _E
from . import linalg as _L
from . import reduce as _R
from . import shape as _S

on_tensors = True       # what ops.base.on_tensors asks: a rule meeting this namespace runs on tensors
float32, float64, bool_, intp, inf, nan, newaxis = np.float32, np.float64, np.bool_, np.intp, np.inf, np.nan, None
broadcast_shapes = np.broadcast_shapes
ndarray = Tensor


def apply(prim, *args, **params):
    """Primitive `prim` applied to tensors (arrays among args enter as constants) — ops.base.call's tensor path."""
    return _apply(prim, *[a if isinstance(a, Tensor) else as_tensor(a) for a in args], **params)


def _constant(a):
    return Tensor._wrap(a)


# ---- elementwise ---------------------------------------------------------------------------------------
add, subtract, multiply, divide, negative = _E.add, _E.sub, _E.mul, _E.div, _E.neg
exp, log, sqrt, tanh, absolute, power = _E.exp, _E.log, _E.sqrt, _E.tanh, _E.abs, _E.pow
abs = _E.abs        # noqa: A001 - NumPy's name
maximum, minimum, where = _E.maximum, _E.minimum, _E.where


def log1p(x):
    return _apply(_ops.Log1p, floating(x))


def expm1(x):
    return _apply(_ops.Expm1, floating(x))


def erf(x):
    return _apply(_ops.Erf, floating(x))


def clip(x, lo=None, hi=None):
    return _E.clip(x, lo, hi)


def sign(x):
    """sign(x), a constant: piecewise constant, so its derivative is 0 almost everywhere."""
    x = as_tensor(x)
    return _constant(x.xp.sign(x.data))


def isfinite(x):
    x = as_tensor(x)
    return _constant(x.xp.isfinite(x.data))


def square(x):
    return x * x


# ---- reductions ----------------------------------------------------------------------------------------
def sum(x, axis=None, keepdims=False, dtype=None):     # noqa: A001
    y = _R.sum(x, axis=axis, keepdims=keepdims)
    return y if dtype is None else y.astype(dtype)


def mean(x, axis=None, keepdims=False):
    return _R.mean(x, axis=axis, keepdims=keepdims)


def max(x, axis=None, keepdims=False):                  # noqa: A001
    return _R.max(x, axis=axis, keepdims=keepdims)


def min(x, axis=None, keepdims=False):                  # noqa: A001
    return _R.min(x, axis=axis, keepdims=keepdims)


# ---- shapes --------------------------------------------------------------------------------------------
def reshape(x, shape):
    return _S.reshape(x, shape)


def transpose(x, axes=None):
    return _S.transpose(x, *(() if axes is None else tuple(axes)))


def swapaxes(x, a, b):
    x = as_tensor(x)
    axes = list(range(x.ndim))
    axes[a], axes[b] = axes[b], axes[a]
    return _S.transpose(x, tuple(axes))


def moveaxis(x, source, destination):
    x = as_tensor(x)
    src = [s % x.ndim for s in ((source,) if isinstance(source, int) else source)]
    dst = [d % x.ndim for d in ((destination,) if isinstance(destination, int) else destination)]
    order = [a for a in range(x.ndim) if a not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return _S.transpose(x, tuple(order))


def broadcast_to(x, shape):
    return _S.broadcast_to(x, tuple(shape))


def expand_dims(x, axis):
    return _S.unsqueeze(x, axis)


def squeeze(x, axis=None):
    return _S.squeeze(x, axis)


def concatenate(xs, axis=0):
    return _S.concatenate(list(xs), axis=axis)


def stack(xs, axis=0):
    return _S.stack(list(xs), axis=axis)


def pad(x, pad_width, mode="constant", constant_values=0):
    if mode != "constant":
        raise NotImplementedError(f"tinymoon's tensor namespace: pad mode {mode!r} (only 'constant')")
    return _S.pad(x, pad_width, value=constant_values)


def take_along_axis(x, indices, axis):
    """x at `indices` (a constant integer array) along `axis`, as NumPy's: an integer-array getitem."""
    x = as_tensor(x)
    idx = indices.data if isinstance(indices, Tensor) else indices
    xp = x.xp
    axis %= x.ndim
    index = []
    for a in range(x.ndim):
        if a == axis:
            index.append(idx)
        else:
            shape = [1] * x.ndim
            shape[a] = x.shape[a]
            index.append(xp.arange(x.shape[a]).reshape(shape))
    return _S.getitem(x, tuple(index))


def ascontiguousarray(x):
    return as_tensor(x)     # a tensor's layout is its array's business: nothing to do on the tape


# ---- linear algebra ------------------------------------------------------------------------------------
matmul = _L.matmul


# ---- creation (constants) ------------------------------------------------------------------------------
def asarray(x, dtype=None):
    t = x if isinstance(x, Tensor) else as_tensor(np.asarray(x) if not hasattr(x, "dtype") else x)
    return t if dtype is None or t.dtype == dtype else t.astype(dtype)


def zeros_like(x, dtype=None):
    x = as_tensor(x)
    return _constant(x.xp.zeros_like(x.data, dtype=dtype))


def ones_like(x, dtype=None):
    x = as_tensor(x)
    return _constant(x.xp.ones_like(x.data, dtype=dtype))
