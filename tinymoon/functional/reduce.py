"""Tensor-level reductions: sum, mean, max, min, logsumexp, var (differentiable, tinymoon.ops.reduce) and
argmax, argmin (integer results, not differentiable)."""
from __future__ import annotations

from ..autodiff.apply import apply
from ..ops import reduce as R
from ..tensor import Tensor, as_tensor

__all__ = ["sum", "mean", "max", "min", "logsumexp", "var", "argmax", "argmin"]


def sum(x, axis=None, keepdims=False):  # noqa: A001 - the public name mirrors numpy
    """Sum over axis (None: all, an int or a tuple)."""
    return apply(R.Sum, as_tensor(x), axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    """Mean over axis (None: all, an int or a tuple)."""
    return apply(R.Mean, as_tensor(x), axis=axis, keepdims=keepdims)


def max(x, axis=None, keepdims=False):  # noqa: A001
    """Maximum over axis; at ties the gradient is split equally among the tied elements."""
    return apply(R.Max, as_tensor(x), axis=axis, keepdims=keepdims)


def min(x, axis=None, keepdims=False):  # noqa: A001
    """Minimum over axis; at ties the gradient is split equally among the tied elements."""
    return apply(R.Min, as_tensor(x), axis=axis, keepdims=keepdims)


def logsumexp(x, axis=None, keepdims=False):
    """log(sum(exp(x))) over axis, computed stably."""
    return apply(R.LogSumExp, as_tensor(x), axis=axis, keepdims=keepdims)


def var(x, axis=None, keepdims=False, ddof=0):
    """Variance over axis: sum((x - mean)^2) / (n - ddof)."""
    return apply(R.Var, as_tensor(x), axis=axis, keepdims=keepdims, ddof=ddof)


def _arg(fn, x, axis, keepdims):
    x = as_tensor(x)
    if axis is not None:
        axis = R.normalize_axes(fn, axis, x.ndim)
        if len(axis) != 1:
            raise TypeError(f"{fn}: axis must be None or one int, got {axis}")
        axis = axis[0]
    return Tensor._wrap(getattr(x.xp, fn)(x.data, axis=axis, keepdims=keepdims))


def argmax(x, axis=None, keepdims=False):
    """Index of the (first) maximum over axis (None: of the flattened tensor); an int64 tensor."""
    return _arg("argmax", x, axis, keepdims)


def argmin(x, axis=None, keepdims=False):
    """Index of the (first) minimum over axis (None: of the flattened tensor); an int64 tensor."""
    return _arg("argmin", x, axis, keepdims)
