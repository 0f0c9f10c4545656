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

    versions: None, or one (counter, n, i) per residual that is input i's own array (i = -1: the output's):
    the tensor's version counter and its value n when the forward saved it. The reverse sweep checks them
    (`check_versions`): a residual whose tensor was changed in place since would give a wrong gradient.
    """
    __slots__ = ("prim", "ctx", "parents", "shapes", "released", "versions")

    def __init__(self, prim, ctx, parents, shapes, versions=None):
        self.prim, self.ctx, self.parents, self.shapes, self.released = prim, ctx, parents, shapes, False
        self.versions = versions


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


def _saved_tensors(ctx, inputs, xs, y, out):
    """The residuals that are a tensor's own array, as Node.versions records them (None if there are none).

    A residual that is a leaf input's own array (a parameter, the data batch) lives anyway: keeping a
    reference costs no memory, so it is not counted as saved bytes. Such a residual is also the one an
    optimiser step or `x[...] = v` changes in place, hence the version recorded with it."""
    counted = ctx.nbytes != 0
    rec = None
    for v in ctx.__dict__.values():
        if v is y:
            t, i = out, -1
        else:
            i = 0
            for x in xs:
                if v is x:
                    break
                i += 1
            else:
                continue
            t = inputs[i]
            if counted and t._node is None:
                ctx.nbytes -= x.nbytes
                memory._sub(x.nbytes)
        c = t._version
        if c is None:
            c = t._version = [0]
        if rec is None:
            rec = [(c, c[0], i)]
        else:
            rec.append((c, c[0], i))
    return rec


def check_versions(node):
    """Raise GradientError if a residual of `node` belongs to a tensor changed in place since the forward."""
    for c, n, i in node.versions:
        if c[0] != n:
            raise _stale(node, n, c[0], i)


def _stale(node, saved, now, i):
    from ..errors import GradientError
    name = node.prim.name
    if i < 0:
        what = "its output"
    else:
        p = node.parents[i]
        kind = "a leaf tensor that requires grad (a parameter?)" if p is not None and type(p) is not Node else \
            "a tensor computed earlier" if p is not None else "a tensor that does not require grad (an input?)"
        what = f"its input {i}, {kind} of shape {node.shapes[i]}"
    return GradientError(
        f"{name}: {what} was modified in place after the forward saved it for the gradient (version {saved} "
        f"then, {now} now), so this gradient would be computed from the wrong values. Change tensors only "
        "after the backward pass that needs them: call the optimiser's step() (or load_state_dict, or "
        "x[...] = v, or x.data = ...) after loss.backward(), and run the forward again before the next "
        "backward; to keep an old value, copy it first (tm.tensor(x)).")


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
    xs = [t._data for t in inputs]
    y = prim.forward(ctx, *xs, **params)
    out = _wrap(y)
    if any_tangent:
        y_dot = prim.jvp(ctx, *[t.tangent if n else None for t, n in zip(inputs, needs)])
        if y_dot is not None and y_dot.shape != y.shape:
            y_dot = out.xp.broadcast_to(y_dot, y.shape)
        out.tangent = y_dot
    if any_grad:
        versions = None
        if ctx.__dict__:
            versions = _saved_tensors(ctx, inputs, xs, y, out)
            # Only this op's saves happened since peak0, so the true high-water mark is exact:
            memory._peak = max(peak0, memory._saved)
        out.requires_grad = True
        out._node = Node(prim, ctx, tuple((t._node or t) if n and t.requires_grad else None
                                          for t, n in zip(inputs, needs)),
                         tuple(a.shape for a in xs), versions)
        if state.trace is not None:
            state.trace.append(out)
    else:
        ctx.release()       # nothing will differentiate through this op: its residuals never count
        memory._peak = peak0
    return out
