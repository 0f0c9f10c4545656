"""Tensor-level linear algebra: matmul (numpy.matmul semantics) and the fused dense layer
linear(x, weight, bias) = x @ weightᵀ + bias (tinymoon.ops.linalg)."""
from __future__ import annotations

from ..autodiff.apply import apply
from ..ops import linalg as L
from ..tensor import as_tensor
from .elementwise import _pair

__all__ = ["matmul", "linear"]


def matmul(a, b):
    """a @ b: 1-D operands are promoted, batch dimensions broadcast (numpy.matmul)."""
    a, b = _pair(a, b)
    return apply(L.Matmul, a, b)


def linear(x, weight, bias=None):
    """x @ weightᵀ + bias; weight (out_features, in_features), x (..., in_features), bias (out_features,)."""
    x, weight = _pair(x, weight)
    if bias is None:
        return apply(L.Linear, x, weight)
    return apply(L.Linear, x, weight, as_tensor(bias))
