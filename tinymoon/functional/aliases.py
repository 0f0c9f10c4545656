"""PyTorch's argument names beside NumPy's: `dim=` for `axis=`, `keepdim=` for `keepdims=`.

The NumPy names are primary (they are in every signature and docstring); these aliases exist only so that the
names people type without thinking work. Giving both spellings of one argument is an error, not a choice.
"""
from __future__ import annotations

from ..errors import ArgumentError

_UNSET = object()


def pick(op: str, numpy_name: str, numpy_value, torch_name: str, torch_value, default):
    """The value of an argument spelled `numpy_name` or `torch_name` (at most one of them given)."""
    if torch_value is _UNSET:
        return numpy_value
    if numpy_value is not default and numpy_value != default:
        raise ArgumentError(f"{op}: give {numpy_name}= or {torch_name}= (PyTorch's spelling), not both")
    return torch_value


def axis_keepdims(op, axis, keepdims, dim=_UNSET, keepdim=_UNSET):
    """(axis, keepdims) from NumPy's or PyTorch's spelling."""
    return pick(op, "axis", axis, "dim", dim, None), pick(op, "keepdims", keepdims, "keepdim", keepdim, False)


UNSET = _UNSET
