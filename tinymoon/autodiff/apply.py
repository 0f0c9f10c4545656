"""Where a primitive meets tensors: one function, `apply`, used by every tensor-level operation.

It runs the primitive's forward on the raw arrays, then
- forward mode: if any input carries a tangent, the jvp rule gives the output tangent right away
  (no tape, so residuals needed only for the tangent are dropped at once);
- reverse mode: if recording and any differentiable input requires a gradient, a tape node keeps the
  context (the residuals) until backward is done with it.
"""
from __future__ import annotations

from ..backend import device_of, is_float
from ..errors import DeviceError, DTypeError
from ..ops.base import Context
from .state import state


class Node:
    """A tape entry: the primitive, its residual store, and the input tensors it was applied to."""
    __slots__ = ("prim", "ctx", "inputs", "released")

    def __init__(self, prim, ctx, inputs):
        self.prim, self.ctx, self.inputs, self.released = prim, ctx, inputs, False


def _check_operands(prim, inputs):
    """Same device for all inputs; one float dtype among the differentiable float inputs."""
    diff = prim.differentiable
    dt = None
    dev0 = None
    for i, t in enumerate(inputs):
        d = t.data
        if type(d).__module__.startswith("cupy") or dev0 is not None:
            dev = device_of(d)
            if dev0 is None and i > 0 and dev != "cpu":
                dev0 = device_of(inputs[0].data)
            if dev0 is None:
                dev0 = dev
            if dev != dev0:
                raise DeviceError(
                    f"{prim.name}: operands are on different devices ({', '.join(device_of(x.data) for x in inputs)}); "
                    "move them with .to(device) first")
        if (diff is None or i in diff) and is_float(d.dtype):
            if dt is None:
                dt = d.dtype
            elif d.dtype != dt:
                raise DTypeError(
                    f"{prim.name}: operands have dtypes {', '.join(str(x.dtype) for x in inputs)}; tinymoon never "
                    "mixes float32 and float64 silently — cast one explicitly with .astype(...)")


def apply(prim, *inputs, **params):
    """Apply primitive `prim` to tensors `inputs` with keyword parameters `params`."""
    from ..tensor import Tensor
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
    y = prim.forward(ctx, *[t.data for t in inputs], **params)
    out = Tensor._wrap(y)
    if any_tangent:
        y_dot = prim.jvp(ctx, *[t.tangent if n else None for t, n in zip(inputs, needs)])
        if y_dot is not None and y_dot.shape != y.shape:
            y_dot = out.xp.broadcast_to(y_dot, y.shape)
        out.tangent = y_dot
    if any_grad:
        out.requires_grad = True
        out._node = Node(prim, ctx, inputs)
        if state.trace is not None:
            state.trace.append(out)
    else:
        ctx.release()
    return out
