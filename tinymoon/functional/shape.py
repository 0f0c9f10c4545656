"""Tensor-level shape functions: reshape, transpose/permute, broadcast_to, squeeze/unsqueeze, getitem,
concatenate, stack, pad, flatten. Each converts its operands and applies one primitive (tinymoon.ops.shape).
"""
from __future__ import annotations

import numpy as np

from ..autodiff.apply import apply
from ..ops import shape as S
from ..errors import ArgumentError
from ..tensor import Tensor, as_tensor

__all__ = ["reshape", "transpose", "permute", "broadcast_to", "squeeze", "unsqueeze", "expand_dims", "getitem",
           "concatenate", "stack", "pad", "flatten"]


def _shape_args(shape):
    """f(x, 2, 3) and f(x, (2, 3)) both mean the shape (2, 3)."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def reshape(x, *shape):
    """x with a new shape of the same size; accepts ints or one tuple, and one -1."""
    x = as_tensor(x)
    shape = _shape_args(shape)
    if shape == x.shape:
        return x
    return apply(S.Reshape, x, shape=shape)


def transpose(x, *axes):
    """Permute the axes (no axes: reverse them all, like numpy.transpose)."""
    x = as_tensor(x)
    axes = _shape_args(axes)
    return apply(S.Transpose, x, axes=axes if axes else None)


def permute(x, *axes):
    """Permute the axes: y.shape[i] = x.shape[axes[i]] (ints or one tuple)."""
    axes = _shape_args(axes)
    if not axes and as_tensor(x).ndim:
        raise ArgumentError("permute: give the new order of the axes, e.g. x.permute(1, 0)")
    return apply(S.Transpose, as_tensor(x), axes=axes)


def broadcast_to(x, *shape):
    """x copied along new leading axes and size-1 axes to `shape` (numpy broadcasting rules)."""
    return apply(S.BroadcastTo, as_tensor(x), shape=_shape_args(shape))


def squeeze(x, axis=None):
    """Drop the size-1 axes (all of them, or those named by axis: int or tuple)."""
    return apply(S.Squeeze, as_tensor(x), axis=axis)


def unsqueeze(x, axis):
    """Insert a size-1 axis at position `axis` of the result (an int or a tuple, like numpy.expand_dims)."""
    return apply(S.Unsqueeze, as_tensor(x), axis=axis)


expand_dims = unsqueeze


def flatten(x, start_axis=0, end_axis=-1):
    """Merge axes start_axis..end_axis (inclusive) into one."""
    return apply(S.Flatten, as_tensor(x), start_axis=start_axis, end_axis=end_axis)


def _index_part(i, xp):
    if isinstance(i, Tensor):
        return i.data
    if isinstance(i, list):
        a = np.asarray(i)
        if a.dtype.kind not in "iub":
            raise ArgumentError(f"getitem: a list index must hold integers or booleans, got {i!r}")
        return xp.asarray(a)
    if xp is not np and isinstance(i, np.ndarray):
        return xp.asarray(i)
    return i


def getitem(x, index):
    """x[index]: ints, slices (negative steps too), None, Ellipsis, integer arrays (repeats allowed: their
    cotangents add up), boolean masks; Tensors and lists as indices are converted to arrays."""
    x = as_tensor(x)
    parts = index if isinstance(index, tuple) else (index,)
    return apply(S.Getitem, x, index=tuple(_index_part(i, x.xp) for i in parts))


def _same_kind(tensors):
    """Tensors for a variadic op; integer tensors meeting a float one take its dtype."""
    ts = [as_tensor(t) for t in tensors]
    floats = [t.dtype for t in ts if t.dtype.kind == "f"]
    if floats:
        ts = [t if t.dtype.kind == "f" else Tensor._wrap(t.data.astype(floats[0])) for t in ts]
    return ts


def concatenate(tensors, axis=0):
    """Join tensors along an existing axis."""
    return apply(S.Concatenate, *_same_kind(tensors), axis=axis)


def stack(tensors, axis=0):
    """Join tensors of one shape along a new axis."""
    return apply(S.Stack, *_same_kind(tensors), axis=axis)


def pad(x, pad_width, value=0.0):
    """Constant padding with numpy.pad's pad_width forms: int, (before, after), ((b0, a0), (b1, a1), ...)."""
    x = as_tensor(x)
    return apply(S.Pad, x, pad_width=S.normalize_pad_width(pad_width, x.ndim), value=value)
