"""Tensor-level shape functions: reshape, transpose/permute, broadcast_to, squeeze/unsqueeze, getitem,
concatenate, stack, pad, flatten. Each converts its operands and applies one primitive (tinymoon.ops.shape).
"""
from __future__ import annotations

import numpy as np

from ..autodiff.apply import apply
from ..errors import ArgumentError
from ..ops import shape as S
from ..tensor import Tensor, as_tensor
from .aliases import UNSET, check_axis, pick

__all__ = ["reshape", "view", "clone", "transpose", "permute", "broadcast_to", "squeeze", "unsqueeze", "expand_dims",
           "getitem", "concatenate", "cat", "stack", "pad", "flatten"]


def _shape_args(shape):
    """f(x, 2, 3) and f(x, (2, 3)) both mean the shape (2, 3)."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def reshape(x, *shape):
    """x with a new shape of the same size; accepts ints or one tuple, and one -1."""
    x = as_tensor(x, what="reshape")
    shape = _shape_args(shape)
    if shape == x.shape:
        return x
    return apply(S.Reshape, x, shape=shape)


view = reshape      # PyTorch's name (tinymoon's reshape never needs a contiguous input, so they are one function)


def clone(x):
    """A copy of x in new memory, on the tape (its cotangent passes through): PyTorch's clone."""
    return apply(S.Copy, as_tensor(x, what="clone"))


def transpose(x, *axes):
    """Permute the axes (no axes: reverse them all, like numpy.transpose)."""
    x = as_tensor(x, what="transpose")
    axes = _shape_args(axes)
    return apply(S.Transpose, x, axes=axes if axes else None)


def permute(x, *axes):
    """Permute the axes: y.shape[i] = x.shape[axes[i]] (ints or one tuple)."""
    axes = _shape_args(axes)
    if not axes and as_tensor(x, what="permute").ndim:
        raise ArgumentError("permute: give the new order of the axes, e.g. x.permute(1, 0)")
    return apply(S.Transpose, as_tensor(x, what="permute"), axes=axes)


def broadcast_to(x, *shape):
    """x copied along new leading axes and size-1 axes to `shape` (numpy broadcasting rules)."""
    return apply(S.BroadcastTo, as_tensor(x, what="broadcast_to"), shape=_shape_args(shape))


def squeeze(x, axis=None, *, dim=UNSET):
    """Drop the size-1 axes (all of them, or those named by axis: int or tuple; dim= is PyTorch's spelling)."""
    return apply(S.Squeeze, as_tensor(x, what="squeeze"), axis=check_axis("squeeze", pick("squeeze", "axis", axis, "dim", dim, None)))


def unsqueeze(x, axis=None, *, dim=UNSET):
    """Insert a size-1 axis at position `axis` of the result (an int or a tuple, like numpy.expand_dims;
    dim= is PyTorch's spelling)."""
    axis = pick("unsqueeze", "axis", axis, "dim", dim, None)
    if axis is None:
        raise ArgumentError("unsqueeze: give the position of the new axis, e.g. x.unsqueeze(0)")
    axis = check_axis("unsqueeze", axis, allow_none=False)
    return apply(S.Unsqueeze, as_tensor(x, what="unsqueeze"), axis=axis)


expand_dims = unsqueeze


def flatten(x, start_axis=0, end_axis=-1, *, start_dim=UNSET, end_dim=UNSET):
    """Merge axes start_axis..end_axis (inclusive) into one (start_dim/end_dim: PyTorch's spelling)."""
    return apply(S.Flatten, as_tensor(x, what="flatten"), start_axis=pick("flatten", "start_axis", start_axis, "start_dim", start_dim, 0),
                 end_axis=pick("flatten", "end_axis", end_axis, "end_dim", end_dim, -1))


def _index_part(i, xp):
    if isinstance(i, Tensor):
        return i.data
    if isinstance(i, list):
        try:
            a = np.asarray(i)
        except (ValueError, TypeError) as e:
            raise ArgumentError(f"getitem: a list index must be a rectangular list of integers or booleans ({e})") from None
        if a.dtype.kind not in "iub":
            raise ArgumentError(f"getitem: a list index must hold integers or booleans, got {i!r}")
        return xp.asarray(a)
    if xp is not np and isinstance(i, np.ndarray):
        return xp.asarray(i)
    return i


def getitem(x, index):
    """x[index]: ints, slices (negative steps too), None, Ellipsis, integer arrays (repeats allowed: their
    cotangents add up), boolean masks; Tensors and lists as indices are converted to arrays."""
    x = as_tensor(x, what="getitem")
    parts = index if isinstance(index, tuple) else (index,)
    return apply(S.Getitem, x, index=tuple(_index_part(i, x.xp) for i in parts))


def _same_kind(tensors, op):
    """Tensors for a variadic op; integer tensors meeting a float one take its dtype."""
    if isinstance(tensors, Tensor) or not isinstance(tensors, (list, tuple)):
        raise ArgumentError(f"{op}: give a list or tuple of tensors, e.g. tm.{op}([a, b]), not "
                            f"{type(tensors).__name__}")
    if not tensors:
        raise ArgumentError(f"{op}: needs at least one tensor")
    ts = [as_tensor(t, what=op) for t in tensors]
    floats = [t.dtype for t in ts if t.dtype.kind == "f"]
    if floats:
        ts = [t if t.dtype.kind == "f" else Tensor._wrap(t.data.astype(floats[0])) for t in ts]
    return ts


def concatenate(tensors, axis=0, *, dim=UNSET):
    """Join tensors along an existing axis (dim= is PyTorch's spelling)."""
    return apply(S.Concatenate, *_same_kind(tensors, "concatenate"), axis=check_axis("concatenate", pick("concatenate", "axis", axis, "dim", dim, 0), False, False))


cat = concatenate   # PyTorch's name


def stack(tensors, axis=0, *, dim=UNSET):
    """Join tensors of one shape along a new axis (dim= is PyTorch's spelling)."""
    return apply(S.Stack, *_same_kind(tensors, "stack"), axis=check_axis("stack", pick("stack", "axis", axis, "dim", dim, 0), False, False))


def pad(x, pad_width, value=0.0):
    """Constant padding with numpy.pad's pad_width forms: int, (before, after), ((b0, a0), (b1, a1), ...)."""
    x = as_tensor(x, what="pad")
    return apply(S.Pad, x, pad_width=S.normalize_pad_width(pad_width, x.ndim), value=value)
