"""Forward mode: tangents travel with values; no tape, so memory stays at one layer.

When a primitive is applied to inputs that carry tangents, `push_tangent` asks its jvp rule for the output's
tangent right away (apply.py calls it), so the residuals a tangent needed are dropped with the context.
`jvp(f, primals, tangents)` seeds the primals' tangents and reads the output's.
"""
from __future__ import annotations

from ..errors import ShapeError
from ..tensor import Tensor, as_tensor
from . import nesting

__all__ = ["jvp", "push_tangent"]


def push_tangent(prim, ctx, inputs, needs, out):
    """out.tangent = J ẋ by prim's jvp rule (None for the inputs without a tangent: a symbolic zero)."""
    y_dot = prim.jvp(ctx, *[t.tangent if n else None for t, n in zip(inputs, needs)])
    if y_dot is not None and y_dot.shape != out._data.shape:
        y_dot = out.xp.broadcast_to(y_dot, out._data.shape)
    out.tangent = y_dot


def jvp(f, primals, tangents):
    """(out, out_tangent) = (f(*primals), J f(primals) · tangents). Both returned as Tensors."""
    if not isinstance(primals, (tuple, list)):
        primals, tangents = (primals,), (tangents,)
    if len(primals) != len(tangents):
        raise ShapeError(f"jvp: {len(primals)} primals but {len(tangents)} tangents")
    nesting.check_primals("tm.jvp", primals)
    ps = []
    for p, t in zip(primals, tangents):
        q = as_tensor(p).detach()
        t = as_tensor(t, dtype=q.dtype).data if t is not None else None
        if t is not None and t.shape != q.data.shape:
            raise ShapeError(f"jvp: tangent shape {t.shape} does not match primal shape {q.shape}")
        q.tangent = t
        ps.append(q)
    with nesting.tracing("tm.jvp", ps):
        out = f(*ps)
    nesting.check_output("tm.jvp", out)
    t = out.tangent if out.tangent is not None else out.xp.zeros_like(out.data)
    return out.detach(), Tensor._wrap(t)
