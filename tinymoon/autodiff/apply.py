"""Where a primitive meets tensors: one function, `apply`, used by every tensor-level operation.

    y = prim.forward(ctx, *arrays)                  the value; the rule stores its residuals in ctx
    if an input carries a tangent:  forward.push   the jvp rule gives the output's tangent at once (no tape)
    if an input requires a gradient: tape.record   a Node keeps ctx until the backward pass is done with it
    otherwise                                      ctx is released: nothing will differentiate through y

Before that, operands are checked: one device, and one float dtype among the differentiable ones.
"""
from __future__ import annotations

from numpy import ndarray

from .. import memory
from ..backend import device_of
from ..errors import DeviceError, DTypeError
from ..ops.base import Context
from ..tensor import Tensor
from .forward import push_tangent
from .state import state
from .tape import record

__all__ = ["apply"]


def _check_operands(prim, inputs):
    """Same device for all inputs; one float dtype among the differentiable float inputs."""
    if len(inputs) == 2:                  # the common case, kept cheap: two host arrays of one dtype
        a, b = inputs[0]._data, inputs[1]._data
        if type(a) is ndarray and type(b) is ndarray and a.dtype is b.dtype:
            return
    datas = [t._data for t in inputs]
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


def _distinct(inputs, xs):
    """Different tensors holding one array object (x and x.detach(), two transforms' primals of one value) get
    distinct array objects (a view each): the tape tells which input a residual is by the array's identity
    (tape._saved_tensors), and a differentiable backward must not take one tensor for the other."""
    if len(xs) == 2:
        if xs[0] is xs[1] and inputs[0] is not inputs[1]:
            xs[1] = xs[1].view()
        return
    first = {}
    for i, a in enumerate(xs):
        j = first.setdefault(id(a), i)
        if j != i and inputs[j] is not inputs[i]:
            xs[i] = a.view()


def apply(prim, *inputs, **params):
    """Apply primitive `prim` to tensors `inputs` with keyword parameters `params`."""
    if len(inputs) > 1:
        _check_operands(prim, inputs)
    diff = prim.differentiable
    grad_on = state.grad_enabled
    needs = []
    any_grad = any_tangent = False
    for i, t in enumerate(inputs):
        d = (diff is None or i in diff)
        g = d and grad_on and t.requires_grad
        tn = d and t.tangent is not None
        any_grad |= g
        any_tangent |= tn
        needs.append(g or tn)
    ctx = Context(needs, params)
    peak0 = memory._peak
    xs = [t._data for t in inputs]
    if len(xs) > 1 and (len(xs) > 2 or xs[0] is xs[1]):
        _distinct(inputs, xs)
    y = prim.forward(ctx, *xs, **params)
    out = Tensor._wrap(y)
    if any_tangent:
        push_tangent(prim, ctx, inputs, needs, out)
    if any_grad:
        record(prim, ctx, inputs, xs, y, out, needs, peak0, any_tangent)
    else:
        ctx.release()       # nothing will differentiate through this op: its residuals never count
        memory._peak = peak0
    return out
