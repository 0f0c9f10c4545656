"""Tensor-level reductions: sum, mean, max, min, logsumexp, var (differentiable, tinymoon.ops.reduce) and
argmax, argmin (integer results, not differentiable)."""
from __future__ import annotations

from ..autodiff.apply import apply
from ..errors import ShapeError
from ..ops import reduce as R
from ..tensor import Tensor, as_tensor, floating
from .aliases import UNSET, axis_keepdims

__all__ = ["sum", "mean", "max", "min", "logsumexp", "var", "argmax", "argmin"]


def sum(x, axis=None, keepdims=False, *, dim=UNSET, keepdim=UNSET):  # noqa: A001 - the public name mirrors numpy
    """Sum over axis (None: all, an int or a tuple)."""
    axis, keepdims = axis_keepdims("sum", axis, keepdims, dim, keepdim)
    return apply(R.Sum, as_tensor(x, what="sum"), axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False, *, dim=UNSET, keepdim=UNSET):
    """Mean over axis (None: all, an int or a tuple)."""
    axis, keepdims = axis_keepdims("mean", axis, keepdims, dim, keepdim)
    return apply(R.Mean, floating(x, what="mean"), axis=axis, keepdims=keepdims)


def max(x, axis=None, keepdims=False, *, dim=UNSET, keepdim=UNSET):  # noqa: A001
    """Maximum over axis; at ties the gradient is split equally among the tied elements."""
    axis, keepdims = axis_keepdims("max", axis, keepdims, dim, keepdim)
    return apply(R.Max, as_tensor(x, what="max"), axis=axis, keepdims=keepdims)


def min(x, axis=None, keepdims=False, *, dim=UNSET, keepdim=UNSET):  # noqa: A001
    """Minimum over axis; at ties the gradient is split equally among the tied elements."""
    axis, keepdims = axis_keepdims("min", axis, keepdims, dim, keepdim)
    return apply(R.Min, as_tensor(x, what="min"), axis=axis, keepdims=keepdims)


def logsumexp(x, axis=None, keepdims=False, *, dim=UNSET, keepdim=UNSET):
    """log(sum(exp(x))) over axis, computed stably."""
    axis, keepdims = axis_keepdims("logsumexp", axis, keepdims, dim, keepdim)
    return apply(R.LogSumExp, floating(x, what="logsumexp"), axis=axis, keepdims=keepdims)


def var(x, axis=None, keepdims=False, ddof=0, *, dim=UNSET, keepdim=UNSET):
    """Variance over axis: sum((x - mean)^2) / (n - ddof)."""
    axis, keepdims = axis_keepdims("var", axis, keepdims, dim, keepdim)
    return apply(R.Var, floating(x, what="var"), axis=axis, keepdims=keepdims, ddof=ddof)


def _arg(fn, x, axis, keepdims):
    x = as_tensor(x, what=fn)
    if axis is not None:
        axis = R.normalize_axes(fn, axis, x.ndim)
        if len(axis) != 1:
            raise ShapeError(f"{fn}: axis must be None or one int, got {axis}")
        axis = axis[0]
    if x.data.size == 0 and (axis is None or x.shape[axis] == 0):
        raise ShapeError(f"{fn}: the tensor of shape {x.shape} has no element along "
                         f"{'any axis' if axis is None else f'axis {axis}'}, so there is no {fn[3:]}imum to index")
    return Tensor._wrap(getattr(x.xp, fn)(x.data, axis=axis, keepdims=keepdims))


def argmax(x, axis=None, keepdims=False, *, dim=UNSET, keepdim=UNSET):
    """Index of the (first) maximum over axis (None: of the flattened tensor); an int64 tensor."""
    return _arg("argmax", x, *axis_keepdims("argmax", axis, keepdims, dim, keepdim))


def argmin(x, axis=None, keepdims=False, *, dim=UNSET, keepdim=UNSET):
    """Index of the (first) minimum over axis (None: of the flattened tensor); an int64 tensor."""
    return _arg("argmin", x, *axis_keepdims("argmin", axis, keepdims, dim, keepdim))
