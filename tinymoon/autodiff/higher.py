"""Second derivatives built from the two modes: the Hessian-vector product and the Hessian.

    hvp(f, x, v) = H(x) v = d/dε ∇f(x + ε v) at ε = 0        forward-over-reverse: tm.jvp of tm.grad
    hessian(f)(x) = [H e_1, ..., H e_n]                        one hvp per coordinate (small inputs)

Forward-over-reverse is the cheap order: the gradient's backward pass runs once, on tensors whose values
carry tangents (graph.py), so an HVP costs a small multiple of one gradient and keeps no tape of the backward
pass. Reverse-over-reverse, tm.grad(lambda x: (tm.grad(f)(x) * v).sum()), gives the same numbers and records
the backward pass to walk it again (`python -m tinymoon.bench higher` measures both).
"""
from __future__ import annotations

from ..errors import ShapeError
from ..tensor import Tensor, as_tensor
from .forward import jvp
from .reverse import grad

__all__ = ["hvp", "hessian"]


def hvp(f, x, v):
    """H(x) v for a scalar-valued f of one tensor x (v of x's shape): forward-over-reverse, exact."""
    x = as_tensor(x)
    v = as_tensor(v, dtype=x.dtype)
    if v.shape != x.shape:
        raise ShapeError(f"hvp: the vector v has shape {v.shape}, x has shape {x.shape}: they must match")
    return jvp(grad(f), (x,), (v,))[1]


def hessian(f):
    """f -> (x -> the Hessian of scalar f at x, of shape x.shape + x.shape): x.size forward-over-reverse HVPs,
    one per coordinate — for small inputs (the cost is x.size gradients' worth)."""
    def wrapped(x):
        x = as_tensor(x)
        n = x.size
        xp = x.xp
        g = grad(f)
        cols = []
        for j in range(n):
            e = xp.zeros(n, dtype=x.dtype)
            e[j] = 1
            cols.append(jvp(g, (x,), (e.reshape(x.shape),))[1].data.reshape(n))
        h = xp.stack(cols, axis=1) if cols else xp.zeros((0, 0), dtype=x.dtype)
        return Tensor._wrap(h.reshape(x.shape + x.shape))
    return wrapped

