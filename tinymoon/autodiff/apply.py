"""Where a primitive meets tensors: one function, `apply`, used by every tensor-level operation.

It runs the primitive's forward on the raw arrays, then
- forward mode: if any input carries a tangent, the jvp rule gives the output tangent right away
  (no tape, so residuals needed only for the tangent are dropped at once);
- reverse mode: if recording and any differentiable input requires a gradient, a tape node keeps the
  context (the residuals) until backward is done with it.
"""
from __future__ import annotations

from numpy import ndarray

from ..backend import device_of
from ..errors import DeviceError, DTypeError
from .. import memory
from ..ops.base import Context
from .state import state


def _wrap(array):
    """Tensor._wrap, bound on first use (tensor.py imports this module's users)."""
    global _wrap
    from ..tensor import Tensor
    _wrap = Tensor._wrap
    return _wrap(array)


class Node:
    """A tape entry: the primitive, its residual store, and where each input came from.

    parents[i] is the Node that produced input i, or the input tensor itself when it is a leaf that
    requires grad (its .grad is set there), or None. The node never holds an intermediate tensor: an
    activation stays alive only if a rule saved it as a residual (counted in tinymoon.memory) or the
    caller keeps a reference — which is what makes the memory numbers of the algorithms honest.
    """
    __slots__ = ("prim", "ctx", "parents", "shapes", "released")

    def __init__(self, prim, ctx, parents, shapes):
        self.prim, self.ctx, self.parents, self.shapes, self.released = prim, ctx, parents, shapes, False


def _check_operands(prim, inputs):
    """Same device for all inputs; one float dtype among the differentiable float inputs."""
    datas = [t.data for t in inputs]
    if any(type(d) is not ndarray for d in datas):
        devs = [device_of(d) for d in datas]
        if len(set(devs)) > 1:
            raise DeviceError(f"{prim.name}: operands are on different devices ({', '.join(devs)}); "
                              "move them with .to(device) first")
    diff = prim.differentiable
    floats = {d.dtype for i, d in enumerate(datas) if d.dtype.kind == "f" and (diff is None or i in diff)}
    if len(floats) > 1:
        raise DTypeError(
            f"{prim.name}: operands have dtypes {', '.join(str(d.dtype) for d in datas)}; tinymoon never "
            "mixes float32 and float64 silently — cast one explicitly with .astype(...)")


def _uncount_leaves(ctx, inputs):
    """A residual that is a leaf input's own array (a parameter, the data batch) lives anyway: keeping a
    reference costs no memory, so it is not counted as saved bytes."""
    leaves = [t.data for t in inputs if t._node is None]
    if not leaves:
        return
    for v in ctx.__dict__.values():
        for a in leaves:
            if v is a:
                ctx.nbytes -= a.nbytes
                memory._sub(a.nbytes)
                break


def apply(prim, *inputs, **params):
    """Apply primitive `prim` to tensors `inputs` with keyword parameters `params`."""
    if len(inputs) > 1:
        _check_operands(prim, inputs)
    diff = prim.differentiable
    record = state.grad_enabled
    needs = []
    any_grad = any_tangent = False
    for i, t in enumerate(inputs):
        d = (diff is None or i in diff)
        g = d and record and t.requires_grad
        tn = d and t.tangent is not None
        any_grad |= g
        any_tangent |= tn
        needs.append(g or tn)
    ctx = Context(needs, params)
    peak0 = memory._peak
    y = prim.forward(ctx, *[t.data for t in inputs], **params)
    out = _wrap(y)
    if any_tangent:
        y_dot = prim.jvp(ctx, *[t.tangent if n else None for t, n in zip(inputs, needs)])
        if y_dot is not None and y_dot.shape != y.shape:
            y_dot = out.xp.broadcast_to(y_dot, y.shape)
        out.tangent = y_dot
    if any_grad:
        if ctx.nbytes:
            _uncount_leaves(ctx, inputs)
            # Only this op's saves happened since peak0, so the true high-water mark is exact:
            memory._peak = max(peak0, memory._saved)
        out.requires_grad = True
        out._node = Node(prim, ctx, tuple((t._node or t) if n and t.requires_grad else None
                                          for t, n in zip(inputs, needs)),
                         tuple(t.data.shape for t in inputs))
        if state.trace is not None:
            state.trace.append(out)
    else:
        ctx.release()       # nothing will differentiate through this op: its residuals never count
        memory._peak = peak0
    return out
