"""Tensor-level linear algebra: matmul (numpy.matmul semantics) and the fused dense layer
linear(x, weight, bias) = x @ weightᵀ + bias (tinymoon.ops.linalg)."""
from __future__ import annotations

from ..autodiff.apply import apply
from ..ops import linalg as L
from ..tensor import Tensor, as_tensor, floating
from .elementwise import _operands

__all__ = ["matmul", "linear"]


def matmul(a, b):
    """a @ b: 1-D operands are promoted, batch dimensions broadcast (numpy.matmul)."""
    a, b = _operands(a, b, "matmul")
    return apply(L.Matmul, a, b)


def linear(x, weight, bias=None):
    """x @ weightᵀ + bias; weight (out_features, in_features), x (..., in_features), bias (out_features,).
    Integer/bool operands compute in the float operands' dtype (float32 if none is float)."""
    ts = [as_tensor(t, what="linear") for t in ((x, weight) if bias is None else (x, weight, bias))]
    dt = next((t.data.dtype for t in ts if t.data.dtype.kind == "f"), None)
    ts = [t if t.data.dtype.kind == "f" else (floating(t) if dt is None else Tensor._wrap(t.data.astype(dt)))
          for t in ts]
    return apply(L.Linear, *ts)
