"""PyTorch's argument names beside NumPy's: `dim=` for `axis=`, `keepdim=` for `keepdims=`.

The NumPy names are primary (they are in every signature and docstring); these aliases exist only so that the
names people type without thinking work. Giving both spellings of one argument is an error, not a choice.
"""
from __future__ import annotations

import numpy as np

from ..errors import ArgumentError

_UNSET = object()


def pick(op: str, numpy_name: str, numpy_value, torch_name: str, torch_value, default):
    """The value of an argument spelled `numpy_name` or `torch_name` (at most one of them given)."""
    if torch_value is _UNSET:
        return numpy_value
    if numpy_value is not default and numpy_value != default:
        raise ArgumentError(f"{op}: give {numpy_name}= or {torch_name}= (PyTorch's spelling), not both")
    return torch_value


def check_axis(op: str, axis, allow_none=True, allow_tuple=True):
    """axis as the ops take it: None, an int, or a tuple/list of ints; else an ArgumentError naming op."""
    if type(axis) is int or (axis is None and allow_none):      # the common cases, at once
        return axis

    def is_int(a):
        return isinstance(a, (int, np.integer)) and not isinstance(a, (bool, np.bool_))
    if (axis is None and allow_none) or is_int(axis):
        return axis
    if allow_tuple and isinstance(axis, (tuple, list)) and all(is_int(a) for a in axis):
        return tuple(int(a) for a in axis)
    raise ArgumentError(f"{op}: axis must be {'None, ' if allow_none else ''}an int"
                        f"{' or a tuple of ints' if allow_tuple else ''}, got {axis!r}")


def axis_keepdims(op, axis, keepdims, dim=_UNSET, keepdim=_UNSET):
    """(axis, keepdims) from NumPy's or PyTorch's spelling."""
    return (check_axis(op, pick(op, "axis", axis, "dim", dim, None)),
            bool(pick(op, "keepdims", keepdims, "keepdim", keepdim, False)))


UNSET = _UNSET
