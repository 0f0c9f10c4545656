"""Forward mode: tangents travel with values through `apply`; no tape, so memory stays at one layer."""
from __future__ import annotations

from ..errors import ShapeError
from . import nesting


def jvp(f, primals, tangents):
    """(out, out_tangent) = (f(*primals), J f(primals) · tangents). Both returned as Tensors."""
    from ..tensor import Tensor, as_tensor
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
